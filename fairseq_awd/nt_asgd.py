"""Non-monotonically triggered averaged SGD (NT-ASGD), Merity et al. 2017, section 3.

SGD with weight decay until a validation loss is worse than the best of all
validations older than the last `nonmono` ones; from the next update on, the
optimizer keeps the average of the iterates (averaged SGD, Polyak & Juditsky
1992) while training goes on with the raw weights. Validation and the
checkpoints written after it see the average.

The averaging is the reference's torch.optim.ASGD(t0=0, lambd=0): after the k-th
averaged step the average is p_k for k <= 2 and the mean of p_2..p_k after, and
each step uses the learning rate that the previous step was given.

The optimizer learns of validations through a task (variable_bptt_lm) that calls
`validated`, `swap_in_average` and `swap_out_average` from fairseq's hooks.
"""
import logging
from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II

from .errors import fail

logger = logging.getLogger(__name__)


@dataclass
class NTASGDConfig(FairseqDataclass):
    lr: List[float] = II("optimization.lr")
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (paper: 1.2e-6)"})
    nonmono: int = field(
        default=5, metadata={"help": "switch to averaging when validation is worse than the "
                                     "best of all but the last nonmono validations"})
    asgd_from_start: bool = field(
        default=False, metadata={"help": "average from the first update and stop (lr 0) by "
                                         "the same rule: the reference's finetune stage"})


class NTASGD(torch.optim.Optimizer):
    """The update rule. Switch state lives in param_groups[0], so checkpoints keep it."""

    def __init__(self, params, lr, weight_decay, averaging):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.param_groups[0].update(
            averaging=averaging, finished=False, asgd_steps=0, eta=None, val_losses=[])

    @torch.no_grad()
    def step(self, closure=None):
        info = self.param_groups[0]
        if info["finished"]:
            return
        if info["averaging"]:
            info["asgd_steps"] += 1
        k = info["asgd_steps"]
        for group in self.param_groups:
            lr = group["lr"]
            if info["averaging"]:  # torch's ASGD steps with the previous step's lr
                lr = group["lr"] if info["eta"] is None else info["eta"]
            # fairseq hands this optimizer fp32 tensors in every precision mode (the
            # FP16 wrapper's master copies, AMP's fp32 model), so the average is fp32.
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(p.grad.add(p, alpha=group["weight_decay"]), alpha=-lr)
                if info["averaging"]:
                    ax = self.state[p].setdefault("ax", torch.zeros_like(p))
                    mu = 1 / max(1, k - 1)
                    if mu == 1:
                        ax.copy_(p)
                    else:
                        ax.add_(p.sub(ax).mul_(mu))
        if info["averaging"]:
            info["eta"] = self.param_groups[0]["lr"]


@register_optimizer("nt_asgd", dataclass=NTASGDConfig)
class FairseqNTASGD(FairseqOptimizer):
    # fairseq's AMP wrapper unscales the gradients in clip_grad_norm through the
    # torch optimizer; without this flag GradScaler.step would unscale them again.
    _step_supports_amp_scaling = True

    def __init__(self, cfg: NTASGDConfig, params):
        super().__init__(cfg)
        if cfg.nonmono < 0:
            fail(f"--nonmono must be >= 0, got {cfg.nonmono}")
        self._optimizer = NTASGD(params, cfg.lr[0], cfg.weight_decay, cfg.asgd_from_start)
        self.attached = False  # set by a task that reports validations

    @property
    def optimizer_config(self):
        return {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}

    @property
    def supports_flat_params(self):
        return True

    @property
    def info(self):
        return self._optimizer.param_groups[0]

    def step(self, closure=None, scale=1.0, groups=None):
        if not self.attached:
            fail(
                "--optimizer nt_asgd needs the validation results: train with "
                "--task variable_bptt_lm, without --disable-validation")
        if getattr(self, "found_inf", None) is not None and self.found_inf.item() > 0:
            return  # AMP overflow: GradScaler lowers the scale, the step is skipped
        if scale != 1.0:
            self.multiply_grads(1.0 / scale)
        self._optimizer.step()

    def get_lr(self):
        return 0.0 if self.info["finished"] else super().get_lr()

    def validated(self, loss: float, epoch: int, num_updates: int):
        """NT-ASGD's trigger, after each validation (the first valid subset's loss)."""
        info, n = self.info, self.cfg.nonmono
        history = info["val_losses"]
        # history[:-n] as the reference, but n = 0 means all earlier validations.
        worse = len(history) > n and loss > min(history[: len(history) - n])
        if info["averaging"] and not self.cfg.asgd_from_start:
            return  # after the switch the reference keeps no history
        if not worse:
            history.append(loss)
        elif info["averaging"]:
            info["finished"] = True
            logger.info(f"NT-ASGD finetune: validation stopped improving at epoch {epoch}, "
                        f"update {num_updates}: done (lr 0)")
        else:
            info["averaging"] = True
            logger.info(f"NT-ASGD: switching to averaged SGD at epoch {epoch}, "
                        f"update {num_updates} (validation loss {loss:.4f})")

    def _params(self):
        return [p for g in self._optimizer.param_groups for p in g["params"]]

    @property
    def swapped(self):
        return any("raw" in self._optimizer.state[p] for p in self._params())

    def swap_in_average(self, model_params):
        """Put the average into the weights the model runs with, keeping the raw ones."""
        if self.swapped or not any("ax" in self._optimizer.state[p] for p in self._params()):
            return
        for p in self._params():
            state = self._optimizer.state[p]
            if "ax" in state:  # a parameter that never had a gradient has no average
                state["raw"] = p.detach().clone()
                p.data.copy_(state["ax"])
        copy_into(model_params, self._params())

    def swap_out_average(self, model_params):
        if not self.swapped:
            return
        for p in self._params():
            state = self._optimizer.state[p]
            if "raw" in state:
                p.data.copy_(state.pop("raw"))
        copy_into(model_params, self._params())


def copy_into(model_params, opt_params):
    """Give the model the optimizer's weights when these are fp32 copies of its own
    (fairseq's FP16Optimizer: one flat tensor or one per parameter, in order)."""
    model_params = list(model_params)
    if opt_params[0] is model_params[0]:
        return
    flat = torch.cat([p.data.reshape(-1) for p in opt_params])
    offset = 0
    for p in model_params:
        p.data.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def find_nt_asgd(optimizer):
    """Our optimizer inside fairseq's AMP/FP16 wrappers, or None."""
    while optimizer is not None and not isinstance(optimizer, FairseqNTASGD):
        optimizer = getattr(optimizer, "fp32_optimizer", None) or getattr(
            optimizer, "wrapped_optimizer", None)
    return optimizer
