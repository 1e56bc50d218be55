"""Non-monotonically triggered averaged SGD (NT-ASGD), Merity et al. 2017, section 3.

SGD with weight decay until a validation loss is worse than the best of all
validations older than the last `nonmono` ones; from the next update on, the
optimizer keeps the average of the iterates (averaged SGD, Polyak & Juditsky
1992) while training goes on with the raw weights. Validation and the
checkpoints written after it see the average.

The averaging is the reference's torch.optim.ASGD(t0=0, lambd=0): after the k-th
averaged step the average is p_k for k <= 2 and the mean of p_2..p_k after, and
each step uses the learning rate that the previous step was given.

How it meets fairseq under any task: fairseq tells an optimizer nothing of its
validations, and its own tasks (translation, language_modeling) have no hook that
could. So the package's models carry two torch hooks (`follow_validation`, called
when they are built), the least intrusive mechanism that reaches every task:
- a forward pre-hook: a forward in eval mode (validation, and any generation
  fairseq runs inside it) puts the average into the weights, a forward in
  training mode puts the raw weights back;
- a state_dict pre-hook: a checkpoint holds the average as the model, and the
  raw weights in the optimizer state, so fairseq-eval-lm, fairseq-generate and
  the hub use the average while training resumes on the raw weights.
The loss that the trigger reads is fairseq's own: the "loss" meter of the first
validation subset's aggregator (fairseq.logging.metrics), the value fairseq
logs, taken when that validation is over (at the checkpoint or the next update).
"""
import logging
import weakref
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
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
    disable_validation: bool = II("dataset.disable_validation")


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
            # One foreach kernel per operation over all parameters, not one per tensor:
            # the same arithmetic as p -= lr * (grad + wd * p), ax += mu * (p - ax).
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = torch._foreach_add([p.grad for p in params], params,
                                       alpha=group["weight_decay"])
            torch._foreach_add_(params, grads, alpha=-lr)
            if info["averaging"]:
                axs = [self.state[p].setdefault("ax", torch.zeros_like(p)) for p in params]
                mu = 1 / max(1, k - 1)
                if mu == 1:
                    torch._foreach_copy_(axs, params)
                else:
                    diffs = torch._foreach_sub(params, axs)
                    torch._foreach_mul_(diffs, mu)
                    torch._foreach_add_(axs, diffs)
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
        if cfg.disable_validation:
            fail("--optimizer nt_asgd switches on validation results: drop --disable-validation")
        self._optimizer = NTASGD(params, cfg.lr[0], cfg.weight_decay, cfg.asgd_from_start)
        self.model = None  # the model whose hooks report to this optimizer
        self.valid_meters = None  # the first subset of a validation not yet read
        global _training
        _training = weakref.ref(self)

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
        if self.model is None:
            fail("--optimizer nt_asgd follows validation through the model: use a model of "
                 "fairseq_awd (--arch awd_lstm, awd_lstm_wt2, awd_lstm_translation)")
        if getattr(self, "found_inf", None) is not None and self.found_inf.item() > 0:
            return  # AMP overflow: GradScaler lowers the scale, the step is skipped
        if scale != 1.0:
            self.multiply_grads(1.0 / scale)
        self._optimizer.step()

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's clip (same norm, same 1e-6, same clamp), with the per-tensor norms
        in one foreach kernel: without apex fairseq's own runs a norm, a copy and a
        warning per tensor, every update.

        The norm comes back on the host. fairseq's trainer waits for it right after
        this call anyway (`torch.isfinite(grad_norm)`, for its NaN check); a host
        value spares the GPU the small operations it then runs on it: the second
        isfinite and wait, the gnorm and clip meters (about 20 launches per update)."""
        params = [p for p in self.params if p.grad is not None]
        if not params or any(hasattr(p, "expert") for p in params):
            return super().clip_grad_norm(max_norm, aggregate_norm_fn)
        total = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        if aggregate_norm_fn is not None:
            total = aggregate_norm_fn(total)
        if max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
        return total.cpu()

    def get_lr(self):
        return 0.0 if self.info["finished"] else super().get_lr()

    def validated(self, loss: float):
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
            logger.info(f"NT-ASGD finetune: validation stopped improving (loss {loss:.4f}): "
                        "done (lr 0)")
        else:
            info["averaging"] = True
            logger.info(f"NT-ASGD: switching to averaged SGD from the next update "
                        f"(validation loss {loss:.4f})")

    def read_validation(self):
        """Feed the trigger the loss of the validation that has ended, once."""
        meters, self.valid_meters = self.valid_meters, None
        if meters is not None:
            if "loss" not in meters:
                fail("--optimizer nt_asgd reads the validation 'loss' that the criterion "
                     "logs, and this criterion logs none")
            self.validated(float(meters["loss"].avg))

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


_training: Optional["weakref.ref[FairseqNTASGD]"] = None  # this process's, if any


def follow_validation(model):
    """Let NT-ASGD see this model's validations and checkpoints (see the top)."""
    model.register_forward_pre_hook(_before_forward)
    model.register_state_dict_pre_hook(_before_state_dict)
    return model


def _optimizer_of(model) -> Optional[FairseqNTASGD]:
    opt = _training() if _training is not None else None
    if opt is not None and opt.model is None and model.training:
        opt.model = weakref.ref(model)  # the first model to train is the trainer's
    if opt is None or opt.model is None or opt.model() is not model:
        return None
    return opt


def _before_forward(model, args):
    opt = _optimizer_of(model)
    if opt is None:
        return
    if model.training:
        opt.read_validation()
        opt.swap_out_average(model.parameters())
    else:
        if opt.valid_meters is None:
            opt.valid_meters = validation_meters()
        opt.swap_in_average(model.parameters())


def _before_state_dict(model, prefix, keep_vars):
    opt = _optimizer_of(model)
    if opt is not None:
        opt.read_validation()  # so that the checkpoint holds the switch
        opt.swap_in_average(model.parameters())


def validation_meters():
    """The meters of the validation subset that fairseq is running now, or None:
    fairseq runs each subset under a new root aggregator, its valid_step under the
    aggregator named "valid"."""
    valid = metrics.get_meters("valid")
    active = metrics.get_active_aggregators()
    if valid is None or not any(agg is valid for agg in active):
        return None
    return next((agg for agg in active if agg is not valid), None)
