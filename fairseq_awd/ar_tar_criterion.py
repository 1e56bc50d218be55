"""Cross-entropy with activation regularization (AR) and temporal activation
regularization (TAR), Merity et al. 2017, section 4.6.

    loss = CE + alpha * mean(dropped_h ** 2) + beta * mean((h_t - h_{t-1}) ** 2)

over the last LSTM layer's output: AR on it after its dropout, TAR on it before,
pad positions left out of both. In the translation model, whose softmax reads the
attention output, AR acts on that output after its dropout and TAR on the decoder's
top LSTM layer (the decoder returns them as 'dropped_out' and 'raw_out'). The
reference adds both means to the per-token mean cross-entropy; fairseq sums the
loss and divides by sample_size (tokens), so each mean is multiplied by the token
count here. The logged `loss`/`ppl` are the cross-entropy alone; with
--label-smoothing, `loss` is fairseq's label-smoothed loss and `nll_loss`, from
which `ppl` comes, the plain one.
"""
import math
from dataclasses import dataclass, field

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass

from .errors import fail


@dataclass
class ARTARConfig(FairseqDataclass):
    ar_alpha: float = field(
        default=2.0, metadata={"help": "activation regularization weight (paper: alpha)"})
    tar_beta: float = field(
        default=1.0, metadata={"help": "temporal activation regularization weight "
                                       "(paper: beta)"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon of fairseq's label-smoothed cross-entropy "
                                       "(0: plain cross-entropy)"})


def ar_tar(raw, dropped, mask=None):
    """Mean squares over (batch, time, features) outputs, pad positions (mask False)
    left out. Without a mask (no padding: the language model's batches) plain means,
    the reference's formula: the same values and gradients bit for bit on a CPU, in a
    third of the kernels."""
    if mask is None:
        ar = dropped.float().pow(2).mean()
        if raw.size(1) < 2:  # an evaluation's last window may be one token: no pairs
            return ar, ar.new_zeros(())
        return ar, (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    mask = mask.unsqueeze(-1).float()  # fp32: in bf16 a count like 1401 would round
    ar = (dropped.float().pow(2) * mask).sum() / (mask.sum() * raw.size(-1))
    pairs = mask[:, 1:] * mask[:, :-1]
    diff = (raw[:, 1:] - raw[:, :-1]).float().pow(2) * pairs
    tar = diff.sum() / (pairs.sum() * raw.size(-1)).clamp(min=1)
    return ar, tar


@register_criterion("ar_tar_cross_entropy", dataclass=ARTARConfig)
class ARTARCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task, ar_alpha, tar_beta, label_smoothing=0.0):
        super().__init__(task)
        if not 0 <= label_smoothing < 1:
            fail(f"--label-smoothing must be in [0, 1), got {label_smoothing}")
        self.ar_alpha = ar_alpha
        self.tar_beta = tar_beta
        self.eps = label_smoothing

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        extra = net_output[1] if len(net_output) > 1 else None
        if (not isinstance(extra, dict) or "raw_out" not in extra or "dropped_out" not in extra
                or not hasattr(model.decoder, "nll")):
            fail(
                "--criterion ar_tar_cross_entropy needs a model whose decoder "
                "returns 'raw_out' and 'dropped_out' (the last LSTM layer's output before "
                "dropout, and what the softmax reads after it) and scores targets with "
                "nll(), as --arch awd_lstm and awd_lstm_translation do; use --criterion "
                "cross_entropy (or label_smoothed_cross_entropy) otherwise")
        target = model.get_targets(sample, net_output)
        if self.eps > 0:  # the smoothing term needs every word's log-probability
            lprobs = model.get_normalized_probs(net_output, log_probs=True)
            loss, nll = label_smoothed_nll_loss(lprobs.reshape(-1, lprobs.size(-1)),
                                                target.reshape(-1), self.eps, self.padding_idx)
        else:  # a split softmax scores each target in its own tail only
            loss = nll = model.decoder.nll(net_output, target, self.padding_idx)
        ntokens = sample["ntokens"]
        # fairseq's ntokens counts the real target tokens: all of them means no padding
        padded = not isinstance(ntokens, int) or ntokens != target.numel()
        ar, tar = ar_tar(extra["raw_out"], extra["dropped_out"],
                         target.ne(self.padding_idx) if padded else None)
        # one multiply each: the weight times the count is a number on the host
        ar, tar = ar * (self.ar_alpha * ntokens), tar * (self.tar_beta * ntokens)
        logging_output = {
            "loss": loss.data,
            "ar": ar.data,
            "tar": tar.data,
            "ntokens": ntokens,
            "nsentences": sample["target"].size(0),
            "sample_size": ntokens,
        }
        if self.eps > 0:
            logging_output["nll_loss"] = nll.data
        return loss + ar + tar, ntokens, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        keys = ["loss", "ar", "tar"]
        if any("nll_loss" in log for log in logging_outputs):
            keys.append("nll_loss")
        total = host_sums(logging_outputs, keys)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        metrics.log_scalar("loss", total["loss"] / sample_size / math.log(2), sample_size,
                           round=3)
        metrics.log_scalar("ar", total["ar"] / sample_size, sample_size, round=4)
        metrics.log_scalar("tar", total["tar"] / sample_size, sample_size, round=4)
        ppl_of = "loss"
        if "nll_loss" in total:
            ppl_of = "nll_loss"
            metrics.log_scalar("nll_loss", total["nll_loss"] / sample_size / math.log(2),
                               sample_size, round=3)
        # fairseq's helper: inf, not an OverflowError, once a diverging loss passes 1024 bits
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters[ppl_of].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def host_sums(logging_outputs, keys):
    """Each key summed over the logging outputs, as floats, in one copy from the device.
    Left as GPU tensors, each meter of fairseq's (three aggregators per key) runs its
    sums as small kernels and waits for the GPU to round its value, every update; the
    one copy waits where fairseq's rounding of the loss would have waited anyway."""
    sums = {}
    for k in keys:
        per_output = [log.get(k, 0) for log in logging_outputs]
        sums[k] = sum(per_output[1:], per_output[0])  # from 0: one kernel more per key
    tensors = [k for k in keys if torch.is_tensor(sums[k])]
    if tensors:
        values = torch.stack([sums[k].reshape(()) for k in tensors]).tolist()
        sums.update(zip(tensors, values))
    return {k: float(v) for k, v in sums.items()}
