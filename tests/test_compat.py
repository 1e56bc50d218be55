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
