"""The LSTM state carried from one batch to the next (truncated BPTT).

The reference implementation keeps one `hidden` per loop: training carries it
across the batches of an epoch, each evaluation starts its own from zeros. Here
each stream has a name ("train", "valid", ...) and the task says at which token
offset a batch starts, so that:
- offset 0 starts from a zero state;
- a batch that is run again (OOM retry, NaN check) finds the state it started
  from, and a dummy batch (commit=False) leaves the stream untouched;
- a batch that does not continue its stream (resumed mid-epoch) starts from
  zeros with a warning, never from another batch's state.
Without offsets (a task of fairseq's own) the state simply follows on while the
batch size stays the same.
"""
import logging
from typing import Dict, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

LayerStates = List[Tuple[torch.Tensor, torch.Tensor]]
KEEP = 4  # offsets remembered per stream: the current one and a few before it


class CarriedState:
    def __init__(self):
        self.streams: Dict[str, Dict[Optional[int], LayerStates]] = {}

    def reset(self, stream: Optional[str] = None):
        if stream is None:
            self.streams.clear()
        else:
            self.streams.pop(stream, None)

    def get(self, stream: str, offset: Optional[int], bsz: int) -> Optional[LayerStates]:
        saved = self.streams.get(stream, {})
        if offset == 0 or (offset is None and not saved):
            return None
        state = saved.get(offset) if offset is not None else saved[next(reversed(saved))]
        if state is None:
            logger.warning(
                f"no carried state for stream '{stream}' at token {offset} "
                "(resumed mid-epoch, or batches out of order): starting from zeros"
            )
            return None
        if state[0][0].size(1) != bsz:
            return None  # a new batch size is a new set of rows
        return state

    def put(self, stream: str, offset: Optional[int], seq_len: int, state: LayerStates):
        saved = self.streams.setdefault(stream, {})
        end = None if offset is None else offset + seq_len
        saved.pop(end, None)
        saved[end] = [(h.detach(), c.detach()) for h, c in state]
        while len(saved) > KEEP:
            saved.pop(next(iter(saved)))
