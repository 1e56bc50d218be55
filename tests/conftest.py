import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq.data import Dictionary

import fairseq_awd  # noqa: F401  (registers the plugins)

ROOT = Path(__file__).resolve().parents[1]
WT2 = ROOT / "data" / "wt2-slice"
USER_DIR = str(ROOT / "fairseq_awd")
# The command lines run with --cpu, and must not see a GPU: on a CUDA machine
# fairseq's clip_grad_norm_ puts the norm of CPU gradients on cuda:0 and fails.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
GPU_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tests/test_cuda.py


def run(*cmd, cwd, env=ENV):
    """Run a fairseq command line; fail the test with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def run_two_ranks(cmd, port, cwd, ddp_backend="legacy_ddp"):
    """A fairseq-train command line as two CPU processes, one per rank (gloo: fairseq's
    own spawn assumes CUDA); both must succeed. Their logs."""
    flags = [*cmd, "--distributed-world-size", "2", "--distributed-init-method",
             f"tcp://127.0.0.1:{port}", "--distributed-no-spawn", "--distributed-backend",
             "gloo", "--ddp-backend", ddp_backend]
    procs = [subprocess.Popen(flags + ["--distributed-rank", str(r)], env=ENV, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    if [p.returncode for p in procs] != [0, 0]:
        pytest.fail(logs[0][-3000:] + logs[1][-3000:])
    return logs


def valid_losses(log):
    """The validation losses fairseq-train logged, in order (never none: a log line
    that stopped matching must not make two lists equal by being empty)."""
    losses = [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log)]
    if not losses:
        pytest.fail(f"no validation loss in the log:\n{log[-3000:]}")
    return losses


def perplexity(out):
    """The perplexity fairseq-eval-lm printed."""
    found = re.search(r"Perplexity: ([\d.]+)", out)
    if found is None:
        pytest.fail(f"no perplexity in the output:\n{out[-3000:]}")
    return float(found.group(1))


def params_and_state(path):
    """A checkpoint's floating-point parameters, the optimizer state of each, in
    order (nt_asgd keeps the average in 'ax', the raw weights in 'raw'), and the
    checkpoint."""
    ckpt = torch.load(path)  # torch's default weights_only loader
    params = [v for v in ckpt["model"].values() if v.is_floating_point()]
    state = ckpt["last_optimizer_state"]["state"]
    return params, [state[i] for i in range(len(params))], ckpt


def holds_the_average(path, dtype=torch.float32):
    """The checkpoint's model is NT-ASGD's average (rounded to the model's dtype)."""
    params, state, _ = params_and_state(path)
    return all(torch.equal(p, s["ax"].to(dtype).float()) for p, s in zip(params, state))


def small_dictionary(n=50):
    d = Dictionary()
    for i in range(n - len(d)):
        d.add_symbol(f"w{i}")
    return d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory):
    """A few hundred lines of the shipped wt2-slice, through fairseq-preprocess."""
    tmp = tmp_path_factory.mktemp("wt2")
    for split, lines in (("train", 400), ("valid", 80), ("test", 80)):
        text = (WT2 / f"{split}.txt").read_text().splitlines(keepends=True)[:lines]
        (tmp / f"{split}.txt").write_text("".join(text))
    run(sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
        "--trainpref", "train.txt", "--validpref", "valid.txt", "--testpref", "test.txt",
        "--destdir", "bin", "--workers", "1", cwd=tmp)
    return tmp / "bin"
