"""What a batch of a contiguous token stream tells the model (section 4.1's
truncated BPTT): which stream it continues and where, so that the LSTM state is
carried from the batch before it (carried_state.py)."""
from dataclasses import dataclass
from typing import Optional

TRAIN_STREAM = "train"  # training's stream; each evaluation split has its own


@dataclass(frozen=True)
class Stream:
    name: str
    offset: Optional[int]  # the token the batch starts at; None: follows on from the last
    commit: bool = True  # False: a dummy batch, which must not move the carried state
