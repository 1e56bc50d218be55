import math

import pytest
import torch
from fairseq.logging import metrics
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion, ar_tar
from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMModel, AWDLSTMDecoder

from conftest import small_dictionary


def test_ar_tar_by_hand():
    raw = torch.tensor([[[1.0], [3.0], [6.0]]])
    dropped = torch.tensor([[[2.0], [0.0], [4.0]]])
    ar, tar = ar_tar(raw, dropped, torch.tensor([[True, True, True]]))
    assert ar.item() == pytest.approx((4 + 0 + 16) / 3)
    assert tar.item() == pytest.approx(((3 - 1) ** 2 + (6 - 3) ** 2) / 2)
    ar, tar = ar_tar(raw, dropped, torch.tensor([[True, True, False]]))  # last is pad
    assert (ar.item(), tar.item()) == pytest.approx((4 / 2, 4 / 1))


@pytest.mark.parametrize("mask", [None, torch.tensor([[True], [True]])])
def test_a_one_token_window_has_tar_zero_not_nan(mask):
    """An evaluation's last window can be one token long (validation logged 'tar nan')."""
    raw = torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]])  # 2 rows, 1 time step, 2 features
    ar, tar = ar_tar(raw, raw, mask)
    assert (ar.item(), tar.item()) == (14 / 4, 0.0)


def test_ar_tar_counts_in_fp32_for_half_precision_models():
    raw = torch.ones(1, 1401, 3, dtype=torch.bfloat16)  # bf16 cannot hold 1401 * 3
    ar, tar = ar_tar(raw, raw * 2, torch.ones(1, 1401, dtype=torch.bool))
    assert (ar.item(), tar.item()) == (4.0, 0.0)


def test_ar_tar_without_padding_is_the_masked_form_bit_for_bit_in_fewer_kernels():
    torch.manual_seed(0)
    raw, dropped = (torch.randn(20, 70, 40, requires_grad=True) for _ in range(2))
    outs, ops = [], []
    for mask in (None, torch.ones(20, 70, dtype=torch.bool)):
        with torch.profiler.profile() as prof:
            outs.append(ar_tar(raw, dropped, mask))
        ops.append([e.name for e in prof.events() if e.cpu_parent is None])
    assert all(torch.equal(a, b) for a, b in zip(*outs))
    grads = [torch.autograd.grad(sum(out), [raw, dropped]) for out in outs]
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert 2 * len(ops[0]) < len(ops[1]), ops


def task_and_model():
    d = small_dictionary()
    task = LanguageModelingTask(LanguageModelingConfig(), d, d)
    cfg = AWDLSTMConfig(decoder_embed_dim=8, decoder_hidden_size=12)
    return task, AWDLSTMModel(AWDLSTMDecoder(cfg, d))


def test_loss_is_cross_entropy_plus_per_token_ar_tar():
    task, model = task_and_model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0, label_smoothing=0.0)
    tokens = torch.randint(4, 50, (3, 10))
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens.roll(-1, 1), "ntokens": 30}
    model.train()
    torch.manual_seed(5)
    loss, sample_size, log = crit(model, sample)
    model.reset_state()
    torch.manual_seed(5)
    logits, extra = model(tokens)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), sample["target"].reshape(-1))
    raw, dropped = extra["raw_out"], extra["dropped_out"]
    ar = 2 * dropped.pow(2).mean()
    tar = 1 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    assert sample_size == 30
    # fairseq divides by sample_size: the reference's mean loss comes out.
    assert (loss / sample_size).item() == pytest.approx((ce + ar + tar).item(), rel=1e-5)
    assert (log["loss"] / 30).item() == pytest.approx(ce.item(), rel=1e-5)
    assert (log["ar"] / 30).item() == pytest.approx(ar.item(), rel=1e-5)
    assert ar > 0 and tar > 0


def test_ar_and_tar_take_their_weight_and_token_count_in_one_multiply_each():
    task, model = task_and_model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0, label_smoothing=0.0)
    tokens = torch.randint(4, 50, (3, 10))
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens.roll(-1, 1), "ntokens": 30}
    model.eval()  # no dropout: the criterion's are the only multiplies
    with torch.no_grad(), torch.profiler.profile() as prof:
        crit(model, sample)
    assert [e.name for e in prof.events() if e.cpu_parent is None].count("aten::mul") == 2


def test_padded_targets_leave_pad_positions_out_of_ar_tar():
    task, model = task_and_model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=1.0, tar_beta=1.0, label_smoothing=0.0)
    tokens = torch.randint(4, 50, (2, 6))
    target = tokens.roll(-1, 1)
    target[1, 4:] = task.dictionary.pad()  # the second row ends two tokens early
    sample = {"net_input": {"src_tokens": tokens}, "target": target, "ntokens": 10}
    model.eval()
    _, _, log = crit(model, sample)
    model.reset_state()
    raw = model(tokens)[1]["raw_out"]
    kept = torch.cat([raw[0], raw[1, :4]])
    ar = kept.pow(2).mean()
    tar = torch.cat([raw[0, 1:] - raw[0, :-1], raw[1, 1:4] - raw[1, :3]]).pow(2).mean()
    assert (log["ar"] / 10).item() == pytest.approx(ar.item(), rel=1e-5)
    assert (log["tar"] / 10).item() == pytest.approx(tar.item(), rel=1e-5)


def test_criterion_on_a_model_without_extras_says_what_is_missing():
    task, _ = task_and_model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0, label_smoothing=0.0)

    class Plain(torch.nn.Module):
        def forward(self, src_tokens):
            return torch.zeros(1, 3, 50), {"attn": None}

    sample = {"net_input": {"src_tokens": torch.ones(1, 3, dtype=torch.long)},
              "target": torch.ones(1, 3, dtype=torch.long), "ntokens": 3}
    with pytest.raises(SystemExit, match="raw_out.*--arch awd_lstm"):
        crit(Plain(), sample)


def test_label_smoothing_is_fairseqs_and_logs_the_plain_nll():
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    task, model = task_and_model()
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=0.0, tar_beta=0.0, label_smoothing=0.1)
    tokens = torch.randint(4, 50, (3, 10))
    target = tokens.roll(-1, 1)
    target[0, 7:] = task.dictionary.pad()  # padded positions count in neither loss
    sample = {"net_input": {"src_tokens": tokens}, "target": target, "ntokens": 27}
    model.eval()
    loss, _, log = crit(model, sample)
    lprobs = model(tokens)[0].log_softmax(-1).reshape(-1, 50)
    smoothed, nll = label_smoothed_nll_loss(lprobs, target.reshape(-1), 0.1, task.dictionary.pad())
    plain = torch.nn.functional.nll_loss(lprobs, target.reshape(-1), reduction="sum",
                                         ignore_index=task.dictionary.pad())
    assert loss.item() == pytest.approx(smoothed.item(), rel=1e-6)
    assert log["loss"].item() == pytest.approx(smoothed.item(), rel=1e-6)
    assert log["nll_loss"].item() == pytest.approx(plain.item(), rel=1e-6)
    assert smoothed > plain  # the smoothing term is not empty


def test_bad_label_smoothing_is_one_line():
    task, _ = task_and_model()
    with pytest.raises(SystemExit, match="--label-smoothing must be in"):
        ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0, label_smoothing=1.0)


def test_metrics_are_reduced_on_the_host_from_one_copy():
    """Two batches' logging outputs: fairseq's meters get floats (no tensor arithmetic
    per meter and aggregator, no wait per meter to round), the values by hand."""
    logs = [{"loss": torch.tensor(6.0), "ar": torch.tensor(0.5), "tar": torch.tensor(0.25),
             "nll_loss": torch.tensor(4.0), "sample_size": 3},
            {"loss": torch.tensor(2.0), "ar": torch.tensor(1.5), "tar": torch.tensor(0.75),
             "nll_loss": torch.tensor(2.0), "sample_size": 5}]
    with metrics.aggregate(new_root=True) as agg:
        with torch.profiler.profile() as prof:
            ARTARCrossEntropyCriterion.reduce_metrics(logs)
        values = agg.get_smoothed_values()
        meters = [agg[k] for k in ("loss", "ar", "tar", "nll_loss")]
    assert all(type(m.sum) is float for m in meters)
    assert values["loss"] == round(8 / 8 / math.log(2), 3)
    assert values["ar"] == 0.25 and values["tar"] == 0.125
    assert values["ppl"] == round(2 ** (6 / 8 / math.log(2)), 2)  # as fairseq rounds it
    assert [e.name for e in prof.events()].count("aten::stack") == 1
    assert [e.name for e in prof.events()].count("aten::add") == 4  # one sum per key
    with metrics.aggregate(new_root=True), torch.profiler.profile() as prof:
        ARTARCrossEntropyCriterion.reduce_metrics(logs[:1])
    assert "aten::add" not in [e.name for e in prof.events()]  # one output: nothing to add


def test_a_diverging_loss_logs_an_infinite_perplexity_as_fairseqs_criterions_do():
    """A loss past 1024 bits: fairseq's get_perplexity gives inf where 2 ** loss raised
    OverflowError from the logging code; the run goes on as it would under fairseq's
    own cross_entropy (fairseq stops a run only for inf/nan gradients)."""
    logs = [{"loss": torch.tensor(1e6), "ar": torch.tensor(0.0), "tar": torch.tensor(0.0),
             "sample_size": 10}]
    with metrics.aggregate(new_root=True) as agg:
        ARTARCrossEntropyCriterion.reduce_metrics(logs)
        assert agg.get_smoothed_values()["ppl"] == float("inf")
