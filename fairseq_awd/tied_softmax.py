"""Weight tying, Merity et al. 2017, section 4.4 (Inan et al. 2017, Press & Wolf
2017): the softmax reuses the input embedding matrix as its weights, which
saves V x d parameters and regularizes both.
"""
import torch
import torch.nn.functional as F
from torch import nn


class TiedSoftmax(nn.Module):
    """Logits over the vocabulary from (..., dim) features: the embedding's weights
    (passed in at each call, so the module holds no second copy) or, untied, its own."""

    def __init__(self, vocab_size: int, dim: int, tied: bool = True):
        super().__init__()
        self.weight = None
        if not tied:
            self.weight = nn.Parameter(torch.empty(vocab_size, dim))
            nn.init.uniform_(self.weight, -0.1, 0.1)  # as the reference's embedding
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, features: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        weight = embedding_weight if self.weight is None else self.weight
        return F.linear(features, weight, self.bias)
