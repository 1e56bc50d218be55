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
    if training and p > 0:
        # One draw per vocabulary row, broadcast over the embedding dimension.
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(tokens, weight, embed.padding_idx)
