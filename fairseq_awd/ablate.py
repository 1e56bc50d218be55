"""fairseq-awd-ablate: the paper's model analysis (Merity et al. 2017, section 6,
table 4) on your corpus: the full model, then one technique removed per row.

    fairseq-awd-ablate DATA_BIN --out DIR [--rows a,b] [--seeds 141,1882] [--jobs N] \
        (--recipe ptb|wt2 | -- <fairseq-train flags of the base recipe>)

Each row and seed is an ordinary fairseq-train + fairseq-eval-lm run in
DIR/ROW/seedS (its command in command.sh there), so the table resumes: a finished
run (result.json) is skipped, an interrupted one continues from its
checkpoint_last.pt. DIR/ablation.md holds the table, DIR/ablation.png the
differences from the full model.
"""
import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

from .errors import fail

USER_DIR = str(Path(__file__).resolve().parent)
# The training commands of examples/awd_lstm/README.md (data, --save-dir and --seed
# are the ablation's); tests/test_ablate.py checks that they are the README's.
RECIPES = {
    "ptb": "--task variable_bptt_lm --batch-size 20 --bptt 70 --max-epoch 500 --arch awd_lstm "
           "--input-dropout 0.4 --hidden-dropout 0.25 --criterion ar_tar_cross_entropy "
           "--ar-alpha 2 --tar-beta 1 --optimizer nt_asgd --nonmono 5 --lr 30 --clip-norm 0.25 "
           "--weight-decay 1.2e-6 --no-epoch-checkpoints --log-format simple --log-interval 100",
    "wt2": "--task variable_bptt_lm --batch-size 80 --bptt 70 --max-epoch 750 --arch "
           "awd_lstm_wt2 --criterion ar_tar_cross_entropy --ar-alpha 2 --tar-beta 1 "
           "--optimizer nt_asgd --nonmono 5 --lr 30 --clip-norm 0.25 --weight-decay 1.2e-6 "
           "--no-epoch-checkpoints --log-format simple --log-interval 100",
}
# row: (what the base must have, flags that replace the base's, flags it loses)
ROWS = {
    "full": ({}, [], []),
    "no-weight-drop": ({}, ["--weight-drop", "0"], []),
    "no-embed-dropout": ({}, ["--embed-dropout", "0"], []),
    "no-input-dropout": ({}, ["--input-dropout", "0"], []),
    "no-hidden-dropout": ({}, ["--hidden-dropout", "0"], []),
    "no-output-dropout": ({}, ["--dropout", "0"], []),
    "no-ar": ({"--criterion": "ar_tar_cross_entropy"}, ["--ar-alpha", "0"], []),
    "no-tar": ({"--criterion": "ar_tar_cross_entropy"}, ["--tar-beta", "0"], []),
    # every length exactly bptt, so the lr factor seq_len / bptt is always 1
    "fixed-bptt": ({"--task": "variable_bptt_lm"}, ["--bptt-full-prob", "1", "--bptt-std", "0"],
                   []),
    "sgd": ({"--optimizer": "nt_asgd"}, ["--optimizer", "sgd"],
            ["--nonmono", "--asgd-from-start"]),
    "untied": ({}, ["--untie-embeddings"], []),
    "no-weight-decay": ({}, ["--weight-decay", "0"], []),
}


def value_of(flags: List[str], name: str):
    return flags[flags.index(name) + 1] if name in flags else None


def row_flags(base: List[str], row: str) -> List[str]:
    needs, changes, loses = ROWS[row]
    for flag, value in needs.items():
        if value_of(base, flag) != value:
            fail(f"row '{row}' changes what {flag} {value} does, and the base recipe has "
                 f"{flag} {value_of(base, flag)}: drop the row (--rows) or use {flag} {value}")
    flags, i = [], 0
    replaced = {c for c in changes if c.startswith("--")} | set(loses)
    while i < len(base):  # the base without the flags the row replaces or loses
        takes_value = i + 1 < len(base) and not base[i + 1].startswith("--")
        if base[i] not in replaced:
            flags += base[i : i + 1 + takes_value]
        i += 1 + takes_value
    return flags + changes


def run_one(data_bin: str, run_dir: Path, flags: List[str], seed: int, gpu=None) -> Dict:
    """One row and seed: train (resuming from checkpoint_last.pt), then eval-lm."""
    result = run_dir / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    train = ["fairseq-train", data_bin, "--user-dir", USER_DIR, *flags, "--seed", str(seed),
             "--save-dir", str(run_dir)]
    evaluate = ["fairseq-eval-lm", data_bin, "--user-dir", USER_DIR, "--task",
                "variable_bptt_lm", "--path", str(run_dir / "checkpoint_best.pt")]
    if "--cpu" in flags:
        evaluate.append("--cpu")
    bptt = value_of(flags, "--bptt")
    if bptt:
        evaluate += ["--bptt", bptt]
    run_dir.mkdir(parents=True, exist_ok=True)
    commands = f"{shlex.join(train)}\n{shlex.join(evaluate)}\n"
    (run_dir / "command.sh").write_text(commands)
    print(f"{run_dir}: to rerun it alone:\n{commands}", end="", flush=True)
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}))
    start = time.time()
    for cmd, log in ((train, "train.log"), (evaluate, "eval.log")):
        with open(run_dir / log, "a") as out:
            if subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode:
                fail(f"{shlex.join(cmd)} failed: see {run_dir / log}")
    train_log = (run_dir / "train.log").read_text()
    valid = [float(p) for p in re.findall(r"valid on 'valid' subset \|.*? ppl ([\d.]+)",
                                          train_log)]
    params = re.findall(r"num\. shared model params: ([\d,]+)", train_log)
    test = re.findall(r"Perplexity: ([\d.]+)", (run_dir / "eval.log").read_text())
    outcome = {"valid_ppl": min(valid), "test_ppl": float(test[-1]),
               "params": int(params[-1].replace(",", "")),
               "wall_s": round(time.time() - start)}
    result.write_text(json.dumps(outcome))
    return outcome


def summary(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def write_table(out: Path, results: Dict[str, List[Dict]], seeds: List[int]):
    full = statistics.mean(r["test_ppl"] for r in results["full"]) if "full" in results else None
    lines = [f"Seeds {', '.join(map(str, seeds))}" + (" (mean ± standard deviation)"
                                                    if len(seeds) > 1 else ""), "",
             "| row | validation ppl | test ppl | test - full | parameters | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    diffs = {}
    for row, runs in results.items():
        test = [r["test_ppl"] for r in runs]
        if full is not None:
            diffs[row] = statistics.mean(test) - full
        lines.append(f"| {row} | {summary([r['valid_ppl'] for r in runs])} | {summary(test)} | "
                     f"{'' if full is None else f'{diffs[row]:+.2f}'} | {runs[0]['params']:,} | "
                     f"{sum(r['wall_s'] for r in runs)} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = [r for r in diffs if r != "full"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh(rows, [diffs[r] for r in rows], color=["#c44" if diffs[r] > 0 else "#48a"
                                                   for r in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("test perplexity minus the full model's (higher: the technique helps)")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_bin")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all)")
    p.add_argument("--seeds", default="141", help="comma-separated seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one GPU each, if several)")
    p.add_argument("--recipe", choices=RECIPES, help="the README's base flags")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    base = argv[split + 1:] or (shlex.split(RECIPES[args.recipe]) if args.recipe else [])
    if not base:
        fail("give the base recipe: --recipe ptb|wt2, or -- followed by fairseq-train's flags")
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        fail(f"unknown row {', '.join(unknown)}: the rows are {', '.join(ROWS)}")
    if not (Path(args.data_bin) / "test.bin").exists():
        fail(f"no test split in {args.data_bin}: the table reports test perplexity; "
             "run fairseq-preprocess with --testpref")
    seeds = [int(s) for s in args.seeds.split(",")]
    flags = {row: row_flags(base, row) for row in rows}  # every row checked before any runs
    import torch
    gpus = torch.cuda.device_count() if "--cpu" not in base else 0
    runs = [(row, seed) for row in rows for seed in seeds]
    results: Dict[str, List[Dict]] = {row: [] for row in rows}
    finished = threading.Lock()  # --jobs N: runs finish in threads; count them one at a time

    def one(i):
        row, seed = runs[i]
        outcome = run_one(args.data_bin, args.out / row / f"seed{seed}", flags[row], seed,
                          i % gpus if gpus > 1 else None)
        with finished:
            results[row].append(outcome)
            print(f"[{sum(map(len, results.values()))}/{len(runs)}] {row} seed {seed}: valid "
                  f"{outcome['valid_ppl']:.2f}, test {outcome['test_ppl']:.2f} "
                  f"({outcome['wall_s']} s)", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, range(len(runs))))
    write_table(args.out, results, seeds)
    print(f"table: {args.out / 'ablation.md'}, chart: {args.out / 'ablation.png'}")


if __name__ == "__main__":
    main()
