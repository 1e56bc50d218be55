"""Checkpoints that survive a killed run, and one line for a corrupt one.

fairseq writes a checkpoint's first file atomically (a .tmp file, then a rename)
but makes checkpoint_best.pt and checkpoint_last.pt from it with a plain copy, so
a run killed during that copy (kill -9, a preempted job) leaves a truncated
checkpoint_last.pt, and the restart dies in torch's unpickler. fairseq has no
extension point on that path, so compat.py replaces three of its functions, the
least it takes, with these:
- `atomic_copy` for `PathManager.copy` of local files and `atomic_save` for
  `checkpoint_utils.torch_persistent_save`: write `<dst>.tmp`, then `os.replace`, so
  a file is either the old one or the new one, never a part, and a full disk ends
  the run with one line and no `.tmp` left (`atomic_write`);
- `check_loadable` before `checkpoint_utils.load_checkpoint_to_cpu`: a torch
  checkpoint is a zip archive with a CRC per member, so eval-lm, generate, the hub
  and a resume end with one line naming a corrupt file.
A checkpoint_last.pt damaged otherwise (a full disk, a copy cut short) is replaced
at the start of training by the newest intact checkpoint (`resume_from_intact`).
"""
import errno
import glob
import logging
import os
import shutil
import zipfile
from typing import Optional

import torch

from .errors import fail

logger = logging.getLogger(__name__)
loading: Optional[str] = None  # the checkpoint being loaded, for error messages


def corruption(path: str) -> Optional[str]:
    """Why `path` is not a complete checkpoint, or None when it is (or is not a
    zip archive at all: torch's legacy format, left to torch)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "0 bytes"
    if head != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{os.path.getsize(path):,} bytes, cut short ({e})"
    return f"member {bad} fails its CRC check" if bad else None


def atomic_write(write, path: str):
    """write(tmp) then a rename: `path` is the old file or the new one, never a part.
    A full disk leaves no .tmp behind and ends the run with one line; the
    checkpoints already on disk stay as they were."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if e.errno != errno.ENOSPC:
            raise
        save_dir = os.path.dirname(os.path.abspath(path))
        newest = newest_intact(save_dir)
        fail(f"no space left on the device writing {path} ({shutil.disk_usage(save_dir).free:,} "
             f"bytes free in {save_dir}): free some, or give --save-dir a disk with room, "
             "and rerun the same command: it resumes from "
             + (newest or "the start (no checkpoint was written)"))


def atomic_copy(src_path: str, dst_path: str):
    atomic_write(lambda tmp: shutil.copyfile(src_path, tmp), dst_path)


def atomic_save(obj, path: str):
    """torch.save through atomic_write: fairseq's own save retries a failed write
    three times and logs a traceback."""
    atomic_write(lambda tmp: torch.save(obj, tmp), path)


def check_loadable(path: str):
    """Ends with one line when `path` is a cut-short checkpoint; remembers it as the
    file being loaded (named by the dictionary check)."""
    global loading
    if os.path.isfile(path):
        problem = corruption(path)
        if problem:
            fail(f"{path} is not a complete checkpoint ({problem}); it was cut short "
                 "while being written: use another checkpoint of the run "
                 "(checkpoint_best.pt, checkpointN.pt)")
    loading = path


def newest_first(save_dir: str):
    last = os.path.join(save_dir, "checkpoint_last.pt")
    return sorted(glob.glob(os.path.join(save_dir, "checkpoint*.pt")),
                  key=lambda p: (os.path.getmtime(p), p == last), reverse=True)


def newest_intact(save_dir: str) -> Optional[str]:
    return next((p for p in newest_first(save_dir) if not corruption(p)), None)


def resume_from_intact(save_dir: str):
    """Before a training run resumes: checkpoint_last.pt becomes the newest intact
    checkpoint*.pt of `save_dir` (by modification time) when it is damaged, missing
    or older (a run killed between writing checkpointN.pt and copying it), with one
    line saying which file was skipped and why. With none intact, a damaged
    checkpoint_last.pt is moved aside and training starts from scratch."""
    last = os.path.join(save_dir, "checkpoint_last.pt")
    candidates = newest_first(save_dir)
    skipped = []
    for path in candidates:
        problem = corruption(path)
        if problem:
            skipped.append(f"{path} ({problem})")
            continue
        if path != last:
            atomic_copy(path, last)
        if path != last or skipped:
            why = "; ".join(skipped) or (f"{last} (older than {path}: a run stopped while "
                                         "saving)" if last in candidates else
                                         f"{last} (missing: a run stopped while saving)")
            logger.warning(f"fairseq-awd: skipped {why}: resuming from {path}")
        return
    if os.path.exists(last):
        os.replace(last, last + ".corrupt")
        logger.warning(f"fairseq-awd: skipped {'; '.join(skipped)}: no intact checkpoint in "
                       f"{save_dir}, training starts from scratch ({last} kept as .corrupt)")
