"""Embedding dropout, Merity et al. 2017, section 4.3.

Drops whole word types: every occurrence of a dropped word in the batch gets a
zero embedding, the kept rows are rescaled by 1/(1-p) (Gal & Ghahramani 2016).
"""
import torch
import torch.nn.functional as F
from torch import nn


def embedding_dropout(
    embed: nn.Embedding, tokens: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    weight = embed.weight
    rows = F.embedding(tokens, weight, embed.padding_idx)
    if training and p > 0:
        # One draw per vocabulary row, as the reference draws it, applied to the rows
        # looked up: the reference's values, without its masked copy of the whole
        # matrix (vocabulary x dim, and another in the backward: 428 MB each at
        # WikiText-103's 267,735 words).
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        rows = rows * F.embedding(tokens, mask)
    return rows
