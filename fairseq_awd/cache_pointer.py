"""Neural cache pointer at test time (Grave et al. 2017), as the AWD-LSTM paper
reports it (Merity et al. 2017, section 5, "pointer" rows) and the reference's
pointer.py computes it:

    p(w) = (1 - lambda) p_model(w) + lambda p_cache(w)
    p_cache(w) = sum over the last `window` positions i with x_{i+1} = w of
                 softmax_i(theta * h_t . h_i)

h is the last LSTM layer's output. Position t's cache holds the positions before
it, never its own (whose next word is its target). As the reference, the cache is
used only once `window` positions are behind t (before that p = p_model), and it
is carried across the eval windows of one stream. One matrix product per eval
window over (cached + current positions), masked to each position's window,
instead of the reference's Python loop over tokens.

The words are kept on the host (the caller passes the tokens there): which words
the window holds, and where each goes, is found without waiting for the GPU, which
then only runs the window's dense work, so the host can queue the next window.
"""
import math
from typing import Optional

import torch


class CachePointer:
    def __init__(self, window: int, theta: float, lam: float):
        self.window, self.theta, self.lam = window, theta, lam
        self.keys: Optional[torch.Tensor] = None  # (n, d): outputs of the latest positions
        self.next_words: Optional[torch.Tensor] = None  # (n,): the word after each
        self.seen = 0  # positions of the stream before the current eval window
        self.last_band = (None, None)  # (its key, the mask) of the latest eval window

    def log_probs(self, lprobs: torch.Tensor, hidden: torch.Tensor,
                  tokens: torch.Tensor) -> torch.Tensor:
        """One eval window of one stream: the model's log-probabilities (T, V), the
        last layer's outputs (T, d) and the input tokens (T,), on the host; returns
        the mixed log-probabilities (T, V) and remembers the window."""
        T, device = tokens.size(0), lprobs.device
        if self.keys is not None:
            self.next_words[-1] = tokens[0]  # the previous window's last next word
            keys = torch.cat([self.keys, hidden])
            words = torch.cat([self.next_words, tokens[1:], tokens.new_zeros(1)])
        else:
            keys, words = hidden, torch.cat([tokens[1:], tokens.new_zeros(1)])
        # Positions are used once `window` positions are behind them (the reference:
        # start_idx + idx > window): a suffix of this eval window, [first, T).
        first = min(T, max(0, self.window + 1 - self.seen))
        mixed = lprobs.float()
        if first < T:
            # Key j (of the n cached and T current) lies lag = n + first + i - j
            # positions before row i (position first + i of this window): in its
            # window when 1 <= lag <= window, a band of diagonals j - i.
            n = keys.size(0) - T
            logits = self.theta * hidden[first:].float() @ keys.float().t()
            attn = logits.where(self.band(logits, n + first), float("-inf")).softmax(-1)
            # p_cache is zero but on the words in the window: there the mixture is
            # computed in full, elsewhere it is log p_model + log(1 - lambda), with no
            # exp/log over the vocabulary.
            candidates, slot = (t.to(device, non_blocking=True)
                                for t in torch.unique(words, return_inverse=True))
            p_cache = attn.new_zeros(attn.size(0), candidates.numel())
            p_cache.scatter_add_(1, slot[None, :].expand_as(attn), attn)
            model_rows = mixed[first:]
            rows = model_rows + math.log1p(-self.lam)
            rows[:, candidates] = ((1 - self.lam) * model_rows[:, candidates].exp()
                                   + self.lam * p_cache).log()
            mixed = torch.cat([mixed[:first], rows]) if first else rows
        self.keys, self.next_words = keys[-self.window:], words[-self.window:].clone()
        self.seen += T
        return mixed.type_as(lprobs)

    def band(self, logits: torch.Tensor, lag0: int) -> torch.Tensor:
        """Where 1 <= lag0 + i - j <= window for row i, key j: two diagonal cuts.
        Once the cache is full every eval window of the same length has the same
        band, so it is built once, not per window."""
        key = (logits.shape, lag0, logits.device)
        if self.last_band[0] != key:
            mask = torch.ones_like(logits, dtype=torch.bool).tril_(lag0 - 1)
            self.last_band = key, mask.triu_(lag0 - self.window)
        return self.last_band[1]
