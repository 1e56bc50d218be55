"""nt_asgd through fairseq-train: the switch, averaged checkpoints, resume, finetune,
mixed precision, and the misuse errors."""
import re
import subprocess
import sys

import pytest
import torch

from conftest import ENV, USER_DIR, holds_the_average, params_and_state, run, valid_losses

pytestmark = pytest.mark.slow

TASK = ["--task", "variable_bptt_lm", "--bptt", "20"]
COMMON = ["--user-dir", USER_DIR, "--batch-size", "4", "--seed", "7", "--arch", "awd_lstm",
          "--decoder-embed-dim", "32", "--decoder-hidden-size", "64",
          "--criterion", "ar_tar_cross_entropy", "--optimizer", "nt_asgd", "--lr", "30",
          "--clip-norm", "0.25", "--cpu", "--no-epoch-checkpoints", "--log-format", "simple"]
FLAGS = TASK + COMMON


def train(data_bin, save_dir, *flags):
    return run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), *FLAGS,
               "--save-dir", str(save_dir), *flags, cwd=save_dir.parent)


@pytest.fixture(scope="module")
def switched(data_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("ntasgd") / "ck"
    return save_dir, train(data_bin, save_dir, "--nonmono", "0", "--max-epoch", "4")


def test_switch_and_averaged_validation_and_checkpoints(data_bin, switched):
    save_dir, log = switched
    # the second validation (the first worse than the best, with --nonmono 0) switches
    switches = re.findall(r"NT-ASGD: switching to averaged SGD from the next update "
                          r"\(validation loss ([\d.]+)\)", log)
    losses = valid_losses(log)
    assert len(switches) == 1 and losses[1] > losses[0]
    assert float(switches[0]) == pytest.approx(losses[1], abs=6e-4)
    params, state, ckpt = params_and_state(save_dir / "checkpoint_last.pt")
    # the checkpoint's model is the average; the raw weights wait in the optimizer
    assert holds_the_average(save_dir / "checkpoint_last.pt")
    assert not all(torch.equal(p, s["raw"]) for p, s in zip(params, state))
    # eval-lm on the validation split read as 10 rows reproduces the logged validation
    # loss: validation ran on the same (averaged) weights
    out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir",
              USER_DIR, "--task", "variable_bptt_lm", "--bptt", "20", "--gen-subset", "valid",
              "--batch-size", "10", "--path", str(save_dir / "checkpoint_last.pt"), "--cpu",
              cwd=save_dir)
    loss = float(re.search(r"Loss \(base 2\): ([\d.]+)", out).group(1))
    assert loss == pytest.approx(valid_losses(log)[-1], abs=6e-4)


def test_resume_after_the_switch_is_bit_identical(data_bin, switched, tmp_path):
    save_dir, log = switched
    part = tmp_path / "ck"
    train(data_bin, part, "--nonmono", "0", "--max-epoch", "3")
    resumed = train(data_bin, part, "--nonmono", "0", "--max-epoch", "4")
    assert valid_losses(resumed) == valid_losses(log)[3:]
    a, a_state, _ = params_and_state(save_dir / "checkpoint_last.pt")
    b, b_state, _ = params_and_state(part / "checkpoint_last.pt")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x["ax"], y["ax"]) and torch.equal(x["raw"], y["raw"])
               for x, y in zip(a_state, b_state))


def test_finetune_stops_by_the_nonmono_rule(data_bin, switched, tmp_path):
    save_dir, _ = switched
    # a small training split overfits, so validation turns worse within a few epochs
    lines = open(data_bin.parent / "train.txt").readlines()[:60]
    (tmp_path / "train.txt").write_text("".join(lines))
    run(sys.executable, "-m", "fairseq_cli.preprocess", "--only-source", "--srcdict",
        str(data_bin / "dict.txt"), "--trainpref", "train.txt", "--validpref",
        str(data_bin.parent / "valid.txt"), "--destdir", "small", cwd=tmp_path)
    log = train(tmp_path / "small", tmp_path / "ft", "--asgd-from-start", "--nonmono", "1",
                "--finetune-from-model", str(save_dir / "checkpoint_best.pt"),
                "--stop-min-lr", "0", "--max-epoch", "40", "--dropout", "0",
                "--hidden-dropout", "0", "--input-dropout", "0", "--embed-dropout", "0",
                "--weight-drop", "0")
    assert "NT-ASGD finetune: validation stopped improving" in log
    assert "stopping training because current learning rate (0.0)" in log
    losses = valid_losses(log)
    assert len(losses) < 40 and losses[-1] > min(losses[:-2])


def test_amp_and_fp16_train_with_nt_asgd(data_bin, switched, tmp_path):
    _, log = switched
    amp = train(data_bin, tmp_path / "amp", "--nonmono", "0", "--max-epoch", "3", "--amp")
    # on a CPU AMP's scaler and autocast switch off: the wrapper must change nothing
    assert valid_losses(amp) == valid_losses(log)[:3]
    fp16 = train(data_bin, tmp_path / "fp16", "--nonmono", "0", "--max-epoch", "3", "--fp16",
                 "--fp16-no-flatten-grads")
    assert "NT-ASGD: switching to averaged SGD" in fp16
    params, state, _ = params_and_state(tmp_path / "fp16" / "checkpoint_last.pt")
    # the average is kept in fp32; the fp16 model ran with it rounded (fairseq saves
    # the fp16 weights cast back to fp32)
    assert state[0]["ax"].dtype == torch.float32
    assert holds_the_average(tmp_path / "fp16" / "checkpoint_last.pt", torch.half)
    assert not all(torch.equal(p, s["ax"]) for p, s in zip(params, state))


def test_nt_asgd_under_fairseqs_language_modeling_task(data_bin, tmp_path):
    lm_task = ["--task", "language_modeling", "--tokens-per-sample", "20"]
    log = run(sys.executable, "-m", "fairseq_cli.train", str(data_bin), *lm_task, *COMMON,
              "--save-dir", str(tmp_path / "ck"), "--nonmono", "0", "--max-epoch", "4",
              cwd=tmp_path)
    assert "NT-ASGD: switching to averaged SGD" in log
    assert holds_the_average(tmp_path / "ck" / "checkpoint_last.pt")
    # the last validation ran on the average: eval-lm on the validation blocks comes
    # within 2e-3 of it (its scorer differs from validation's by ~1e-3 here), and
    # much nearer than with the raw weights put back into the same checkpoint
    _, state, ckpt = params_and_state(tmp_path / "ck" / "checkpoint_last.pt")
    for key, s in zip([k for k, v in ckpt["model"].items() if v.is_floating_point()], state):
        ckpt["model"][key] = s["raw"]
    torch.save(ckpt, tmp_path / "raw.pt")
    logged = valid_losses(log)[-1]
    gaps = []
    for path in (tmp_path / "ck" / "checkpoint_last.pt", tmp_path / "raw.pt"):
        out = run(sys.executable, "-m", "fairseq_cli.eval_lm", str(data_bin), "--user-dir",
                  USER_DIR, *lm_task, "--gen-subset", "valid", "--batch-size", "4",
                  "--path", str(path), "--cpu", cwd=tmp_path)
        gaps.append(abs(float(re.search(r"Loss \(base 2\): ([\d.]+)", out).group(1)) - logged))
    assert gaps[0] < 2e-3 and gaps[1] > 5 * gaps[0], gaps


def test_a_model_without_the_hooks_gets_one_line(data_bin, tmp_path):
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data_bin), *COMMON,
           "--save-dir", str(tmp_path / "ck"), "--max-update", "3", "--task",
           "language_modeling", "--tokens-per-sample", "20", "--arch", "lstm_lm",
           "--criterion", "cross_entropy"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "follows validation through the model" in proc.stderr.strip().splitlines()[-1]
