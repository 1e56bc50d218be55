"""Grid search of the cache pointer's theta and lambda on the validation split, as
the reference tunes them: one fairseq-eval-lm per pair, a table, the best pair.

    python scripts/tune_cache.py DATA_BIN CHECKPOINT --window 3785 \
        [--thetas 0.4,0.6,0.8,1.0] [--lambdas 0.05,0.1,0.15,0.2] [-- <eval-lm flags>]

Each pair is a full scoring of the split (its cost: one eval-lm run); a progress
line per pair. Then test with the best pair: fairseq-eval-lm ... --cache-window W
--cache-theta T --cache-lambda L.
"""
import argparse
import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

USER_DIR = str(Path(__file__).resolve().parents[1] / "fairseq_awd")


def floats(text):
    return [float(x) for x in text.split(",")]


def perplexity(args, theta, lam):
    cmd = [sys.executable, "-m", "fairseq_cli.eval_lm", args.data_bin, "--user-dir", USER_DIR,
           "--task", "variable_bptt_lm", "--path", args.checkpoint, "--gen-subset",
           args.subset, "--cache-window", str(args.window), "--cache-theta", str(theta),
           "--cache-lambda", str(lam), *args.eval_lm_flags]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr.strip().splitlines()[-1])  # eval-lm's own one-line error
    return float(re.search(r"Perplexity: ([\d.]+)", out.stdout + out.stderr).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_bin")
    p.add_argument("checkpoint")
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--thetas", type=floats, default=floats("0.4,0.6,0.8,1.0"))
    p.add_argument("--lambdas", type=floats, default=floats("0.05,0.1,0.15,0.2"))
    p.add_argument("--subset", default="valid")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    args.eval_lm_flags = argv[split + 1:]
    pairs = list(itertools.product(args.thetas, args.lambdas))
    start, results = time.time(), {}
    for i, (theta, lam) in enumerate(pairs, 1):
        results[theta, lam] = perplexity(args, theta, lam)
        eta = (time.time() - start) / i * (len(pairs) - i)
        print(f"[{i}/{len(pairs)}] theta {theta} lambda {lam}: perplexity "
              f"{results[theta, lam]:.2f} (about {eta:.0f} s left)", flush=True)
    print(f"\n{args.subset} perplexity, window {args.window} (rows: theta, columns: lambda)")
    print("theta \\ lambda " + "".join(f"{lam:>10}" for lam in args.lambdas))
    for theta in args.thetas:
        print(f"{theta:<15}" + "".join(f"{results[theta, lam]:10.2f}" for lam in args.lambdas))
    best = min(results, key=results.get)
    print(f"best: --cache-theta {best[0]} --cache-lambda {best[1]} "
          f"({args.subset} perplexity {results[best]:.2f})")


if __name__ == "__main__":
    main()
