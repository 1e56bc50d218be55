"""Dynamic evaluation: the update rule by hand, and no token scored by weights that
have seen it."""
import copy

import pytest
import torch

from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from fairseq_awd.dynamic_eval import DynamicEval
from fairseq_awd.evaluation import DynamicEvalSettings, EvalLM
from fairseq_awd.stream import Stream

from conftest import small_dictionary

LR, LAM, EPS, BPTT = 0.05, 0.3, 1e-3, 5


@pytest.mark.parametrize("old", [False, True])
def test_the_update_is_krauses_rms_rule_with_decay(old):
    """Krause et al.'s current dynamiceval.py: rms the root of the squared gradients'
    mean, decay rms / the weights' mean rms. Its first version (the MoS reference's,
    old=True): the root of their sum, decay divided by the sum of the weights' mean
    rms; its lr, lambda and epsilon, converted, give its update."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    xs = [torch.randn(4, 3) for _ in range(3)]

    def loss_of(x, _):
        return layer(x).pow(2).mean()
    dyn = DynamicEval(layer, LR, LAM, EPS, old_hyperparameters=old)
    dyn.gradient_statistics(loss_of, [(x, None) for x in xs])
    grads = [torch.autograd.grad(loss_of(x, None), list(layer.parameters())) for x in xs]
    squares = [torch.stack([g[i] for g in grads]).pow(2) for i in range(2)]
    rms = [(s.sum(0) if old else s.mean(0)).sqrt() for s in squares]
    total = rms[0].mean() + rms[1].mean()
    decay = [(r / (total if old else total / 2)).clamp(max=1 / LAM) for r in rms]
    if not old:
        assert all(torch.allclose(a, b) for a, b in zip(dyn.rms, rms))
        assert all(torch.allclose(a, b) for a, b in zip(dyn.decay, decay))
    start = [p.detach().clone() for p in layer.parameters()]
    with torch.no_grad():  # move away from the start, so that the decay acts
        for p in layer.parameters():
            p.add_(0.5)
    before = [p.detach().clone() for p in layer.parameters()]
    x = torch.randn(4, 3)
    g = torch.autograd.grad(loss_of(x, None), list(layer.parameters()))
    dyn.step(loss_of(x, None))
    for p, p0, p_before, gi, r, d in zip(layer.parameters(), start, before, g, rms, decay):
        expected = p_before + LAM * d * (p0 - p_before) - LR * gi / (r + EPS)
        assert torch.allclose(p, expected, atol=1e-6)


def scores(model, tokens, train):
    """Target log-probabilities as fairseq-eval-lm gets them with --dynamic-eval."""
    rows, stats = train.view(4, -1), []
    for offset in range(0, rows.size(1) - 1, BPTT):
        n = min(BPTT, rows.size(1) - 1 - offset)
        stats.append((rows[:, offset : offset + n], rows[:, offset + 1 : offset + 1 + n]))
    evaluator = EvalLM(model, dynamic=DynamicEvalSettings(LR, LAM, EPS, stats))
    out = []
    with torch.no_grad():  # as fairseq's SequenceScorer
        for offset in range(0, len(tokens) - 1, BPTT):
            n = min(BPTT, len(tokens) - 1 - offset)
            src, target = tokens[offset : offset + n][None], tokens[offset + 1 : offset + 1 + n][None]
            out_t = evaluator(src, stream=Stream("test", offset), target=target)
            lprobs = evaluator.get_normalized_probs(out_t, log_probs=True)
            out.append(lprobs[0].gather(1, target[0][:, None])[:, 0])
    return torch.cat(out)


def test_no_token_is_scored_by_weights_that_have_seen_it():
    torch.manual_seed(0)
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12)
    model = AWDLSTMModel(AWDLSTMDecoder(cfg, small_dictionary(30))).eval()
    tokens, train = torch.randint(4, 30, (41,)), torch.randint(4, 30, (84,))
    first = scores(copy.deepcopy(model), tokens, train)
    changed = tokens.clone()
    changed[23] = 4 if tokens[23] != 4 else 5  # the target of position 22
    second = scores(copy.deepcopy(model), changed, train)
    assert torch.equal(first[:22], second[:22])  # earlier windows: the same weights, bit for bit
    assert not torch.equal(first[25:], second[25:])  # later ones learnt from position 22
    with torch.no_grad():
        static = model(tokens[None, :-1])[0][0].log_softmax(-1).gather(1, tokens[1:, None])[:, 0]
    assert torch.allclose(first[:BPTT], static[:BPTT], atol=1e-6)  # the first window: trained weights
    assert not torch.allclose(first[BPTT:], static[BPTT:], atol=1e-4)


def test_an_eval_mode_lstm_that_takes_gradients_keeps_what_cudnn_needs_for_backward(
        monkeypatch):
    """On a GPU cuDNN refuses the backward of an LSTM run in inference mode ("cudnn RNN
    backward can only be called in training mode"); dynamic evaluation runs the model
    in eval mode with gradients on, so the kernel must be told "train"."""
    flags, lstm = [], torch.lstm
    monkeypatch.setattr(torch, "lstm", lambda *a: flags.append(a[6]) or lstm(*a))
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12)
    model = AWDLSTMModel(AWDLSTMDecoder(cfg, small_dictionary(30)))
    tokens = torch.tensor([[5, 6]])
    model.train()(tokens)
    model.eval()
    with torch.no_grad():
        model(tokens)
    assert flags == [True] * 3 + [False] * 3
    model(tokens)  # eval mode, gradients on
    assert flags[6:] == [True] * 3


def test_the_decay_is_clipped_at_one_over_lambda():
    """Weights whose rms is far above the mean get decay 1/lambda, not rms/mean(rms):
    the pull lambda * decay toward the trained weights never exceeds 1 (no overshoot)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    lam = 0.9  # 1/lambda = 1.11: well within the spread of rms/mean(rms)
    scale = torch.tensor([[100.0, 1.0, 1.0]])  # the first input's weights: large gradients
    xs = [torch.randn(4, 3) * scale for _ in range(3)]

    def loss_of(x, _):
        return layer(x).pow(2).mean()
    dyn = DynamicEval(layer, LR, lam, EPS)
    dyn.gradient_statistics(loss_of, [(x, None) for x in xs])
    mean_rms = sum(r.mean() for r in dyn.rms) / len(dyn.rms)
    ratios = [r / mean_rms for r in dyn.rms]
    assert any((q > 1 / lam).any() for q in ratios)  # some are clipped ...
    assert any((q < 1 / lam).any() for q in ratios)  # ... and some are not
    for d, q in zip(dyn.decay, ratios):
        assert torch.allclose(d, torch.minimum(q, torch.tensor(1 / lam)))
    assert all((lam * d).max() <= 1 + 1e-6 for d in dyn.decay)

