"""The split softmax (split_softmax.py): the full distribution it defines, the
training loss on it, and what training computes."""
import math
import re
import sys

import pytest
import torch
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from fairseq_awd.split_softmax import SplitSoftmax, parse_cutoffs
from fairseq_awd.tied_softmax import TiedSoftmax

from conftest import USER_DIR, perplexity, run, small_dictionary, valid_losses

V = 200
CUTOFFS = "20,60,120"  # a head of 20 words and three tails


def model(cutoffs=CUTOFFS, **overrides):
    d = small_dictionary(V)
    task = LanguageModelingTask(LanguageModelingConfig(), d, d)
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12, softmax_cutoffs=cutoffs,
                        **overrides)
    m = AWDLSTMModel(AWDLSTMDecoder(cfg, d))
    with torch.no_grad():  # tombstones and biases away from their zero start
        for p in (m.decoder.softmax.bias, m.decoder.softmax.tail_vectors,
                  m.decoder.softmax.tail_bias):
            p.normal_()
    return task, m


@pytest.mark.parametrize("untie", [False, True])
def test_the_full_distribution_sums_to_one(untie):
    _, m = model(untie_embeddings=untie)
    out = m(torch.randint(4, V, (3, 9)))
    assert out[0].shape == (3, 9, 8 if not untie else 12)  # features: no logits in training
    lprobs = m.get_normalized_probs(out, log_probs=True)
    assert lprobs.shape == (3, 9, V)
    assert torch.allclose(lprobs.exp().sum(-1), torch.ones(3, 9), atol=1e-5)
    assert torch.allclose(m.get_normalized_probs(out, log_probs=False), lprobs.exp())


def test_log_probabilities_by_hand():
    """log p(w) = log p_head(tombstone of w's tail) + log p_tail(w)."""
    s = SplitSoftmax(10, 3, [4, 7])
    with torch.no_grad():
        s.tail_vectors.normal_()
        s.bias.normal_()
    emb, h = torch.randn(10, 3), torch.randn(3)
    logits = emb @ h + s.bias
    head = torch.cat([logits[:4], s.tail_vectors @ h + s.tail_bias]).log_softmax(0)
    expected = torch.cat([head[:4], head[4] + logits[4:7].log_softmax(0),
                          head[5] + logits[7:].log_softmax(0)])
    assert torch.allclose(s.log_probs(h[None], emb)[0], expected, atol=1e-6)


@pytest.mark.parametrize("untie", [False, True])
def test_the_training_loss_is_the_nll_of_that_distribution(untie):
    task, m = model(untie_embeddings=untie)
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=0.0, tar_beta=0.0)
    tokens = torch.randint(4, V, (3, 10))
    target = tokens.roll(-1, 1)
    target[2, 7:] = task.dictionary.pad()  # padding is left out
    sample = {"net_input": {"src_tokens": tokens}, "target": target, "ntokens": 27}
    m.eval()
    loss, _, log = crit(m, sample)
    lprobs = m.get_normalized_probs(m(tokens), log_probs=True)
    nll = -lprobs.gather(-1, target[..., None]).squeeze(-1)[target.ne(task.dictionary.pad())]
    assert loss.item() == pytest.approx(nll.sum().item(), rel=1e-5)
    assert log["loss"].item() == loss.item()


def test_label_smoothing_reads_the_full_distribution():
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    task, m = model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=0.0, tar_beta=0.0, label_smoothing=0.1)
    tokens = torch.randint(4, V, (2, 6))
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens.roll(-1, 1), "ntokens": 12}
    m.eval()
    loss, _, log = crit(m, sample)
    lprobs = m.get_normalized_probs(m(tokens), log_probs=True).reshape(-1, V)
    smoothed, nll = label_smoothed_nll_loss(lprobs, sample["target"].reshape(-1), 0.1,
                                            task.dictionary.pad())
    assert loss.item() == pytest.approx(smoothed.item(), rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(nll.item(), rel=1e-5)


def test_one_split_is_the_full_softmax_exactly():
    full, split = TiedSoftmax(V, 8), SplitSoftmax(V, 8, [])
    with torch.no_grad():
        full.bias.normal_()
        split.bias.copy_(full.bias)
    emb, h = torch.randn(V, 8), torch.randn(4, 5, 8)
    target = torch.randint(0, V, (4, 5))
    expected = full(h, emb).log_softmax(-1)
    assert torch.equal(split.log_probs(h, emb), expected)
    assert torch.equal(split.target_log_probs(h, target, emb),
                       expected.gather(-1, target[..., None]).squeeze(-1))


def test_each_tail_is_computed_only_at_its_targets(monkeypatch):
    _, m = model()
    s = m.decoder.softmax
    rows = {}
    original = SplitSoftmax.tail_log_probs

    def counted(features, weight, bias):
        rows[len(rows) + 1] = features.shape[:-1].numel()  # tails come in order
        return original(features, weight, bias)

    monkeypatch.setattr(SplitSoftmax, "tail_log_probs", staticmethod(counted))
    target = torch.tensor([[3, 25, 59, 60, 61, 130, 199, 2]])
    h = torch.randn(1, 8, 8)
    got = s.target_log_probs(h, target, m.decoder.body.embed_tokens.weight)
    assert rows == {1: 2, 2: 2, 3: 2}  # [20, 60): 25, 59; [60, 120): 60, 61; then 130, 199
    rows.clear()
    full = s.log_probs(h, m.decoder.body.embed_tokens.weight)
    assert rows == {1: 8, 2: 8, 3: 8}
    assert torch.allclose(got, full.gather(-1, target[..., None]).squeeze(-1), atol=1e-6)


def test_tails_train_the_embedding_rows_of_their_targets_only():
    _, m = model()
    target = torch.tensor([[3, 25, 26]])  # the head and the first tail: none of the others
    h = torch.randn(1, 3, 8)
    weight = m.decoder.body.embed_tokens.weight
    m.decoder.softmax.target_log_probs(h, target, weight).sum().backward()
    touched = weight.grad.abs().sum(1).ne(0)
    assert touched[:60].all() and not touched[60:].any()
    assert m.decoder.softmax.tail_vectors.grad.ne(0).all()  # every tombstone is in the head


def test_auto_cutoffs_are_the_references():
    assert parse_cutoffs("auto", 60_000) == []
    assert parse_cutoffs("auto", 100_000) == [2800, 20000, 76000]
    assert parse_cutoffs("auto", 600_000) == [4200, 35000, 180000]
    assert parse_cutoffs("auto", 267_744) == [2800, 20000, 76000]  # WikiText-103
    assert parse_cutoffs("none", 600_000) == []
    assert parse_cutoffs("100,300", 400) == [100, 300]


@pytest.mark.parametrize("spec,message", [
    ("300,200", "--softmax-cutoffs 300,200: the cutoffs must be positive and increasing"),
    ("100,400", "--softmax-cutoffs 100,400: 400 is beyond the vocabulary (400 words"),
    ("a,b", "--softmax-cutoffs takes auto, none or increasing word indices"),
])
def test_bad_cutoffs_get_one_line(spec, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        parse_cutoffs(spec, 400)


@pytest.fixture(scope="module")
def split_checkpoint(data_bin, tmp_path_factory):
    """awd_lstm with three tails, trained by fairseq-train with nt_asgd."""
    save_dir = tmp_path_factory.mktemp("split") / "ck"
    log = run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", USER_DIR,
              "--arch", "awd_lstm", "--decoder-embed-dim", "32", "--decoder-hidden-size", "64",
              "--softmax-cutoffs", "100,500,1500", "--criterion", "ar_tar_cross_entropy",
              "--task", "variable_bptt_lm", "--bptt", "20", "--batch-size", "4", "--seed", "7",
              "--optimizer", "nt_asgd", "--lr", "30", "--clip-norm", "0.25", "--max-epoch", "2",
              "--cpu", "--no-epoch-checkpoints", "--log-format", "simple", "--save-dir",
              str(save_dir), cwd=save_dir.parent)
    return save_dir, log


@pytest.mark.slow
def test_a_split_checkpoint_evaluates_with_eval_lm_its_extras_and_the_hub(data_bin,
                                                                         split_checkpoint):
    save_dir, log = split_checkpoint
    ckpt = save_dir / "checkpoint_best.pt"
    assert valid_losses(log)[-1] < valid_losses(log)[0]

    def eval_lm(*flags):
        return perplexity(run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin),
                              "--user-dir", USER_DIR, "--task", "variable_bptt_lm", "--path",
                              str(ckpt), "--cpu", *flags, cwd=save_dir))

    ppl = eval_lm()
    lm = AWDLSTMModel.from_pretrained(str(save_dir), "checkpoint_best.pt",
                                      data_name_or_path=str(data_bin), user_dir=USER_DIR)
    model = lm.models[0]  # in eval mode: the hub made it generation-only
    assert isinstance(model.decoder.softmax, SplitSoftmax) and not model.training
    lm.task.load_dataset("test")
    tokens = lm.task.dataset("test").tokens
    with torch.no_grad():  # the whole distribution, token by token from one state
        state, total = {}, 0.0
        for t in range(len(tokens) - 1):
            out = model.decoder(tokens[None, : t + 1], incremental_state=state)
            lprobs = model.get_normalized_probs(out, log_probs=True)[0, -1]
            assert abs(lprobs.exp().sum().item() - 1) < 1e-5
            total -= lprobs[tokens[t + 1]].item()
    assert ppl == pytest.approx(math.exp(total / (len(tokens) - 1)), rel=1e-4)
    assert eval_lm("--cache-window", "100", "--cache-lambda", "0.1") < 0.95 * ppl
    assert eval_lm("--dynamic-eval", "--dynamic-eval-stats-batches", "20") < 0.95 * ppl
    scores = lm.score("the game was played")["positional_scores"]
    assert scores.shape == (4,) and (scores < 0).all()  # one per word
