"""compat.install(): each import-time patch in place, the atomic copy honouring
`overwrite` as fairseq's remote stores do."""
import argparse

import numpy as np
import torch
from fairseq.file_io import PathManager

import fairseq_awd  # noqa: F401  (installs the patches)


def test_the_patches_are_installed():
    assert np.compat.long is int
    assert argparse.Namespace in torch.serialization.get_safe_globals()
    assert getattr(PathManager.copy, "atomic", False)


def test_the_atomic_copy_honours_overwrite(tmp_path):
    src, dst = tmp_path / "new.pt", tmp_path / "old.pt"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    assert PathManager.copy(str(src), str(dst)) is False  # overwrite defaults to False
    assert dst.read_bytes() == b"old"
    assert PathManager.copy(str(src), str(dst), overwrite=True) is True
    assert dst.read_bytes() == b"new"
    assert PathManager.copy(str(src), str(tmp_path / "fresh.pt")) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.pt", "new.pt", "old.pt"]


def test_a_full_disk_leaves_no_tmp_and_ends_in_one_line(tmp_path):
    import errno
    import pytest
    from fairseq_awd import safe_checkpoints

    old = tmp_path / "checkpoint_best.pt"
    old.write_bytes(b"old")  # not a zip archive: a legacy checkpoint, left to torch

    def half_then_full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(SystemExit, match=rf"fairseq-awd: no space left on the device writing "
                                         rf"{old} \([\d,]+ bytes free in {tmp_path}\).* it "
                                         rf"resumes from {old}$"):
        safe_checkpoints.atomic_write(half_then_full, str(old))
    assert old.read_bytes() == b"old" and not (tmp_path / "checkpoint_best.pt.tmp").exists()

    def unreadable(tmp):
        open(tmp, "wb").close()
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError):  # not a full disk: fairseq's error, no .tmp left
        safe_checkpoints.atomic_write(unreadable, str(old))
    assert not (tmp_path / "checkpoint_best.pt.tmp").exists()
