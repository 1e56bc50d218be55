"""fairseq-awd-ablate end to end on a tiny budget: two rows, the table and chart from
their logs, a finished row skipped on a second run; the recipes are the README's."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from fairseq_awd.ablate import RECIPES, ROWS, applies, row_flags

from conftest import ENV, ROOT, perplexity, run

BASE = ["--task", "variable_bptt_lm", "--bptt", "20", "--batch-size", "4", "--arch", "awd_lstm",
        "--decoder-embed-dim", "16", "--decoder-hidden-size", "24", "--decoder-layers", "2",
        "--criterion", "ar_tar_cross_entropy", "--ar-alpha", "2", "--tar-beta", "1",
        "--optimizer", "nt_asgd", "--nonmono", "5", "--lr", "30", "--clip-norm", "0.25",
        "--max-epoch", "1", "--cpu", "--no-epoch-checkpoints", "--log-format", "simple"]


@pytest.mark.parametrize("recipe,data", [("ptb", "data-bin/ptb"), ("wt2", "data-bin/wikitext-2")])
def test_recipes_are_the_readme_training_commands(recipe, data):
    text = (ROOT / "examples" / "awd_lstm" / "README.md").read_text()
    command = next(shlex.split(b.replace("\\\n", " ")) for b in re.findall(r"```\n(.*?)```", text, re.S)
                   if b.startswith(f"fairseq-train {data} ") and "--asgd-from-start" not in b)
    for flag in ("--user-dir", "--seed", "--save-dir"):  # the ablation's own
        i = command.index(flag)
        del command[i : i + 2]
    assert shlex.split(RECIPES[recipe]) == command[2:]


def test_rows_replace_the_base_flags():
    assert row_flags(BASE, "sgd")[-2:] == ["--optimizer", "sgd"]
    assert "--nonmono" not in row_flags(BASE, "sgd") and "nt_asgd" not in row_flags(BASE, "sgd")
    no_ar = row_flags(BASE, "no-ar")
    assert no_ar.count("--ar-alpha") == 1 and no_ar[-2:] == ["--ar-alpha", "0"]
    assert row_flags(BASE, "untied")[-1] == "--untie-embeddings"
    assert row_flags(BASE, "full") == BASE
    off = row_flags(BASE, "no-regularisation")
    assert [off[off.index(f) + 1] for f in ("--weight-drop", "--dropout", "--ar-alpha")] == ["0"] * 3


def test_default_rows_are_those_the_base_allows():
    translation = ["--task", "translation", "--arch", "awd_lstm_translation", "--criterion",
                   "ar_tar_cross_entropy", "--optimizer", "adam"]
    assert [r for r in ROWS if not applies(translation, r)] == ["fixed-bptt", "sgd"]
    assert all(applies(BASE, r) for r in ROWS)


@pytest.mark.slow
def test_two_rows_end_to_end_and_resume(data_bin, tmp_path):
    cmd = [sys.executable, "-m", "fairseq_awd.ablate", str(data_bin), "--out", str(tmp_path / "ab"),
           "--rows", "full,no-ar", "--", *BASE]
    out = run(*cmd, cwd=tmp_path)
    assert "[2/2]" in out and "to rerun it alone" in out
    table = (tmp_path / "ab" / "ablation.md").read_text()
    full_test = None
    for row in ("full", "no-ar"):
        logs = tmp_path / "ab" / row / "seed141"
        valid = min(float(p) for p in re.findall(r"valid on 'valid' subset \|.*? ppl ([\d.]+)",
                                                 (logs / "train.log").read_text()))
        test = perplexity((logs / "eval.log").read_text())
        full_test = full_test or test
        assert f"| {row} | {valid:.2f} | {test:.2f} | {test - full_test:+.2f} |" in table
        assert (logs / "command.sh").read_text().startswith("fairseq-train ")
    assert (tmp_path / "ab" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    before = (tmp_path / "ab" / "full" / "seed141" / "train.log").stat().st_size
    result = json.loads((tmp_path / "ab" / "full" / "seed141" / "result.json").read_text())
    again = run(*cmd, cwd=tmp_path)
    assert "to rerun it alone" not in again  # both finished: nothing runs
    assert (tmp_path / "ab" / "full" / "seed141" / "train.log").stat().st_size == before
    assert f"valid {result['valid_ppl']:.2f}" in again


def finished(out, results):
    """Runs the ablation skips as done: their result.json files."""
    for (row, seed), test in results.items():
        (out / row / f"seed{seed}").mkdir(parents=True)
        (out / row / f"seed{seed}" / "result.json").write_text(json.dumps(
            {"valid_ppl": 100.0 + seed, "test_ppl": test, "params": 1000, "wall_s": 1}))


def test_seed_spread_marks_the_differences_it_covers(data_bin, tmp_path):
    # full 100 +- 2; no-ar 101 +- 1 (within 3 of it: noise); no-tar 110 +- 1 (not)
    finished(tmp_path, {("full", 1): 98, ("full", 2): 102, ("no-ar", 1): 100, ("no-ar", 2): 101.41421356,
                        ("no-tar", 1): 109.29289322, ("no-tar", 2): 110.70710678})
    out = run(sys.executable, "-m", "fairseq_awd.ablate", str(data_bin), "--out", str(tmp_path),
              "--rows", "full,no-ar,no-tar", "--seeds", "1,2", "--", *BASE, cwd=tmp_path)
    table = (tmp_path / "ablation.md").read_text()
    assert "| no-ar | 101.50 ± 0.71 | 100.71 ± 1.00 | +0.71 ~ |" in table
    assert "| no-tar | 101.50 ± 0.71 | 110.00 ± 1.00 | +10.00 |" in table
    assert "| full | 101.50 ± 0.71 | 100.00 ± 2.83 | +0.00 |" in table
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG" and "chart:" in out


def test_without_matplotlib_the_console_script_writes_the_table(data_bin, tmp_path):
    hidden = tmp_path / "hide" / "matplotlib"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'matplotlib'\")")
    finished(tmp_path / "ab", {("full", 141): 100.0, ("no-ar", 141): 103.0})
    # the hiding directory first, before whatever PYTHONPATH already names (the package
    # under test, where it is not the installed one)
    pythonpath = os.pathsep.join(p for p in (str(hidden.parent), ENV.get("PYTHONPATH")) if p)
    proc = subprocess.run([shutil.which("fairseq-awd-ablate"), str(data_bin), "--out",
                           str(tmp_path / "ab"), "--rows", "full,no-ar", "--", *BASE],
                          env={**ENV, "PYTHONPATH": pythonpath}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("fairseq-awd:")] == [
        "fairseq-awd: matplotlib is not installed, so ablation.md will be written and ablation.png "
        "will not: pip install 'fairseq-awd[plot]' for the chart"]
    table = (tmp_path / "ab" / "ablation.md").read_text()
    assert "no seed spread was measured" in table and "| no-ar | 241.00 | 103.00 | +3.00 |" in table
    assert not (tmp_path / "ab" / "ablation.png").exists()
