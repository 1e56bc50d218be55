"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence
Models"), the RMS-normalised variant with decay back to the trained weights, which
took AWD-LSTM to PTB 51.1 and WikiText-2 44.3.

The test stream is scored window by window; after a window is scored, the weights
take one step on that window's loss:

    theta <- theta + lambda * decay * (theta_0 - theta) - lr * grad / (rms + epsilon)

rms is the root mean square of each weight's gradient over training batches (the
model in eval mode, no dropout), decay = rms / mean(rms) clipped at 1 / lambda,
theta_0 the trained (for nt_asgd: averaged) weights. A window is always scored by
weights that have seen only the windows before it.

The first version of Krause et al.'s dynamiceval.py (the one the MoS reference ships)
took the root of the squares' sum and divided by the sum of the weights' mean rms,
not their mean; its hyperparameters carry over, as the current version's --oldhyper
converts them, with lambda / (number of weight tensors) and lr and epsilon /
sqrt(number of statistics batches) (`old_hyperparameters`).
"""
import math
from typing import Iterable, List, Tuple

import torch
from torch import nn

Batch = Tuple[torch.Tensor, torch.Tensor]  # (source, target), (rows, time)


class DynamicEval:
    def __init__(self, model: nn.Module, lr: float, lam: float, epsilon: float,
                 old_hyperparameters: bool = False):
        self.params: List[nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        self.lr, self.lam, self.epsilon = lr, lam, epsilon
        self.old_hyperparameters = old_hyperparameters
        self.rms = self.decay = self.start = None

    def gradient_statistics(self, loss_of, batches: Iterable[tuple]):
        """rms of each weight's gradient over `batches`, loss_of(*batch) being the
        mean cross-entropy of a batch that carries its rows' state."""
        squares, n = [torch.zeros_like(p) for p in self.params], 0
        for batch in batches:
            grads = torch.autograd.grad(loss_of(*batch), self.params, materialize_grads=True)
            torch._foreach_addcmul_(squares, grads, grads)
            n += 1
        self.rms = [s.div_(max(n, 1)).sqrt_() for s in squares]
        if self.old_hyperparameters:
            self.lam /= len(self.params)
            self.lr, self.epsilon = self.lr / math.sqrt(n), self.epsilon / math.sqrt(n)
        mean_rms = sum(r.mean() for r in self.rms) / len(self.rms)
        self.decay = [(r / mean_rms).clamp_(max=1 / self.lam) if self.lam else r * 0
                      for r in self.rms]
        self.start = [p.detach().clone() for p in self.params]
        # the step's two per-weight factors, computed once
        self.pull = [self.lam * d for d in self.decay]
        self.scale = [self.lr / (r + self.epsilon) for r in self.rms]

    @torch.no_grad()
    def step(self, loss: torch.Tensor):
        """One update on a window's mean loss, after the window was scored: a few
        kernels over all weights at once (foreach), not a Python loop per weight."""
        grads = torch.autograd.grad(loss, self.params, materialize_grads=True)
        toward_start = torch._foreach_sub(self.start, self.params)
        torch._foreach_mul_(toward_start, self.pull)
        torch._foreach_add_(self.params, toward_start)
        torch._foreach_addcmul_(self.params, grads, self.scale, value=-1)

