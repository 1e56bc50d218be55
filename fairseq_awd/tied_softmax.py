"""Weight tying, Merity et al. 2017, section 4.4 (Inan et al. 2017, Press & Wolf
2017): the softmax reuses the input embedding matrix as its weights, which
saves V x d parameters and regularizes both.

`SoftmaxHead` is what every head a BodyDecoder puts on its body offers (this
one, split_softmax.py, mixture_of_softmaxes.py): `forward` gives what the
decoder's forward returns, `log_probs` the whole distribution from that, `nll` the
targets' summed negative log-likelihood; each takes the embedding's weight at the
call.
"""
import torch
import torch.nn.functional as F
from torch import nn


class SoftmaxHead(nn.Module):
    """What a head computes from its forward's output by default: a log-softmax."""

    def log_probs(self, scores: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """(..., vocab) log-probabilities in fp32."""
        return F.log_softmax(scores.float(), dim=-1)

    def nll(self, scores, target, embedding_weight, ignore_index: int = -100):
        """The summed negative log-likelihood of the targets, positions whose target
        is `ignore_index` left out."""
        lprobs = self.log_probs(scores, embedding_weight)
        return F.nll_loss(lprobs.reshape(-1, lprobs.size(-1)), target.reshape(-1),
                          ignore_index=ignore_index, reduction="sum")


class TiedSoftmax(SoftmaxHead):
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
        return F.linear(features, self.softmax_weight(embedding_weight), self.bias)

    def softmax_weight(self, embedding_weight: torch.Tensor) -> torch.Tensor:
        return embedding_weight if self.weight is None else self.weight
