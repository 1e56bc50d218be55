"""The Mixture of Softmaxes (Yang, Dai, Salakhutdinov & Cohen 2018, "Breaking the
Softmax Bottleneck", section 3), as the MoS reference (zihangdai/mos, model.py)
puts it on the AWD-LSTM: from the last layer's output h after its locked dropout,

    prior = softmax(W_p h)                   K experts, no bias
    latent = tanh(W_l h + b_l)               K vectors of the embedding size
    p(w) = sum_k prior_k softmax(E latent_k + b)(w)

with locked dropout on the latent (one mask per sequence and latent unit, as the
reference's lockdrop) and E the embedding (tied, as the reference ties it).

Computed in log space: log p = logsumexp_k(log prior_k + log_softmax_k). The
reference takes log(p + 1e-8), which differs from log p by log1p(1e-8 / p): under
1e-6 only where p >= 1e-2, and it floors every log-probability at about -18.42,
which the exact form does not.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .locked_dropout import LockedDropout
from .tied_softmax import SoftmaxHead


class MixtureOfSoftmaxes(SoftmaxHead):
    def __init__(self, vocab_size: int, in_dim: int, embed_dim: int, n_experts: int,
                 latent_dropout: float):
        super().__init__()
        self.n_experts, self.embed_dim = n_experts, embed_dim
        self.prior = nn.Linear(in_dim, n_experts, bias=False)
        self.latent = nn.Linear(in_dim, n_experts * embed_dim)
        self.latent_drop = LockedDropout(latent_dropout)
        self.bias = nn.Parameter(torch.zeros(vocab_size))  # the tied decoder's, as the reference

    def forward(self, h: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """h: (batch, time, in_dim) -> log-probabilities (batch, time, vocab), fp32."""
        log_prior = F.log_softmax(self.prior(h).float(), dim=-1)  # (batch, time, K)
        latent = torch.tanh(self.latent(h))
        # locked dropout reads (time, batch, features): one mask per sequence
        latent = self.latent_drop(latent.transpose(0, 1)).transpose(0, 1)
        latent = latent.reshape(*h.shape[:-1], self.n_experts, self.embed_dim)
        expert = F.log_softmax(F.linear(latent, embedding_weight, self.bias).float(), dim=-1)
        return torch.logsumexp(log_prior.unsqueeze(-1) + expert, dim=-2)

    def log_probs(self, scores: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """The forward's output is the mixture's log-probabilities already: no second
        pass over the vocabulary."""
        return scores.float()
