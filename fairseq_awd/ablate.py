"""fairseq-awd-ablate: the paper's model analysis (Merity et al. 2017, section 6,
table 4) on your corpus: the full model, then one technique removed per row.

    fairseq-awd-ablate DATA_BIN --out DIR [--rows a,b] [--seeds 141,1882] [--jobs N] \
        (--recipe ptb|wt2 | -- <fairseq-train flags of the base recipe>)

Each row and seed is an ordinary fairseq-train + fairseq-eval-lm run in
DIR/ROW/seedS (its command in command.sh there), so the table resumes: a finished
run (result.json) is skipped, an interrupted one continues from its
checkpoint_last.pt. DIR/ablation.md holds the table (mean ± sd over the seeds, each
difference within the seed spread marked), DIR/ablation.png the differences from
the full model with the spread as error bars (it needs matplotlib). With `--task
translation` in the base flags the rows are scored by fairseq-generate's test BLEU
(`--generate-args`) instead of perplexity, and the rows that need the
language-model task are left out.
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
    # every regulariser off: for translation, fairseq's `lstm` architecture
    "no-regularisation": ({"--criterion": "ar_tar_cross_entropy"},
                          ["--weight-drop", "0", "--embed-dropout", "0", "--input-dropout", "0",
                           "--hidden-dropout", "0", "--dropout", "0", "--ar-alpha", "0",
                           "--tar-beta", "0"], []),
}
# what a translation row is scored by, unless --generate-args says otherwise
GENERATE = "--beam 5 --batch-size 128 --scoring sacrebleu"


def value_of(flags: List[str], name: str):
    return flags[flags.index(name) + 1] if name in flags else None


def applies(base: List[str], row: str) -> bool:
    return all(value_of(base, flag) == value for flag, value in ROWS[row][0].items())


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


def evaluation(data_bin: str, checkpoint: Path, flags: List[str], generate: List[str]):
    """The test command of a run: fairseq-generate for translation, else eval-lm."""
    if value_of(flags, "--task") == "translation":
        command = ["fairseq-generate", data_bin, "--user-dir", USER_DIR, "--task",
                   "translation", "--path", str(checkpoint), *generate]
        for lang in ("-s", "--source-lang", "-t", "--target-lang"):
            if lang in flags:
                command += [lang, value_of(flags, lang)]
    else:
        command = ["fairseq-eval-lm", data_bin, "--user-dir", USER_DIR, "--task",
                   "variable_bptt_lm", "--path", str(checkpoint)]
        if value_of(flags, "--bptt"):
            command += ["--bptt", value_of(flags, "--bptt")]
    return command + (["--cpu"] if "--cpu" in flags else [])


def run_one(data_bin: str, run_dir: Path, flags: List[str], seed: int, gpu=None,
            generate: List[str] = ()) -> Dict:
    """One row and seed: train (resuming from checkpoint_last.pt), then test."""
    result = run_dir / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    train = ["fairseq-train", data_bin, "--user-dir", USER_DIR, *flags, "--seed", str(seed),
             "--save-dir", str(run_dir)]
    evaluate = evaluation(data_bin, run_dir / "checkpoint_best.pt", flags, list(generate))
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
    test_log = (run_dir / "eval.log").read_text()
    bleu = re.findall(r"BLEU = ([\d.]+)", test_log)
    test = {"test_bleu": float(bleu[-1])} if bleu else {
        "test_ppl": float(re.findall(r"Perplexity: ([\d.]+)", test_log)[-1])}
    outcome = {"valid_ppl": min(valid), **test,
               "params": int(params[-1].replace(",", "")),
               "wall_s": round(time.time() - start)}
    result.write_text(json.dumps(outcome))
    return outcome


def summary(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def spread(values: List[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def can_plot() -> bool:
    """Checked before the first row: the chart needs matplotlib (the [plot] extra),
    the table does not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("fairseq-awd: matplotlib is not installed, so ablation.md will be written and "
              "ablation.png will not: pip install 'fairseq-awd[plot]' for the chart",
              file=sys.stderr, flush=True)
        return False
    return True


def write_table(out: Path, results: Dict[str, List[Dict]], seeds: List[int], plot: bool):
    metric = "test_bleu" if "test_bleu" in next(iter(results.values()))[0] else "test_ppl"
    name = metric.replace("_", " ").replace("bleu", "BLEU")
    tests = {row: [r[metric] for r in runs] for row, runs in results.items()}
    full = tests.get("full")
    if len(seeds) > 1:
        head = (f"Seeds {', '.join(map(str, seeds))} (mean ± standard deviation). A difference "
                "marked ~ lies within the seed spread (it is no larger than the two rows' "
                "standard deviations added): it may be noise.")
    else:
        head = (f"Seed {seeds[0]} alone: no seed spread was measured, so any difference may be "
                "noise (--seeds with several seeds measures it).")
    lines = [head, "", f"| row | validation ppl | {name} | test - full | parameters | "
             "wall time (s) |", "|---|---:|---:|---:|---:|---:|"]
    diffs, errors = {}, {}
    for row, runs in results.items():
        diff = ""
        if full is not None:
            diffs[row] = statistics.mean(tests[row]) - statistics.mean(full)
            errors[row] = spread(tests[row]) + spread(full)
            noise = row != "full" and len(seeds) > 1 and abs(diffs[row]) <= errors[row]
            diff = f"{diffs[row]:+.2f}{' ~' if noise else ''}"
        lines.append(f"| {row} | {summary([r['valid_ppl'] for r in runs])} | "
                     f"{summary(tests[row])} | {diff} | {runs[0]['params']:,} | "
                     f"{sum(r['wall_s'] for r in runs)} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    if not plot or full is None:
        return
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = [r for r in diffs if r != "full"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    helps = {r: diffs[r] > 0 if metric == "test_ppl" else diffs[r] < 0 for r in rows}
    ax.barh(rows, [diffs[r] for r in rows], xerr=[errors[r] for r in rows] if len(seeds) > 1
            else None, color=["#c44" if helps[r] else "#48a" for r in rows], capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{name} minus the full model's "
                  f"({'higher' if metric == 'test_ppl' else 'lower'}: the technique helps)"
                  + ("; bars: both rows' sd added" if len(seeds) > 1 else "; one seed"))
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_bin")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rows", help="comma-separated rows (default: every row the base allows)")
    p.add_argument("--seeds", default="141", help="comma-separated seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one GPU each, if several)")
    p.add_argument("--recipe", choices=RECIPES, help="the README's base flags")
    p.add_argument("--generate-args", default=GENERATE,
                   help="fairseq-generate's flags for a translation base (its BLEU is the score)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    base = argv[split + 1:] or (shlex.split(RECIPES[args.recipe]) if args.recipe else [])
    if not base:
        fail("give the base recipe: --recipe ptb|wt2, or -- followed by fairseq-train's flags")
    rows = args.rows.split(",") if args.rows else [r for r in ROWS if applies(base, r)]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        fail(f"unknown row {', '.join(unknown)}: the rows are {', '.join(ROWS)}")
    if not any(Path(args.data_bin).glob("test.*bin")):  # test.bin, test.de-en.de.bin
        fail(f"no test split in {args.data_bin}: the table reports test scores; "
             "run fairseq-preprocess with --testpref")
    seeds = [int(s) for s in args.seeds.split(",")]
    flags = {row: row_flags(base, row) for row in rows}  # every row checked before any runs
    plot = can_plot()
    import torch
    gpus = torch.cuda.device_count() if "--cpu" not in base else 0
    runs = [(row, seed) for row in rows for seed in seeds]
    results: Dict[str, List[Dict]] = {row: [] for row in rows}
    finished = threading.Lock()  # --jobs N: runs finish in threads; count them one at a time

    def one(i):
        row, seed = runs[i]
        outcome = run_one(args.data_bin, args.out / row / f"seed{seed}", flags[row], seed,
                          i % gpus if gpus > 1 else None, shlex.split(args.generate_args))
        with finished:
            results[row].append(outcome)
            test = outcome.get("test_bleu", outcome.get("test_ppl"))
            print(f"[{sum(map(len, results.values()))}/{len(runs)}] {row} seed {seed}: valid "
                  f"{outcome['valid_ppl']:.2f}, test {test:.2f} "
                  f"({outcome['wall_s']} s)", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, range(len(runs))))
    write_table(args.out, results, seeds, plot)
    print(f"table: {args.out / 'ablation.md'}" + (f", chart: {args.out / 'ablation.png'}"
                                                  if plot else ""))


if __name__ == "__main__":
    main()
