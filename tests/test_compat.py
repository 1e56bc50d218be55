"""compat.install(): each import-time patch in place, the atomic copy honouring
`overwrite` as fairseq's remote stores do; safe_checkpoints' check of a damaged
checkpoint (cut short, a member failing its CRC)."""
import argparse
import errno
import re
import struct
import zipfile

import numpy as np
import pytest
import torch
from fairseq.file_io import PathManager

from fairseq_awd import safe_checkpoints  # importing the package installs the patches


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


def small_checkpoint(path):
    """A torch.save zip archive with one tensor large enough to damage in its middle."""
    torch.save({"model": {"w": torch.randn(4096)}}, path)
    return path


def test_a_checkpoint_cut_short_is_named_in_one_line(tmp_path, monkeypatch):
    """corruption() sees an archive cut in half (its central directory lost), and
    check_loadable ends with one line naming the file; an intact one passes."""
    monkeypatch.setattr(safe_checkpoints, "loading", None)  # check_loadable sets it
    intact = small_checkpoint(tmp_path / "checkpoint1.pt")
    assert safe_checkpoints.corruption(str(intact)) is None
    safe_checkpoints.check_loadable(str(intact))
    assert safe_checkpoints.loading == str(intact)
    data = intact.read_bytes()
    cut = tmp_path / "checkpoint_last.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert safe_checkpoints.corruption(str(cut)).startswith(f"{len(data) // 2:,} bytes, cut short (")
    with pytest.raises(SystemExit, match=rf"^fairseq-awd: {re.escape(str(cut))} is not a complete "
                                         rf"checkpoint \({len(data) // 2:,} bytes, cut short \("):
        safe_checkpoints.check_loadable(str(cut))


def test_a_member_failing_its_crc_is_named_in_one_line(tmp_path, monkeypatch):
    """A byte flipped inside a stored member's data (the archive's structure intact):
    the member's CRC-32 no longer matches, and check_loadable names file and member."""
    monkeypatch.setattr(safe_checkpoints, "loading", None)
    path = small_checkpoint(tmp_path / "checkpoint_best.pt")
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    # the local file header: 30 bytes, then the name and the extra field, then the data
    name_len, extra_len = struct.unpack("<HH", data[member.header_offset + 26 : member.header_offset + 30])
    start = member.header_offset + 30 + name_len + extra_len
    assert member.compress_type == zipfile.ZIP_STORED and member.file_size > 1000
    data[start + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert safe_checkpoints.corruption(str(path)) == f"member {member.filename} fails its CRC check"
    with pytest.raises(SystemExit, match=rf"^fairseq-awd: {re.escape(str(path))} is not a complete "
                                         rf"checkpoint \(member {re.escape(member.filename)} "
                                         r"fails its CRC check\)"):
        safe_checkpoints.check_loadable(str(path))
