"""The corpus as contiguous streams read in order, in windows of variable length
(Merity et al. 2017, section 4.1), as the reference implementation batches it.

A split's sentences, each with its end-of-sentence symbol, form one token stream,
cut into R equal rows (the tail that does not fill a row is dropped). A batch is
a window [offset, offset + seq_len) of every row, its target the same window one
token later, so batch i+1 continues batch i in every row.
"""
from typing import List, Optional, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset

from .stream import Stream

Window = Tuple[int, int]  # (offset, drawn length)


def train_windows(row_len, bptt, full_prob, std, min_len, seed, epoch,
                  max_len: Optional[int] = None) -> List[Window]:
    """The reference's training loop: bptt with probability `full_prob`, else bptt/2,
    then seq_len = max(min_len, int(N(that, std))), at most `max_len` if given (the
    MoS reference's cap). A pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    windows, offset = [], 0
    while offset < row_len - 2:
        mean = bptt if rng.random() < full_prob else bptt / 2
        seq_len = max(min_len, int(rng.normal(mean, std)))
        if max_len is not None:
            seq_len = min(seq_len, max_len)
        windows.append((offset, seq_len))
        offset += seq_len
    return windows


def eval_windows(row_len, bptt) -> List[Window]:
    return [(offset, bptt) for offset in range(0, row_len - 1, bptt)]


class TokenStream(FairseqDataset):
    """One split as a single 1-D token stream."""

    def __init__(self, tokens: torch.Tensor, split: str):
        self.tokens = tokens
        self.split = split

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        return self.tokens[index]

    def rows(self, n_rows: int, shard_id: int,
             num_shards: int) -> Tuple[torch.Tensor, np.ndarray]:
        """This shard's rows of the stream cut into `n_rows`, and their row numbers."""
        row_len = len(self.tokens) // n_rows
        rows = self.tokens[: n_rows * row_len].view(n_rows, row_len)
        mine = np.array_split(np.arange(n_rows), num_shards)[shard_id]
        return rows[mine[0] : mine[-1] + 1], mine


class BPTTBatches(FairseqDataset):
    """Rows read in windows: an index is a window, an item is a whole batch."""

    def __init__(self, rows: torch.Tensor, row_ids: np.ndarray, stream: str):
        self.rows = rows
        self.row_ids = torch.from_numpy(row_ids)
        self.stream = stream

    def __len__(self):
        return self.rows.size(1)

    def __getitem__(self, window: Window):
        offset, drawn = window
        seq_len = min(drawn, self.rows.size(1) - 1 - offset)
        source = self.rows[:, offset : offset + seq_len].contiguous()
        bsz = source.size(0)
        return {
            "id": self.row_ids,
            "nsentences": bsz,
            "ntokens": bsz * seq_len,
            "net_input": {
                "src_tokens": source,
                "src_lengths": torch.full((bsz,), seq_len, dtype=torch.long),
                "stream": Stream(self.stream, offset),
            },
            "target": self.rows[:, offset + 1 : offset + 1 + seq_len].contiguous(),
            "drawn_seq_len": drawn,
        }

    def collater(self, samples):
        return samples[0]
