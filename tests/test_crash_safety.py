"""A training killed at any moment resumes: every checkpoint file on disk is whole
after kill -9, and a damaged checkpoint_last.pt is replaced by the newest intact one."""
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENV, USER_DIR, run

pytestmark = pytest.mark.slow

SAVE_EVERY = 2
FINAL = 30


def command(data_bin, save_dir, max_update, *flags):
    return [sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", USER_DIR,
            "--task", "variable_bptt_lm", "--bptt", "20", "--batch-size", "4", "--seed", "7",
            "--arch", "awd_lstm", "--decoder-embed-dim", "32", "--decoder-hidden-size", "64",
            "--criterion", "ar_tar_cross_entropy", "--optimizer", "nt_asgd", "--lr", "30",
            "--clip-norm", "0.25", "--cpu", "--log-format", "simple",
            "--save-interval-updates", str(SAVE_EVERY), "--max-update", str(max_update),
            "--save-dir", str(save_dir), *flags]


def files(save_dir):
    found = {}
    for e in os.scandir(save_dir) if save_dir.exists() else []:
        if e.name.startswith("checkpoint"):  # not fairseq's start-up probe, "dummy"
            try:
                found[e.name] = e.stat().st_mtime_ns
            except FileNotFoundError:  # a save's .tmp renamed between listing and stat
                pass
    return found


def watch(cmd, save_dir, cwd, kill_after=None):
    """Start the run; once a save begins (a new checkpoint file appears in save_dir;
    not the resume's own copy to checkpoint_last.pt), kill -9 it after `kill_after`
    seconds. Its log, the time from the start of the save to the last change, and
    whether the kill landed (the run was still going when it came)."""
    before = files(save_dir)
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    start = end = None
    landed = False
    while True:
        running = proc.poll() is None
        now = files(save_dir)
        if start is None and any(not n.startswith("checkpoint_last") for n in now.keys() - before):
            start = time.perf_counter()
            if kill_after is not None:
                time.sleep(kill_after)
                landed = proc.poll() is None
                proc.kill()
        if start is not None and now != before:
            end = time.perf_counter()
        before = now
        if not running:
            return proc.communicate()[0], (end - start if start else 0), landed
        time.sleep(0.0002)


def num_updates(path):
    return torch.load(path)["optimizer_history"][-1]["num_updates"]


def test_kill_9_during_saves_never_leaves_a_partial_checkpoint(data_bin, tmp_path):
    # a 14 MB checkpoint (embeddings of 512): a save window of tens of milliseconds
    cmd = command(data_bin, tmp_path / "probe", SAVE_EVERY, "--decoder-embed-dim", "512")
    _, window, _ = watch(cmd, tmp_path / "probe", tmp_path)
    save_dir = tmp_path / "ck"
    cmd = command(data_bin, save_dir, FINAL, "--decoder-embed-dim", "512")
    kills, inside = 10, 0
    for i in range(kills):
        had_one = save_dir.exists() and any(n.endswith(".pt") for n in os.listdir(save_dir))
        after = window * i / (kills - 2)
        log, _, landed = watch(cmd, save_dir, tmp_path, kill_after=after)
        inside += landed and after <= window
        assert "Traceback" not in log, log[-3000:]
        if had_one:  # the newest intact checkpoint, through checkpoint_last.pt
            assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt", log), (i, log[-3000:])
        for name in os.listdir(save_dir):
            if name.endswith(".pt"):  # whole: torch reads it (a .tmp may be partial)
                torch.load(save_dir / name)
    if inside < 3:
        pytest.fail(f"inconclusive: {inside} of {kills} kills landed inside the {window:.3f} s "
                    "save window (a faster disk needs a bigger checkpoint)")
    log = run(*cmd, cwd=tmp_path)
    assert "Loaded checkpoint" in log, log[-6000:]
    assert num_updates(save_dir / "checkpoint_last.pt") == FINAL


@pytest.mark.parametrize("keep", ["nothing", "half"])
def test_a_damaged_checkpoint_last_resumes_from_the_newest_intact(data_bin, tmp_path, keep):
    save_dir = tmp_path / "ck"
    run(*command(data_bin, save_dir, 6), cwd=tmp_path)
    last = save_dir / "checkpoint_last.pt"
    with open(last, "r+b") as f:
        f.truncate(0 if keep == "nothing" else last.stat().st_size // 2)
    log = run(*command(data_bin, save_dir, 9), cwd=tmp_path)
    problem = r"0 bytes" if keep == "nothing" else r"[\d,]+ bytes, cut short"
    assert re.search(rf"fairseq-awd: skipped {last} \({problem}.*\): resuming from "
                     rf"{save_dir}/checkpoint(_best|_1_6)\.pt", log), log[-3000:]
    assert re.search(r"Loaded checkpoint .* \(epoch 1 @ 6 updates\)", log)
    # mid-epoch: the rows start from a zero state, and the log says so
    assert "no carried state for stream 'train'" in log
    assert num_updates(last) == 9


def test_no_intact_checkpoint_starts_from_scratch(data_bin, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    (save_dir / "checkpoint_last.pt").write_bytes(b"PK\x03\x04 cut")
    log = run(*command(data_bin, save_dir, 2), cwd=tmp_path)
    assert "no intact checkpoint in" in log and "training starts from scratch" in log
    assert (save_dir / "checkpoint_last.pt.corrupt").exists()
    assert num_updates(save_dir / "checkpoint_last.pt") == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (skipped where the test may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_ends_in_one_line_and_the_rerun_resumes(data_bin, tmp_path, small_disk):
    # 700 KB checkpoints on a 1 MB disk: the first fits, copying it to _best does not
    cmd = command(data_bin, small_disk, 40, "--decoder-embed-dim", "32", "--save-interval-updates",
                  "20")
    proc = subprocess.run(cmd, env=ENV, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"fairseq-awd: no space left on the device writing {small_disk}/"
                        rf"checkpoint_\w+\.pt \([\d,]+ bytes free in {small_disk}\): free some, "
                        r"or give --save-dir a disk with room, and rerun the same command: it "
                        rf"resumes from {small_disk}/checkpoint_1_20\.pt", last), last
    assert sorted(os.listdir(small_disk)) == ["checkpoint_1_20.pt"]  # no .tmp left
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    log = run(*cmd, cwd=tmp_path)
    assert re.search(r"Loaded checkpoint .* \(epoch 1 @ 20 updates\)", log), log[-3000:]
    assert num_updates(small_disk / "checkpoint_last.pt") == 40
