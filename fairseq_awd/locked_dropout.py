"""Locked (variational) dropout, Merity et al. 2017, section 4.2.

One Bernoulli mask per sequence and feature, reused at every time step, so a
unit that is dropped stays dropped for the whole forward pass (Gal & Ghahramani
2016). Standard dropout would sample a fresh mask per time step.
"""
from typing import Optional

import torch
from torch import nn


class LockedDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def mask(self, like: torch.Tensor) -> Optional[torch.Tensor]:
        """One mask (batch, features) for sequences whose steps look like `like`
        (..., batch, features); None when off. A decoder that steps token by token
        draws it once and multiplies each step by it."""
        if not self.training or self.p == 0:
            return None
        # rescaled on the small mask, as the reference does: one pass over x, and the
        # backward is one multiply
        return like.new_empty(like.shape[-2:]).bernoulli_(1 - self.p) / (1 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (time, batch, features); the mask is shared along time."""
        mask = self.mask(x)
        return x if mask is None else mask * x

    def extra_repr(self) -> str:
        return f"p={self.p}"
