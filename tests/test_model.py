import pytest
import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder
from fairseq_awd.awd_lstm_body import check_config
from fairseq_awd.stream import Stream

from conftest import small_dictionary

TINY = dict(decoder_embed_dim=8, decoder_hidden_size=12, decoder_layers=3)


def decoder(**overrides):
    return AWDLSTMDecoder(AWDLSTMConfig(**{**TINY, **overrides}), small_dictionary())


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_ptb_model_has_the_reference_parameter_count():
    assert n_params(AWDLSTMDecoder(AWDLSTMConfig(), small_dictionary(10000))) == 24_221_600


def test_untied_model_has_its_own_softmax():
    tied, untied = decoder(), decoder(untie_embeddings=True)
    v = 50
    last_tied = 4 * 8 * (12 + 8) + 8 * 8
    last_untied = 4 * 12 * (12 + 12) + 8 * 12
    assert n_params(untied) - n_params(tied) == v * 12 + last_untied - last_tied
    assert untied.body.layers[-1].hidden_size == 12 and tied.body.layers[-1].hidden_size == 8


def test_initialisation_as_the_reference():
    d = decoder()
    assert d.body.embed_tokens.weight.abs().max() <= 0.1
    assert torch.equal(d.softmax.bias, torch.zeros(50))


def parse(*flags):
    """The model config that fairseq-train builds from these flags."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["data", "--task", "language_modeling", "--user-dir", "fairseq_awd", *flags])
    return convert_namespace_to_omegaconf(args).model


def test_wt2_architecture_and_flags():
    wt2 = parse("--arch", "awd_lstm_wt2")
    assert (wt2.input_dropout, wt2.hidden_dropout, wt2.dropout) == (0.65, 0.2, 0.4)
    ptb = parse("--arch", "awd_lstm", "--untie-embeddings", "--weight-drop", "0.3")
    assert (ptb.input_dropout, ptb.hidden_dropout, ptb.embed_dropout) == (0.4, 0.25, 0.1)
    assert ptb.untie_embeddings and ptb.weight_drop == 0.3


@pytest.mark.parametrize("flag,value", [("dropout", 1.0), ("weight_drop", -0.1),
                                         ("embed_dropout", 1.5), ("decoder_layers", 0)])
def test_bad_settings_get_one_clear_line(flag, value):
    with pytest.raises(SystemExit, match=f"--{flag.replace('_', '-')} must be"):
        check_config(AWDLSTMConfig(**{flag: value}), ["decoder_layers"])


def test_incremental_decoding_equals_full_forward():
    d = decoder().eval()
    tokens = torch.randint(4, 50, (3, 11))
    full, _ = d(tokens)
    state, steps = {}, []
    for t in range(tokens.size(1)):
        out, _ = d(tokens[:, : t + 1], incremental_state=state)
        steps.append(out[:, -1])
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    # reorder_incremental_state follows beams
    order = torch.tensor([2, 0, 1])
    d.reorder_incremental_state_scripting(state, order)
    nxt = torch.randint(4, 50, (3, 1))
    out, _ = d(torch.cat([tokens[order], nxt], 1), incremental_state=state)
    ref, _ = d(torch.cat([tokens[order], nxt], 1))
    assert torch.allclose(out[:, -1], ref[:, -1], atol=1e-5)


def stream(offset, commit=True, name="valid"):
    return Stream(name, offset, commit)


def test_state_is_carried_within_a_stream():
    d = decoder().eval()
    tokens = torch.randint(4, 50, (2, 12))
    full, _ = d(tokens, stream=stream(0))
    a, _ = d(tokens[:, :5], stream=stream(0))
    b, _ = d(tokens[:, 5:], stream=stream(5))
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)
    # A rerun of the same batch (OOM retry) starts from the same state ...
    assert torch.equal(d(tokens[:, 5:], stream=stream(5))[0], b)
    # ... and a dummy batch (commit=False) leaves the stream where it was.
    d(tokens[:, :5], stream=stream(0, commit=False))
    assert torch.equal(d(tokens[:, 5:], stream=stream(5))[0], b)
    # Offset 0 restarts from zeros; evaluation without a stream always does.
    assert torch.equal(d(tokens[:, :5], stream=stream(0))[0], a)
    assert torch.equal(d(tokens[:, :5])[0], a)


def test_training_state_is_separate_from_validation_and_reset_on_new_batch_size():
    d = decoder(dropout=0, hidden_dropout=0, input_dropout=0, embed_dropout=0, weight_drop=0)
    tokens = torch.randint(4, 50, (2, 12))
    d.train()
    fresh, _ = d(tokens[:, :6])
    carried, _ = d(tokens[:, 6:])
    d.reset_state()
    assert torch.equal(d(tokens[:, :6])[0], fresh)
    d.eval()
    d(tokens[:, :6], stream=stream(0))  # a validation in between
    d.train()
    assert torch.allclose(d(tokens[:, 6:])[0], carried, atol=1e-6)
    other = torch.randint(4, 50, (3, 6))
    d.reset_state()
    first, _ = d(other)  # from zeros
    d(tokens[:, :6])
    assert torch.equal(d(other)[0], first)  # a new batch size starts from zeros, unreset
    d(other)
    d.reset_state("train")
    assert torch.equal(d(other)[0], first)


def test_extra_output_holds_the_last_layer_before_and_after_dropout():
    d = decoder(dropout=0.5).train()
    _, extra = d(torch.randint(4, 50, (2, 9)))
    raw, dropped = extra["raw_out"], extra["dropped_out"]
    assert raw.shape == dropped.shape == (2, 9, 8)
    zero = dropped == 0
    assert zero.any()
    assert torch.allclose(dropped[~zero], raw[~zero] * 2)
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # locked over time


def test_the_tied_softmax_trains_the_embedding():
    """A backward pass through the softmax alone: for logits = h E^T + b and an upstream
    gradient G (dL/dlogits), the embedding E receives dL/dE = G^T h, the bias G summed."""
    d = decoder()
    embed = d.body.embed_tokens.weight
    h = torch.randn(2, 5, 8)
    logits = d.output_layer(h)
    upstream = torch.randn_like(logits)
    logits.backward(upstream)
    g, x = upstream.reshape(-1, 50), h.reshape(-1, 8)
    assert embed.grad is not None
    assert torch.allclose(embed.grad, g.t() @ x, atol=1e-5)
    assert torch.allclose(d.softmax.bias.grad, g.sum(0), atol=1e-5)
