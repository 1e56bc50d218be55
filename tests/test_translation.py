"""awd_lstm_translation under fairseq's own translation task: the shared blocks,
padding, beam search against rescoring, and the real command lines on German-English."""
import re
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
from fairseq.models import lstm
from fairseq.sequence_generator import SequenceGenerator

from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder
from fairseq_awd.awd_lstm_body import AWDLSTMBody
from fairseq_awd.awd_lstm_translation import AWDLSTMTranslationConfig, AWDLSTMTranslationModel
from fairseq_awd.tied_softmax import TiedSoftmax
from fairseq_awd.weight_drop import WeightDropLSTM

from conftest import (ENV, ROOT, USER_DIR, holds_the_average, run, run_two_ranks,
                      small_dictionary)

TINY = dict(encoder_embed_dim=8, encoder_hidden_size=10, encoder_layers=2,
            decoder_embed_dim=8, decoder_hidden_size=12, decoder_layers=2,
            decoder_out_embed_dim=8)


def model(src=None, tgt=None, **overrides):
    src = src or small_dictionary(40)
    task = Namespace(source_dictionary=src, target_dictionary=tgt or small_dictionary(30))
    return AWDLSTMTranslationModel.build_model(
        AWDLSTMTranslationConfig(**{**TINY, **overrides}), task)


def lstm_modules(module):
    return [m for m in module.modules() if isinstance(m, (WeightDropLSTM, torch.nn.LSTM,
                                                          torch.nn.LSTMCell))]


def test_language_model_and_translation_share_one_body_and_softmax():
    lm = AWDLSTMDecoder(AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12),
                        small_dictionary())
    mt = model(encoder_bidirectional=True, weight_drop=0.3)
    for body in (lm.body, mt.encoder.body, mt.decoder.body):
        assert type(body) is AWDLSTMBody
    assert type(lm.softmax) is type(mt.decoder.softmax) is TiedSoftmax
    # weight drop on every recurrent matrix, both directions of the encoder included
    lstms = lstm_modules(mt)
    assert len(lstms) == 4 and all(type(m) is WeightDropLSTM for m in lstms)
    assert all(m.weight_drop == 0.3 for m in lstms)
    assert mt.encoder.body.layers[0].bidirectional and mt.encoder.body.output_size == 20
    # the softmax is the decoder's embedding: no weights of its own
    assert mt.decoder.softmax.weight is None
    names = {n for n, _ in mt.named_parameters()}
    assert "decoder.softmax.bias" in names and "decoder.body.embed_tokens.weight" in names


def test_share_all_embeddings_uses_one_matrix():
    joined = small_dictionary(40)
    mt = model(joined, joined, share_all_embeddings=True)
    assert mt.encoder.body.embed_tokens is mt.decoder.body.embed_tokens


@pytest.mark.parametrize("overrides,message", [
    (dict(share_all_embeddings=True), "--joined-dictionary"),
    (dict(decoder_out_embed_dim=9), "--decoder-out-embed-dim \\(9\\) = --decoder-embed-dim"),
    (dict(encoder_layers=0), "--encoder-layers must be at least 1"),
    (dict(hidden_dropout=1.0), "--hidden-dropout must be in"),
    (dict(decoder_layers=1), "--encoder-layers \\(2\\) must equal --decoder-layers \\(1\\)"),
])
def test_settings_that_cannot_build_get_one_line(overrides, message):
    with pytest.raises(SystemExit, match=message):
        model(**overrides)


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_dictionary_with_other_words_is_refused_at_load(side):
    """What fairseq-generate and the hub do with a checkpoint: load_state_dict."""
    trained = model()
    other = small_dictionary(40 if side == "source" else 30)
    other.symbols[5], other.symbols[6] = other.symbols[6], other.symbols[5]
    with pytest.raises(SystemExit, match="another dictionary than ./dict.txt .same size"):
        model(**{("src" if side == "source" else "tgt"): other}).load_state_dict(
            trained.state_dict())
    old = {k: v for k, v in trained.state_dict().items() if "fingerprint" not in k}
    model().load_state_dict(old)  # written before fingerprints: size check only


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_dictionary_of_another_size_is_refused_at_load(side, monkeypatch):
    """An embedding with another number of rows than the data's dictionary has symbols:
    one line with both sizes, fingerprint or not (one written before fingerprints)."""
    from fairseq_awd import safe_checkpoints

    monkeypatch.setattr(safe_checkpoints, "loading", "ckpt/checkpoint_best.pt")
    trained = model().state_dict()
    old = {k: v for k, v in trained.items() if "fingerprint" not in k}
    trained_size = 40 if side == "source" else 30
    bigger = {("src" if side == "source" else "tgt"): small_dictionary(trained_size + 3)}
    for state in (trained, old):
        with pytest.raises(SystemExit, match=rf"ckpt/checkpoint_best.pt was trained with a "
                                             rf"dictionary of {trained_size} symbols, ./dict.txt "
                                             rf"has {trained_size + 3}: use the data-bin"):
            model(**bigger).load_state_dict(dict(state))


def test_encoder_is_padding_invariant():
    mt = model(encoder_bidirectional=True).eval()
    pad = mt.encoder.dictionary.pad()
    sentence = torch.tensor([[7, 8, 9, 2]])
    alone = mt.encoder(sentence, torch.tensor([4]))["encoder_out"][:, 0]
    longer = torch.tensor([[11, 12, 13, 14, 15, 16, 2]])
    for left in (True, False):  # fairseq pads sources on the left by default
        padded = torch.full((2, 7), pad)
        if left:
            padded[0, 3:] = sentence
        else:
            padded[0, :4] = sentence
        padded[1] = longer
        out = mt.encoder(padded, torch.tensor([4, 7]))
        assert torch.allclose(out["encoder_out"][:4, 0], alone, atol=1e-5)
        assert out["padding_mask"][:, 0].tolist() == [False] * 4 + [True] * 3


@pytest.mark.parametrize("cutoffs", ["none", "10,20"])  # the full softmax; two tails
def test_beam_search_hypotheses_equal_full_forward_rescoring(cutoffs):
    torch.manual_seed(3)
    mt = model(encoder_bidirectional=True, softmax_cutoffs=cutoffs).eval()
    src_dict, tgt_dict = mt.encoder.dictionary, mt.decoder.dictionary
    pad, eos = src_dict.pad(), src_dict.eos()
    src = torch.tensor([[pad, pad, 5, 6, 7, eos], [8, 9, 10, 11, 12, eos], [pad, 13, 14, 15, 16, eos]])
    lengths = src.ne(pad).sum(1)
    generator = SequenceGenerator([mt], tgt_dict, beam_size=5, max_len_b=8)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    hypos = generator.forward(sample)
    assert all(len(h) == 5 for h in hypos)
    for i, beam in enumerate(hypos):
        for hypo in beam:
            tokens = hypo["tokens"][None]
            prev = torch.cat([torch.tensor([[eos]]), tokens[:, :-1]], 1)
            lprobs = mt.get_normalized_probs(mt(src[i : i + 1], lengths[i : i + 1], prev),
                                             log_probs=True)
            scores = lprobs.gather(-1, tokens[..., None])[0, :, 0]
            assert torch.allclose(scores, hypo["positional_scores"], atol=1e-4)


OFF = dict(dropout=0.0, hidden_dropout=0.0, input_dropout=0.0, embed_dropout=0.0,
           weight_drop=0.0)


def fairseq_lstm(src, tgt, **sizes):
    args = Namespace(**sizes, dropout=0.0, criterion="cross_entropy")
    lstm.base_architecture(args)
    return lstm.LSTMModel.build_model(args, Namespace(source_dictionary=src,
                                                      target_dictionary=tgt))


def copy_lstm_into_awd(theirs, ours):
    """fairseq's `lstm` weights under our names; every parameter of ours gets one."""
    names = {"encoder.embed_tokens.": "encoder.body.embed_tokens.",
             "decoder.embed_tokens.": "decoder.body.embed_tokens.",
             "decoder.encoder_hidden_proj.": "decoder.hidden_proj.",
             "decoder.encoder_cell_proj.": "decoder.cell_proj.",
             "decoder.attention.": "decoder.attention.",
             "decoder.additional_fc.": "decoder.out_proj.",
             "decoder.fc_out.weight": "decoder.softmax.weight",
             "decoder.fc_out.bias": "decoder.softmax.bias"}
    state = {}
    for key, value in theirs.state_dict().items():
        layer = re.fullmatch(r"(encoder\.lstm|decoder\.layers\.(\d+))\.(weight|bias)_(ih|hh)"
                             r"(?:_l(\d+))?(_reverse)?", key)
        if layer:
            side, index = ("encoder", layer[5]) if layer[2] is None else ("decoder", layer[2])
            kind = f"{layer[3]}_{layer[4]}" + ("_raw" if layer.group(3, 4) == ("weight", "hh")
                                                else "")
            state[f"{side}.body.layers.{index}.{kind}{layer[6] or ''}"] = value
            continue
        old = next(k for k in names if key.startswith(k))
        state[names[old] + key[len(old):]] = value
    if "decoder.softmax.bias" not in state:  # a tied `lstm` has no softmax bias
        state["decoder.softmax.bias"] = torch.zeros(len(ours.decoder.dictionary))
    assert set(state) == {n for n, _ in ours.named_parameters()}
    ours.load_state_dict({**ours.state_dict(), **state})


@pytest.mark.parametrize("scale", [1, 10])
@pytest.mark.parametrize("bidirectional,tied", [(True, True), (False, False)])
def test_with_regularisation_off_it_is_fairseqs_lstm(bidirectional, tied, scale):
    """Copied weights give `lstm`'s log-probabilities on a padded batch, teacher-forced
    and token by token: any difference left is the AWD regularisation's. Scaled up x10
    the weights are no longer near zero, so that every path counts: with the initial
    ones, dropping the fed-back attention output (input feeding) moves the
    log-probabilities by about 1e-6, with x10 ones by more than 1."""
    src_dict, tgt_dict = small_dictionary(40), small_dictionary(30)
    sizes = dict(encoder_embed_dim=8, encoder_hidden_size=10, encoder_layers=2,
                 encoder_bidirectional=bidirectional, decoder_embed_dim=8,
                 decoder_hidden_size=12, decoder_layers=2, decoder_out_embed_dim=8)
    theirs = fairseq_lstm(src_dict, tgt_dict, share_decoder_input_output_embed=tied,
                          **sizes).train()
    with torch.no_grad():
        for weight in theirs.parameters():
            weight.mul_(scale)
    ours = model(src_dict, tgt_dict, untie_embeddings=not tied, **sizes, **OFF).train()
    copy_lstm_into_awd(theirs, ours)
    pad, eos = src_dict.pad(), src_dict.eos()
    # left-padded sources, longest first (lstm packs them sorted); right-padded targets
    src = torch.tensor([[5, 6, 7, 8, 9, eos], [pad, 10, 11, 12, 13, eos],
                        [pad, pad, pad, 14, 15, eos]])
    lengths = src.ne(pad).sum(1)
    prev = torch.tensor([[eos, 5, 6, 7, 8], [eos, 9, 10, pad, pad], [eos, 11, pad, pad, pad]])
    expected = theirs.get_normalized_probs(theirs(src, lengths, prev), log_probs=True)
    forced = ours.get_normalized_probs(ours(src, lengths, prev), log_probs=True)
    assert torch.allclose(forced, expected, atol=1e-5)
    encoder_out, state = ours.encoder(src, lengths), {}
    for t in range(prev.size(1)):
        step = ours.get_normalized_probs(ours.decoder(prev[:, : t + 1], encoder_out, state),
                                         log_probs=True)
        assert torch.allclose(step[:, 0], expected[:, t], atol=1e-5)
    # and weight drop and the dropouts do act
    regularised = model(src_dict, tgt_dict, untie_embeddings=not tied, **sizes).train()
    regularised.load_state_dict(ours.state_dict())
    assert not torch.allclose(regularised(src, lengths, prev)[0], ours(src, lengths, prev)[0])


def test_decoder_draws_each_mask_once_per_forward_and_reuses_it_at_every_step():
    """Weight drop: one mask per layer and forward; locked dropout: one per sequence,
    the fed-back attention output's included, however many steps the decoder takes."""
    mt = model(weight_drop=0.5, dropout=0.5, hidden_dropout=0.5, input_dropout=0.5).train()
    decoder = mt.decoder
    draws = {}

    def counted(name, method):
        def wrapper(*args):
            draws[name] = draws.get(name, 0) + 1
            return method(*args)
        return wrapper
    for i, layer in enumerate(decoder.body.layers):
        layer.dropped = counted(f"layer{i}", layer.dropped)
    for name in ("input_drop", "hidden_drop", "output_drop"):
        module = getattr(decoder.body, name)
        module.mask = counted(name, module.mask)
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 10, 2]])
    prev = torch.tensor([[2, 5, 6, 7, 8, 9, 10], [2, 11, 12, 13, 14, 15, 16]])
    _, extra = mt(src, torch.tensor([4, 4]), prev)
    assert draws == {"layer0": 1, "layer1": 1, "input_drop": 1, "hidden_drop": 1,
                     "output_drop": 1}
    dropped = extra["dropped_out"]  # (batch, time, hidden): a dropped unit is 0 at every step
    zeros = dropped.eq(0)
    assert zeros.any() and torch.equal(zeros, zeros[:, :1].expand_as(zeros))
    assert not extra["raw_out"].eq(0).any()  # TAR reads the top layer before any dropout


def test_attention_is_queried_by_the_top_layer_before_dropout():
    """In training, with output dropout on: the attention weights the decoder returns
    are those of the top layer's hidden state before dropout (raw_out), as in fairseq's
    `lstm`; the dropout acts on the attention output only."""
    mt = model(**{**OFF, "dropout": 0.5}).train()
    src = torch.tensor([[5, 6, 7, 2], [1, 8, 9, 2]])  # the second left-padded
    lengths = torch.tensor([4, 3])
    prev = torch.tensor([[2, 5, 6, 7, 8], [2, 11, 12, 13, 14]])
    encoder_out = mt.encoder(src, lengths)
    _, extra = mt.decoder(prev, encoder_out)
    raw, dropped, attn = extra["raw_out"], extra["dropped_out"], extra["attn"]
    zero = dropped.eq(0)
    assert zero.any() and not zero.all()  # the dropout acts
    source = encoder_out["encoder_out"].transpose(0, 1)
    padding = mt.decoder.attention.padding_bias(encoder_out["padding_mask"].t(), source)
    for t in range(prev.size(1)):
        out, weights = mt.decoder.attention(raw[:, t], source, padding)
        assert torch.allclose(attn[:, t], weights, atol=1e-6)
        kept = ~zero[:, t]
        assert torch.allclose(dropped[:, t][kept], out[kept] * 2, atol=1e-6)


# The real command lines, on a few hundred of the shipped German-English pairs.

TRAIN = ["--user-dir", USER_DIR, "--task", "translation", "-s", "de", "-t", "en",
         "--arch", "awd_lstm_translation", "--encoder-embed-dim", "16",
         "--encoder-hidden-size", "24", "--encoder-layers", "1", "--encoder-bidirectional",
         "--decoder-embed-dim", "16", "--decoder-hidden-size", "24", "--decoder-layers", "1",
         "--decoder-out-embed-dim", "16", "--criterion", "ar_tar_cross_entropy",
         "--label-smoothing", "0.1", "--optimizer", "nt_asgd", "--nonmono", "0", "--lr", "10",
         "--clip-norm", "0.25", "--max-tokens", "1000", "--cpu", "--seed", "1",
         "--no-epoch-checkpoints", "--log-format", "simple"]


def prepare(raw, out, *flags):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_translation.py"),
                           str(raw), "de", "en", str(out), *flags],
                          env=ENV, capture_output=True, text=True)


@pytest.fixture(scope="module")
def de_en_bin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("de_en")
    proc = prepare(ROOT / "data" / "tatoeba-de-en", tmp / "tok", "--lines", "600")
    assert proc.returncode == 0, proc.stderr
    run("fairseq-preprocess", "-s", "de", "-t", "en", "--trainpref", "tok/train",
        "--validpref", "tok/valid", "--testpref", "tok/test", "--destdir", "bin",
        "--workers", "1", cwd=tmp)
    return tmp / "bin"


@pytest.mark.slow
def test_train_with_nt_asgd_generate_with_beam_and_score(de_en_bin):
    ck = de_en_bin.parent / "ck"
    log = run("fairseq-train", str(de_en_bin), *TRAIN, "--max-epoch", "3", "--save-dir",
              str(ck), cwd=de_en_bin.parent)
    assert "NT-ASGD: switching to averaged SGD" in log
    assert re.search(r"valid on 'valid' subset \| loss [\d.]+ \| ar [\d.]+ \| tar [\d.]+ \| "
                     r"nll_loss [\d.]+", log)
    # the checkpoint holds the average: what generate and the hub translate with
    assert holds_the_average(ck / "checkpoint_last.pt")
    out = run("fairseq-generate", str(de_en_bin), "--user-dir", USER_DIR, "--task",
              "translation", "-s", "de", "-t", "en", "--path", str(ck / "checkpoint_best.pt"),
              "--beam", "5", "--batch-size", "64", "--cpu", "--tokenizer", "moses",
              "--scoring", "sacrebleu", cwd=de_en_bin.parent)
    n_test = sum(1 for _ in open(de_en_bin.parent / "tok" / "test.en"))
    assert len(re.findall(r"^D-\d+", out, re.M)) == n_test
    assert re.search(r"BLEU = [\d.]+ ", out)

    proc = subprocess.run(["fairseq-interactive", str(de_en_bin), "--user-dir", USER_DIR,
                           "-s", "de", "-t", "en", "--path", str(ck / "checkpoint_best.pt"),
                           "--beam", "5", "--nbest", "2", "--cpu", "--tokenizer", "moses"],
                          input="Ich bin müde.\nWo ist Tom?\n", env=ENV, capture_output=True,
                          text=True, cwd=de_en_bin.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()
            if line.startswith("H-")] == ["H-0", "H-0", "H-1", "H-1"]

    hub = AWDLSTMTranslationModel.from_pretrained(
        str(ck), "checkpoint_best.pt", data_name_or_path=str(de_en_bin), user_dir=USER_DIR,
        tokenizer="moses", source_lang="de", target_lang="en")
    text = hub.translate("Ich bin müde.", beam=5)
    assert isinstance(text, str) and text


@pytest.mark.slow
@pytest.mark.parametrize("flags,message", [
    (["--arch", "lstm", "--encoder-layers", "1", "--decoder-layers", "1", "--criterion",
      "label_smoothed_cross_entropy"], "follows validation through the model"),
    (["--disable-validation"], "drop --disable-validation"),
    (["--arch", "lstm", "--encoder-layers", "1", "--decoder-layers", "1"],
     "returns 'raw_out' and 'dropped_out'"),
])
def test_misuse_under_translation_gets_one_line(de_en_bin, tmp_path, flags, message):
    proc = subprocess.run(["fairseq-train", str(de_en_bin), *TRAIN, "--max-update", "2",
                           "--save-dir", str(tmp_path / "ck"), *flags],
                          env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr.strip().splitlines()[-1]


def test_prepare_names_an_unknown_pair_and_unequal_files(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_translation.py"),
                           str(ROOT / "data" / "tatoeba-de-en"), "de", "fr", str(tmp_path)],
                          env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"fairseq-awd: no train.fr in {ROOT / 'data' / 'tatoeba-de-en'}: the languages "
        "there are de, en")
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.de").write_text("Hallo !\nJa .\n")
        (tmp_path / f"{split}.en").write_text("Hello !\n")
    proc = prepare(tmp_path, tmp_path / "tok")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "train.de has 2 lines, train.en 1: line i of one must translate line i of the other")
    (tmp_path / "train.en").write_bytes(b"Hello !\n\xff\n")
    proc = prepare(tmp_path, tmp_path / "tok")
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"fairseq-awd: {tmp_path / 'train.en'} line 2 is not UTF-8")


@pytest.mark.slow
def test_ablation_scores_translation_rows_by_test_bleu(de_en_bin, tmp_path):
    out = run(sys.executable, "-m", "fairseq_awd.ablate", str(de_en_bin), "--out", "ab",
              "--rows", "full,no-regularisation", "--", *TRAIN[2:], "--max-epoch", "1",
              cwd=tmp_path)
    assert "[2/2]" in out
    table = (tmp_path / "ab" / "ablation.md").read_text()
    assert "| row | validation ppl | test BLEU | test - full |" in table
    bleu = {}
    for row in ("full", "no-regularisation"):
        log = (tmp_path / "ab" / row / "seed141" / "eval.log").read_text()
        bleu[row] = float(re.search(r"BLEU = ([\d.]+)", log)[1])
        assert f"| {bleu[row]:.2f} | {bleu[row] - bleu['full']:+.2f} |" in table
    assert len(re.findall(r"^D-\d+", log, re.M)) == 600  # the whole test split, beam 5


@pytest.mark.slow
def test_nt_asgd_averages_under_two_cpu_processes(de_en_bin, tmp_path):
    """legacy_ddp: the hooks sit on the model inside fairseq's wrapper (averaging from
    the start, as the finetune stage, so that two tiny epochs have an average)."""
    logs = run_two_ranks(["fairseq-train", str(de_en_bin), *TRAIN, "--asgd-from-start",
                          "--max-epoch", "2", "--save-dir", str(tmp_path / "ck")], 29531, tmp_path)
    assert len(re.findall(r"valid on 'valid' subset", logs[0])) == 2
    assert holds_the_average(tmp_path / "ck" / "checkpoint_last.pt")
