"""The split softmax for large vocabularies: the reference implementation's
splitcross.py, the tied adaptive softmax of its WikiText-103 and One Billion Word
models (Merity, Keskar & Socher 2018, "An Analysis of Neural Language Modeling at
Multiple Scales"; Grave et al. 2017's adaptive softmax, with tied weights).

The words are cut at increasing cutoffs into a head (the most frequent: fairseq's
dictionaries are sorted by frequency) and tails. The head's softmax runs over its
own words plus one "tombstone" entry per tail; each tail's over its own words:

    log p(w) = log p_head(w)                                 w in the head
    log p(w) = log p_head(tombstone of w's tail) + log p_tail(w)   otherwise

Every word keeps its softmax row (the tied embedding's, or an untied matrix's) and
bias; the tombstones have their own (zeros at the start, as the reference's).
Training computes a tail's softmax only at the positions whose target lies in it;
evaluation gets the whole distribution, which sums to 1.

Not ported: the reference's split_on_targets adds boolean masks to count a target's
tail, a logical OR since torch 1.2, so with two or more tails every tail word lands
in the first tail and the forward fails on an index; here a word's tail is found by
bucketize on the cutoffs.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .errors import fail
from .tied_softmax import TiedSoftmax

FLAG = "--softmax-cutoffs"


def auto_cutoffs(vocab_size: int) -> List[int]:
    """The reference main.py's choice: the full softmax up to 75,000 words."""
    if vocab_size > 500_000:  # One Billion Word
        return [4200, 35000, 180000]
    if vocab_size > 75_000:  # WikiText-103
        return [2800, 20000, 76000]
    return []


def parse_cutoffs(spec: str, vocab_size: int) -> List[int]:
    """`auto`, `none` or increasing word indices below the vocabulary size."""
    if spec == "auto":
        return [c for c in auto_cutoffs(vocab_size) if c < vocab_size]
    if spec == "none":
        return []
    try:
        cutoffs = [int(c) for c in spec.split(",")]
    except ValueError:
        fail(f"{FLAG} takes auto, none or increasing word indices like 2800,20000; got "
             f"'{spec}'")
    if any(b <= a for a, b in zip([0] + cutoffs, cutoffs)):
        fail(f"{FLAG} {spec}: the cutoffs must be positive and increasing")
    if cutoffs[-1] >= vocab_size:
        fail(f"{FLAG} {spec}: {cutoffs[-1]} is beyond the vocabulary ({vocab_size:,} words "
             "with fairseq's specials): lower it, or drop it")
    return cutoffs


class SplitSoftmax(TiedSoftmax):
    def __init__(self, vocab_size: int, dim: int, cutoffs: List[int], tied: bool = True):
        super().__init__(vocab_size, dim, tied)
        self.bounds = [*cutoffs, vocab_size]  # tail k (from 1): words [bounds[k-1], bounds[k])
        self.sizes = [b - a for a, b in zip([0, *cutoffs], self.bounds)]
        self.register_buffer("cutoffs", torch.tensor(cutoffs, dtype=torch.long),
                             persistent=False)
        self.tail_vectors = nn.Parameter(torch.zeros(len(cutoffs), dim))
        self.tail_bias = nn.Parameter(torch.zeros(len(cutoffs)))

    def pieces(self, embedding_weight):
        """The head's and each tail's rows of the softmax weights and biases, from one
        split: its backward builds one gradient for the whole matrix, where a slice
        per piece would build one each (a vocabulary x dim tensor apiece)."""
        return (self.softmax_weight(embedding_weight).split(self.sizes),
                self.bias.split(self.sizes))

    def head_log_probs(self, features, weight, bias):
        """(N, head words + tails): the head's words, then each tail's tombstone."""
        logits = F.linear(features, torch.cat([weight, self.tail_vectors]),
                          torch.cat([bias, self.tail_bias]))
        return F.log_softmax(logits.float(), dim=-1)

    @staticmethod
    def tail_log_probs(features, weight, bias):
        return F.log_softmax(F.linear(features, weight, bias).float(), dim=-1)

    def forward(self, features: torch.Tensor, embedding_weight: torch.Tensor):
        """The features themselves: training scores them with `nll`, which builds
        no logits beyond each target's own tail (as fairseq's adaptive-softmax
        decoders return their features)."""
        return features

    def log_probs(self, features: torch.Tensor, embedding_weight: torch.Tensor):
        """The whole distribution, (..., vocab), in fp32."""
        weights, biases = self.pieces(embedding_weight)
        head = self.head_log_probs(features, weights[0], biases[0])
        n = self.bounds[0]
        parts = [head[..., :n]]
        for k in range(1, len(self.bounds)):
            parts.append(head[..., n + k - 1 : n + k]
                         + self.tail_log_probs(features, weights[k], biases[k]))
        return torch.cat(parts, -1)

    def nll(self, features, target, embedding_weight, ignore_index: int = -100):
        lprobs = self.target_log_probs(features, target, embedding_weight)
        return -lprobs.masked_fill(target.eq(ignore_index), 0).sum()

    def target_log_probs(self, features: torch.Tensor, target: torch.Tensor,
                         embedding_weight: torch.Tensor):
        """log p(target) at each position, (...,), in fp32: each tail's softmax only
        at the positions whose target lies in it."""
        weights, biases = self.pieces(embedding_weight)
        shape = features.shape[:-1]
        flat, target = features.reshape(-1, features.size(-1)), target.reshape(-1)
        tail = torch.bucketize(target, self.cutoffs, right=True)  # 0: the head
        head = self.head_log_probs(flat, weights[0], biases[0])
        n = self.bounds[0]
        # a head word's own entry; a tail word's tombstone
        out = head.gather(1, torch.where(tail == 0, target, n + tail - 1)[:, None]).squeeze(1)
        for k in range(1, len(self.bounds)):
            rows = (tail == k).nonzero().squeeze(1)
            in_tail = (target[rows] - self.bounds[k - 1])[:, None]
            lprobs = self.tail_log_probs(flat[rows], weights[k], biases[k])
            out = out.index_add(0, rows, lprobs.gather(1, in_tail).squeeze(1))
        return out.view(shape)
