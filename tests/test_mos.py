"""awd_lstm_mos: the mixture against the MoS reference's formulas, what AR/TAR read,
the latent dropout's mask, and the real commands."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm_mos import AWDLSTMMoSConfig, AWDLSTMMoSDecoder, AWDLSTMMoSModel
from fairseq_awd.mixture_of_softmaxes import MixtureOfSoftmaxes

from conftest import USER_DIR, perplexity, run, small_dictionary, valid_losses
from test_model import parse

TINY = dict(decoder_embed_dim=8, decoder_hidden_size=12, decoder_last_hidden_size=10,
            n_experts=3)
V = 50


def decoder(**overrides):
    d = AWDLSTMMoSDecoder(AWDLSTMMoSConfig(**{**TINY, **overrides}), small_dictionary(V))
    with torch.no_grad():
        d.softmax.bias.normal_()  # away from its zero start
    return d


def mos_params(vocab, emb, nhid, nhidlast, k=15):
    """The reference's RNNModel: tied embedding, three LSTMs (each with two biases),
    prior without bias, latent with bias, decoder bias."""
    lstm = sum(4 * h * (i + h) + 8 * h for i, h in ((emb, nhid), (nhid, nhid), (nhid, nhidlast)))
    return vocab * emb + lstm + nhidlast * k + nhidlast * k * emb + k * emb + vocab


def test_parameter_counts_are_the_papers():
    ptb = AWDLSTMMoSDecoder(AWDLSTMMoSConfig(), small_dictionary(10000))
    n = sum(p.numel() for p in ptb.parameters())
    assert n == mos_params(10000, 280, 960, 620) and round(n / 1e6) == 22
    wt2 = AWDLSTMMoSDecoder(AWDLSTMMoSConfig(decoder_embed_dim=300, decoder_hidden_size=1150,
                                             decoder_last_hidden_size=650),
                            small_dictionary(33278))
    n = sum(p.numel() for p in wt2.parameters())
    assert n == mos_params(33278, 300, 1150, 650) and round(n / 1e6) == 35


def test_flags_and_the_wt2_architecture():
    ptb = parse("--arch", "awd_lstm_mos")
    assert (ptb.decoder_embed_dim, ptb.decoder_hidden_size, ptb.decoder_last_hidden_size,
            ptb.n_experts) == (280, 960, 620, 15)
    assert (ptb.dropout, ptb.input_dropout, ptb.hidden_dropout, ptb.embed_dropout,
            ptb.weight_drop, ptb.latent_dropout) == (0.4, 0.4, 0.225, 0.1, 0.5, 0.29)
    wt2 = parse("--arch", "awd_lstm_mos_wt2")
    assert (wt2.decoder_embed_dim, wt2.decoder_hidden_size, wt2.decoder_last_hidden_size,
            wt2.n_experts) == (300, 1150, 650, 15)
    assert (wt2.input_dropout, wt2.hidden_dropout, wt2.latent_dropout) == (0.55, 0.2, 0.29)


@pytest.mark.parametrize("train", [True, False])
def test_the_mixture_sums_to_one(train):
    d = decoder(latent_dropout=0.5).train(train)
    lprobs = d.get_normalized_probs(d(torch.randint(4, V, (3, 9))), log_probs=True)
    assert lprobs.shape == (3, 9, V)
    assert torch.allclose(lprobs.double().exp().sum(-1), torch.ones(3, 9, dtype=torch.double),
                          atol=1e-6)


def test_one_expert_is_one_softmax_over_the_tanh_latent():
    mos = MixtureOfSoftmaxes(V, 10, 8, n_experts=1, latent_dropout=0.0)
    h, emb = torch.randn(2, 5, 10), torch.randn(V, 8)
    expected = F.log_softmax(F.linear(torch.tanh(mos.latent(h)), emb, mos.bias), -1)
    assert torch.allclose(mos(h, emb), expected, atol=1e-6)


def reference_forward(d, tokens):
    """The MoS reference's RNNModel.forward in eval mode, transcribed from its model.py
    with torch.nn.LSTM layers holding the decoder's weights: the mixture's
    probabilities, (batch, time, vocab)."""
    x = F.embedding(tokens.t(), d.body.embed_tokens.weight)
    for layer in d.body.layers:
        lstm = torch.nn.LSTM(layer.input_size, layer.hidden_size)
        with torch.no_grad():
            for ref, ours in (("weight_ih_l0", "weight_ih"), ("weight_hh_l0", "weight_hh_raw"),
                              ("bias_ih_l0", "bias_ih"), ("bias_hh_l0", "bias_hh")):
                getattr(lstm, ref).copy_(getattr(layer, ours))
        x, _ = lstm(x)
    mos = d.softmax
    latent = torch.tanh(mos.latent(x))
    logit = F.linear(latent.view(-1, mos.embed_dim), d.body.embed_tokens.weight, mos.bias)
    prior = F.softmax(mos.prior(x).contiguous().view(-1, mos.n_experts), -1)
    prob = F.softmax(logit.view(-1, V), -1).view(-1, mos.n_experts, V)
    prob = (prob * prior.unsqueeze(2).expand_as(prob)).sum(1)
    return prob.view(tokens.size(1), tokens.size(0), V).transpose(0, 1)


def test_the_references_forward_gives_the_same_log_probabilities():
    d = decoder().eval()
    tokens = torch.randint(4, V, (3, 11))
    with torch.no_grad():
        ours = d.get_normalized_probs(d(tokens), log_probs=True)
        p = reference_forward(d, tokens)
    assert torch.allclose(ours, p.log(), atol=1e-5)
    # the reference's log(p + 1e-8) sits above log p by log1p(1e-8 / p)
    gap = (p + 1e-8).log() - ours
    assert (gap >= -1e-5).all() and (gap <= torch.log1p(1e-8 / p) + 1e-5).all()


def test_ar_reads_the_last_layer_after_its_dropout_and_tar_before():
    d = decoder(dropout=0.5)
    task = LanguageModelingTask(LanguageModelingConfig(), d.dictionary, d.dictionary)
    model = AWDLSTMMoSModel(d).train()
    tokens = torch.randint(4, V, (3, 10))
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens.roll(-1, 1), "ntokens": 30}
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0)
    torch.manual_seed(5)
    loss, _, log = crit(model, sample)
    model.reset_state()
    torch.manual_seed(5)
    lprobs, extra = model(tokens)
    raw, dropped = extra["raw_out"], extra["dropped_out"]
    assert raw.shape == dropped.shape == (3, 10, 10)  # the last layer's own size
    kept = dropped != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # locked over time
    assert torch.allclose(dropped[kept], raw[kept] * 2)
    nll = -lprobs.gather(-1, sample["target"][..., None]).sum()
    ar = 2 * dropped.pow(2).mean()
    tar = (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    assert loss.item() == pytest.approx((nll + 30 * (ar + tar)).item(), rel=1e-5)
    assert log["loss"].item() == pytest.approx(nll.item(), rel=1e-5)


def test_the_latent_dropout_is_locked_over_time():
    """With an identity embedding and a constant latent (tanh(1), or 0 where dropped),
    one expert's log-probabilities show which latent units each position dropped."""
    mos = MixtureOfSoftmaxes(16, 3, 16, n_experts=1, latent_dropout=0.5).train()
    with torch.no_grad():
        mos.latent.weight.zero_()
        mos.latent.bias.fill_(1.0)
    lprobs = mos(torch.randn(6, 7, 3), torch.eye(16))  # (batch, time, 16)
    dropped = lprobs < lprobs.amax(-1, keepdim=True) - 0.5
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # one mask per sequence
    assert dropped.any() and not torch.equal(dropped[0, 0], dropped[1, 0])


def test_a_checkpoint_of_another_dictionary_is_refused_at_load():
    """The fingerprint the body's embedding carries, as awd_lstm's."""
    trained = AWDLSTMMoSModel(decoder())
    other = small_dictionary(V)
    other.symbols[5], other.symbols[6] = other.symbols[6], other.symbols[5]
    model = AWDLSTMMoSModel(AWDLSTMMoSDecoder(AWDLSTMMoSConfig(**TINY), other))
    with pytest.raises(SystemExit, match=r"another dictionary than dict.txt \(same size"):
        model.load_state_dict(trained.state_dict())


@pytest.fixture(scope="module")
def mos_checkpoint(data_bin, tmp_path_factory):
    """A tiny awd_lstm_mos trained 2 epochs by fairseq-train with nt_asgd, and the same
    run in two parts, resumed at the epoch boundary."""
    tmp = tmp_path_factory.mktemp("mos")

    def train(save_dir, epochs):
        return run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir",
                   USER_DIR, "--arch", "awd_lstm_mos", "--decoder-embed-dim", "16",
                   "--decoder-hidden-size", "32", "--decoder-last-hidden-size", "24",
                   "--n-experts", "3", "--criterion", "ar_tar_cross_entropy", "--task",
                   "variable_bptt_lm", "--bptt", "20", "--max-seq-len-delta", "5",
                   "--batch-size", "4", "--seed", "7", "--optimizer", "nt_asgd", "--lr", "30",
                   "--clip-norm", "0.25", "--max-epoch", str(epochs), "--cpu",
                   "--no-epoch-checkpoints", "--log-format", "simple", "--save-dir",
                   str(save_dir), cwd=tmp)
    log = train(tmp / "ck", 2)
    train(tmp / "part", 1)
    resumed = train(tmp / "part", 2)
    return tmp, log, resumed


@pytest.mark.slow
def test_fairseq_train_resume_eval_lm_its_extras_and_the_hub(data_bin, mos_checkpoint):
    tmp, log, resumed = mos_checkpoint
    assert valid_losses(log)[-1] < valid_losses(log)[0]
    assert valid_losses(resumed) == valid_losses(log)[1:]
    whole = torch.load(tmp / "ck" / "checkpoint_last.pt")["model"]
    parts = torch.load(tmp / "part" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(whole[k], parts[k]) for k in whole)

    def eval_lm(*flags):
        return perplexity(run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin),
                              "--user-dir", USER_DIR, "--task", "variable_bptt_lm", "--path",
                              str(tmp / "ck" / "checkpoint_best.pt"), "--cpu", *flags,
                              cwd=tmp))

    ppl = eval_lm()
    lm = AWDLSTMMoSModel.from_pretrained(str(tmp / "ck"), "checkpoint_best.pt",
                                         data_name_or_path=str(data_bin), user_dir=USER_DIR)
    model = lm.models[0]
    lm.task.load_dataset("test")
    tokens = lm.task.dataset("test").tokens
    with torch.no_grad():  # the mixture, token by token from one state
        state, total = {}, 0.0
        for t in range(len(tokens) - 1):
            out = model.decoder(tokens[None, : t + 1], incremental_state=state)
            total -= model.get_normalized_probs(out, log_probs=True)[0, -1, tokens[t + 1]].item()
    assert ppl == pytest.approx(math.exp(total / (len(tokens) - 1)), rel=1e-4)
    assert eval_lm("--cache-window", "100", "--cache-lambda", "0.1") < 0.95 * ppl
    assert eval_lm("--dynamic-eval", "--dynamic-eval-stats-batches", "20") < 0.95 * ppl
    assert lm.score("the game was played")["positional_scores"].shape == (4,)
