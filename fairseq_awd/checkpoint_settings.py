"""A save-dir that holds another model's checkpoint: one line naming the settings
that differ.

fairseq-train resumes from --save-dir's checkpoint_last.pt. When that file belongs
to a model of other sizes or another architecture (an earlier run with other
flags), fairseq fails with "Cannot load model parameters from checkpoint ...;
please ensure that the architectures match" and two tracebacks, naming no setting.
The package's models compare the checkpoint's parameters with their own before
loading, and when names or shapes differ, the checkpoint's model settings with the
command's.
"""
from argparse import Namespace
from typing import Dict, List

import torch
from torch import nn

from . import safe_checkpoints
from .dictionary_fingerprint import BUFFER
from .errors import fail


def differing_parameters(model: nn.Module, state_dict) -> List[str]:
    """Names missing on one side or of other shapes (the dictionary fingerprints,
    absent from old checkpoints, left to check_dictionaries)."""
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith(BUFFER)}
    theirs = {k: v for k, v in state_dict.items() if not k.endswith(BUFFER)}
    return sorted(k for k in ours.keys() | theirs.keys()
                  if k not in ours or k not in theirs or ours[k].shape != theirs[k].shape)


def as_dict(cfg) -> Dict:
    return dict(vars(cfg) if isinstance(cfg, Namespace) else cfg or {})


def check_settings(model: nn.Module, state_dict, model_cfg):
    """Refuse, in one line, a checkpoint of other model settings than the command's."""
    path = safe_checkpoints.loading
    if model_cfg is None or path is None or not differing_parameters(model, state_dict):
        return
    saved = as_dict(torch.load(path, map_location="cpu")["cfg"]["model"])
    command = as_dict(model_cfg)
    settings = [f"{k}: checkpoint {saved.get(k)}, command {command.get(k)}"
                for k in sorted(saved.keys() | command.keys())
                if k in saved and k in command and saved[k] != command[k]]
    if settings:  # none: the same settings on other data (check_dictionaries says so)
        fail(f"{path} holds another model ({'; '.join(settings)}): train this one with "
             "another --save-dir, or start it from a checkpoint of its own settings with "
             "--restore-file PATH --reset-optimizer --reset-dataloader --reset-meters")
