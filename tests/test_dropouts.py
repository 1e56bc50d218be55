"""Semantics of the three dropout techniques, checked on their masks."""
import torch

from fairseq_awd.embedding_dropout import embedding_dropout
from fairseq_awd.locked_dropout import LockedDropout
from fairseq_awd.weight_drop import WeightDropLSTM, one_buffer


def test_locked_dropout_one_mask_over_time():
    drop = LockedDropout(0.5).train()
    x = torch.ones(7, 3, 40)
    y = drop(x)
    assert torch.equal(y, y[:1].expand_as(y))  # same mask at every time step
    assert set(y.unique().tolist()) == {0.0, 2.0}  # dropped or rescaled by 1/(1-p)
    assert 0.3 < (y[0] == 0).float().mean() < 0.7
    assert not torch.equal(y[:, 0], y[:, 1])  # each sequence has its own mask


def test_locked_dropout_rescales_the_mask_then_multiplies_as_the_reference():
    drop = LockedDropout(0.3).train()
    x = torch.randn(6, 4, 50)
    torch.manual_seed(5)
    y = drop(x)
    torch.manual_seed(5)  # the same draw, by hand
    mask = torch.empty(1, 4, 50).bernoulli_(0.7)
    # bit for bit: x * mask / 0.7 rounds differently for some entries
    assert torch.equal(y, mask / 0.7 * x)
    x.requires_grad_()
    torch.manual_seed(5)
    drop(x).sum().backward()
    assert torch.equal(x.grad, (mask / 0.7).expand_as(x))


def test_locked_dropout_is_identity_in_eval():
    x = torch.randn(5, 2, 4)
    assert torch.equal(LockedDropout(0.5).eval()(x), x)


def test_embedding_dropout_drops_whole_words():
    embed = torch.nn.Embedding(20, 6)
    tokens = torch.tensor([[3, 5, 3, 7, 5, 3] * 4])
    out = embedding_dropout(embed, tokens, 0.5, training=True)
    for word in (3, 5, 7):
        rows = out[tokens == word]
        zero = rows.abs().sum(-1) == 0
        assert zero.all() or not zero.any()  # every occurrence shares its fate
        if not zero.any():
            assert torch.allclose(rows, embed.weight[word].expand_as(rows) * 2)
    # over many draws: each word dropped in about half of them, every occurrence alike
    draws = torch.stack([embedding_dropout(embed, tokens, 0.5, training=True).abs().sum(-1) == 0
                         for _ in range(200)])  # (draw, 1, 24) zero rows
    for word in (3, 5, 7):
        fate = draws[:, tokens == word]
        assert (fate.all(1) | ~fate.any(1)).all() and 0.35 < fate[:, 0].float().mean() < 0.65


def test_embedding_dropout_off_in_eval():
    embed = torch.nn.Embedding(20, 6)
    tokens = torch.randint(0, 20, (2, 5))
    assert torch.equal(embedding_dropout(embed, tokens, 0.5, training=False), embed(tokens))


def test_weight_drop_matches_nn_lstm_without_drop():
    lstm = WeightDropLSTM(5, 7, weight_drop=0.5).eval()
    ref = torch.nn.LSTM(5, 7)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(lstm.weight_ih)
        ref.weight_hh_l0.copy_(lstm.weight_hh_raw)
        ref.bias_ih_l0.copy_(lstm.bias_ih)
        ref.bias_hh_l0.copy_(lstm.bias_hh)
    x = torch.randn(4, 3, 5)
    out, (h, c) = lstm(x)
    ref_out, (ref_h, ref_c) = ref(x)
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(c, ref_c, atol=1e-6)
    assert torch.equal(lstm(x)[0], out)  # eval is deterministic


def test_weight_drop_one_mask_per_forward_and_gradient_reaches_raw_weight():
    lstm = WeightDropLSTM(5, 8, weight_drop=0.5).train()
    torch.manual_seed(1)
    w_ih, w_hh, b_ih, b_hh = lstm.flat_weights()
    dropped = w_hh == 0
    assert 0.3 < dropped.float().mean() < 0.7
    kept = ~dropped
    assert torch.allclose(w_hh[kept], lstm.weight_hh_raw[kept] * 2)
    # On CUDA the four are views of one buffer, in nn.LSTM's order (what cuDNN wants).
    views = one_buffer([w_ih, w_hh, b_ih, b_hh])
    base = views[0].data_ptr()
    sizes = [w_ih.numel(), w_hh.numel(), b_ih.numel()]
    assert views[1].data_ptr() == base + 4 * sizes[0]
    assert views[3].data_ptr() == base + 4 * sum(sizes)
    assert all(torch.equal(v, t) for v, t in zip(views, [w_ih, w_hh, b_ih, b_hh]))
    # The same mask for all time steps: replay the recurrence by hand with this mask.
    x = torch.randn(6, 2, 5)
    torch.manual_seed(2)
    out, _ = lstm(x)
    torch.manual_seed(2)
    w_ih, w_hh, b_ih, b_hh = lstm.flat_weights()
    h = c = torch.zeros(2, 8)
    for t in range(6):
        i, f, g, o = (x[t] @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        assert torch.allclose(out[t], h, atol=1e-5)
    out.sum().backward()
    grad = lstm.weight_hh_raw.grad
    assert grad is not None and grad.abs().sum() > 0
    names = [n for n, _ in lstm.named_parameters()]
    assert names == ["weight_ih", "weight_hh_raw", "bias_ih", "bias_hh"]


def test_embedding_dropout_is_the_references_masked_matrix():
    """The reference masks the whole matrix, then looks up; the rows looked up, then
    masked, are the same values (one multiply of the same two numbers each), and the
    gradients agree to rounding."""
    embed = torch.nn.Embedding(20, 6, padding_idx=1)
    tokens = torch.randint(0, 20, (3, 7))
    torch.manual_seed(3)
    ours = embedding_dropout(embed, tokens, 0.3, training=True)
    ours.pow(2).sum().backward()
    ours_grad, embed.weight.grad = embed.weight.grad, None
    torch.manual_seed(3)
    mask = embed.weight.new_empty(20, 1).bernoulli_(0.7) / 0.7
    reference = torch.nn.functional.embedding(tokens, embed.weight * mask, 1)
    reference.pow(2).sum().backward()
    assert torch.equal(ours, reference)
    assert torch.allclose(ours_grad, embed.weight.grad, rtol=1e-6)
