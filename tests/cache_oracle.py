"""The cache pointer written plainly, one position at a time: the oracle that
cache_pointer.py is tested against, and the reference pointer.py's one-hot method
(scripts/benchmark.py's baseline), itself tested against the oracle."""
import torch
import torch.nn.functional as F


def per_token_cache(probs, h, tokens, window, theta, lam):
    """The cache pointer one position at a time, written plainly: the target's
    log-probability under (1 - lam) p_model + lam p_cache, the cache (outputs h of
    the last `window` positions and the word after each) used once more than
    `window` positions are behind. probs (N, V), h (N, d), tokens (N + 1,)."""
    scores = []
    for t in range(len(tokens) - 1):
        p = probs[t]
        if t > window:
            keys, words = h[t - window : t], tokens[t - window + 1 : t + 1]
            attn = (theta * (keys @ h[t])).softmax(0)
            p = (1 - lam) * p + lam * torch.zeros_like(p).index_add_(0, words, attn)
        scores.append(p[tokens[t + 1]].log())
    return torch.stack(scores)


def one_hot_loop(probs, h, tokens, window, theta, lam, positions):
    """The reference's pointer.py method on `positions` (each past the window): the
    window's next words as one-hot rows (window, V), weighted by the attention and
    summed, one position at a time. Returns the targets' log-probabilities."""
    first = positions[0] - window
    next_words = F.one_hot(tokens[first + 1 : positions[-1] + 1], probs.size(1)).float()
    scores = []
    for t in positions:
        history = next_words[t - window - first : t - first]
        attn = (theta * (h[t - window : t] @ h[t])).softmax(0)
        p = lam * (attn[:, None] * history).sum(0) + (1 - lam) * probs[t]
        scores.append(p[tokens[t + 1]].log())
    return torch.stack(scores)
