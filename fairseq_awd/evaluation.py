"""fairseq-eval-lm's extras on a trained language model: the neural cache pointer
(cache_pointer.py, Merity et al. 2017, section 5) and dynamic evaluation
(dynamic_eval.py), each configured once, when the variable_bptt_lm task builds the
model for eval-lm.

`EvalLM` holds the language model and is what eval-lm runs: it scores each window
of the test stream with the model's plain forward, then mixes in the cache or takes
dynamic evaluation's step on the window it has just scored. The model knows
nothing of either, and nothing here calls back into the task: the training windows
for dynamic evaluation's gradient statistics are handed over at set-up.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
from fairseq.models import BaseFairseqModel

from .cache_pointer import CachePointer
from .dynamic_eval import Batch, DynamicEval
from .errors import fail
from .stream import Stream


@dataclass(frozen=True)
class CacheSettings:
    window: int
    theta: float
    lam: float


@dataclass(frozen=True)
class DynamicEvalSettings:
    lr: float
    lam: float
    epsilon: float
    stats: Sequence[Batch]  # training windows (source, target) on the host, in order
    old_hyperparameters: bool = False


class EvalLM(BaseFairseqModel):
    """A language model whose forward takes stream= (carries_streams), scored with
    at most one extra: the cache or dynamic evaluation (the task refuses both)."""

    def __init__(self, model: BaseFairseqModel, cache: Optional[CacheSettings] = None,
                 dynamic: Optional[DynamicEvalSettings] = None):
        super().__init__()
        self.model = model
        self.cache, self.dynamic = cache, dynamic
        self.caches: Dict[str, CachePointer] = {}
        self.dynamic_eval: Optional[DynamicEval] = None

    def forward(self, src_tokens, stream: Optional[Stream] = None, target=None, **unused):
        """One eval window; `target` (dynamic evaluation's loss) comes with the batch."""
        if stream is None:
            fail("the cache pointer and dynamic evaluation score one token stream: use them "
                 "with fairseq-eval-lm --task variable_bptt_lm")
        if self.dynamic:
            return self.score_then_step(src_tokens, stream, target)
        # the cache's words live on the host: copied before the forward is queued, the
        # copy waits for nothing but the batch's own upload
        host_tokens = src_tokens[0].cpu() if self.cache else None
        net_output = self.model(src_tokens, stream=stream)
        if self.cache:
            if stream.offset == 0 or stream.name not in self.caches:
                self.caches[stream.name] = CachePointer(self.cache.window, self.cache.theta,
                                                        self.cache.lam)
            lprobs = self.model.get_normalized_probs(net_output, log_probs=True)[0]
            net_output[1]["cache_log_probs"] = self.caches[stream.name].log_probs(
                lprobs, net_output[1]["raw_out"][0], host_tokens)[None]
        return net_output

    def score_then_step(self, tokens, stream: Stream, target):
        """The window's outputs with the weights as they are, then one step on its
        loss; at the stream's start, the gradient statistics over the training
        windows (the model in eval mode, carrying their rows' state)."""
        with torch.enable_grad():
            if stream.offset == 0:
                settings = self.dynamic
                self.dynamic_eval = DynamicEval(self.model, settings.lr, settings.lam,
                                                settings.epsilon, settings.old_hyperparameters)
                self.dynamic_eval.gradient_statistics(self.stats_loss, self.stats_windows(
                    tokens.device))
            scores, extra = self.model(tokens, stream=stream)
            self.dynamic_eval.step(self.mean_nll((scores, extra), target))
        return scores.detach(), {k: v.detach() if torch.is_tensor(v) else v
                                 for k, v in extra.items()}

    def stats_windows(self, device):
        offset = 0
        for source, target in self.dynamic.stats:
            yield Stream("dynamic-eval-stats", offset), source.to(device), target.to(device)
            offset += source.size(1)

    def stats_loss(self, stream: Stream, source, target):
        return self.mean_nll(self.model(source, stream=stream), target)

    def mean_nll(self, net_output, target):
        return self.model.decoder.nll(net_output, target) / target.numel()

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        mixed = net_output[1].get("cache_log_probs")
        if mixed is None:
            return self.model.get_normalized_probs(net_output, log_probs, sample)
        return mixed if log_probs else mixed.exp()

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        return self.model.load_state_dict(state_dict, strict, model_cfg, args)

    def max_positions(self):
        return self.model.max_positions()
