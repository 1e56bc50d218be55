"""Every import-time patch the package needs, installed by one call (`install`).

Each fixes one thing fairseq 0.12 (fairseq-fixed 0.12.3.1) does on today's torch and
numpy, or on a killed run; the comment above each says what happens without it.
Nothing else of fairseq, torch or numpy is touched.
"""
import argparse
import functools
import os
import types

import numpy as np
import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from fairseq.models import distributed_fairseq_model

from . import safe_checkpoints


class CPUReadyDDP(torch.nn.parallel.DistributedDataParallel):
    """torch's DDP given no device ids for a module on the CPU, as torch requires."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        super().__init__(module, device_ids, output_device, **kwargs)


def install():
    if getattr(PathManager.copy, "atomic", False):
        return  # the package imported twice (--user-dir and an installed copy)

    # Without it: torch >= 2.6 loads checkpoints with weights_only=True and refuses the
    # argparse.Namespace that fairseq's models and optimizers without a config
    # dataclass (--arch lstm, --optimizer sgd) write into theirs. Only that class.
    torch.serialization.add_safe_globals([argparse.Namespace])

    # Without it: fairseq's `language_modeling` and `translation` datasets die on numpy
    # 2, which removed the `np.compat.long` they still name. numpy 1.x defined it as
    # the Python int; it comes back only where it is missing (pinning numpy < 2 would
    # break the CUDA images that ship numpy 2 and a scipy built for it).
    if not hasattr(np, "compat"):
        np.compat = types.ModuleType("numpy.compat")
    if not hasattr(np.compat, "long"):
        np.compat.long = int

    # Without it: fairseq makes checkpoint_best.pt and checkpoint_last.pt with a plain
    # copy, and a run killed during the copy leaves a truncated checkpoint_last.pt
    # that the restart dies on. Local files are copied atomically (safe_checkpoints);
    # `overwrite` means what it means to fairseq's remote stores.
    fairseq_copy = PathManager.copy

    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path):
            return fairseq_copy(src_path, dst_path, overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False
        safe_checkpoints.atomic_copy(src_path, dst_path)
        return True

    copy.atomic = True
    PathManager.copy = staticmethod(copy)

    # Without it: a full disk while fairseq saves a checkpoint leaves checkpointN.pt.tmp
    # behind after three retries, a logged traceback and another uncaught. Local files
    # are saved through the copies' atomic write, which ends the run with one line;
    # asynchronous and remote saves stay fairseq's.
    fairseq_save = checkpoint_utils.torch_persistent_save

    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or PathManager.path_requires_pathmanager(filename):
            return fairseq_save(obj, filename, async_write)
        safe_checkpoints.atomic_save(obj, filename)

    checkpoint_utils.torch_persistent_save = torch_persistent_save

    # Without it: eval-lm, generate, the hub and a resume die in torch's unpickler on
    # a cut-short checkpoint; with it they end with one line naming the file.
    fairseq_load = checkpoint_utils.load_checkpoint_to_cpu

    @functools.wraps(fairseq_load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        safe_checkpoints.check_loadable(path)
        return fairseq_load(path, *args, **kwargs)

    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu

    # Without it: --ddp-backend c10d (or pytorch_ddp) fails on CPU ranks (--cpu, gloo)
    # with a ValueError: fairseq gives torch's DistributedDataParallel device_ids=[0],
    # which torch refuses for a module on the CPU. GPU ranks are given theirs as before.
    distributed_fairseq_model.DistributedDataParallel = CPUReadyDDP
