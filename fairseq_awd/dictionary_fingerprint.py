"""The dictionary a model was trained with, fingerprinted in its checkpoint.

A checkpoint scored against a data-bin whose dictionary has the same size but
other words (another corpus, another fairseq-preprocess run) runs without error
and prints a meaningless perplexity. Each embedding of the package's models keeps
a hash of its dictionary's symbols, in order, as a buffer (so it is in every
checkpoint and survives torch's weights_only loading); loading a checkpoint
compares it with the data's dictionary. Checkpoints written before the fingerprint
existed are checked by size only.
"""
import hashlib
import io
import os
from typing import Optional

import torch
from fairseq.data import Dictionary
from torch import nn

from . import safe_checkpoints
from .errors import fail

BUFFER = "dictionary_fingerprint"


def dictionary_path(task, side: Optional[str] = None) -> str:
    """Where the task read a dictionary from, for error messages; side:
    "source_lang" or "target_lang" under translation."""
    cfg = getattr(task, "cfg", None)
    data = (getattr(cfg, "data", None) or ".").split(os.pathsep)[0]
    lang = getattr(cfg, side, None) if side else None
    return os.path.join(data, f"dict.{lang}.txt" if lang else "dict.txt")


def load_dictionary(path: str) -> Dictionary:
    """fairseq's Dictionary.load; a malformed line (fairseq names neither the file nor
    the line) ends with one line that does."""
    try:
        return Dictionary.load(path)
    except (ValueError, RuntimeError):
        replay = Dictionary()  # fairseq's own parser, a line at a time, finds which
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    replay.add_from_file(io.StringIO(line))
                except ValueError:
                    why = "not '<word> <count>'"
                except RuntimeError:
                    why = "a word listed before"
                else:
                    continue
                fail(f"{path} line {number} is {why} ({line.strip()[:60]!r}): each line is "
                     "'<word> <count>' as fairseq-preprocess writes it; rebuild the data-bin "
                     "with fairseq-preprocess")
        raise


def fingerprint(dictionary) -> torch.Tensor:
    digest = hashlib.sha256("\n".join(dictionary.symbols).encode("utf-8")).digest()
    # 31 bits, so that summing it over checkpoints (fairseq's average_checkpoints.py
    # adds integer tensors, then floor-divides) cannot overflow an int64
    return torch.tensor(int.from_bytes(digest[:4], "little") >> 1)


def mark(embed: nn.Embedding, dictionary, path: str) -> nn.Embedding:
    embed.register_buffer(BUFFER, fingerprint(dictionary))
    embed.dictionary_path = path
    return embed


def check_dictionaries(model: nn.Module, state_dict):
    """Refuse a checkpoint whose dictionaries are not the model's (the data's)."""
    checkpoint = safe_checkpoints.loading or "the checkpoint"
    for name, module in model.named_modules(remove_duplicate=False):
        if not hasattr(module, "dictionary_path"):
            continue
        rows = state_dict[f"{name}.weight"].size(0)
        if rows != module.num_embeddings:
            fail(f"{checkpoint} was trained with a dictionary of {rows} symbols, "
                 f"{module.dictionary_path} has {module.num_embeddings}: use the data-bin "
                 "it was trained on")
        key = f"{name}.{BUFFER}"
        if key not in state_dict:
            state_dict[key] = getattr(module, BUFFER)  # written before fingerprints
        elif not torch.equal(state_dict[key].cpu(), getattr(module, BUFFER).cpu()):
            fail(f"{checkpoint} was trained with another dictionary than "
                 f"{module.dictionary_path} (same size, other symbols or order): use the "
                 "data-bin it was trained on")
