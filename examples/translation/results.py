"""The tables of examples/translation/run.sh from its run folder.

    python examples/translation/results.py OUT --best PREFIX     # the tuned setting's name
    python examples/translation/results.py OUT --final NAME ...  # the tables, markdown

A run is OUT/NAME.sSEED.{train.log,hyp,valid.hyp}; one without its .hyp yet is left
out. BLEU and chrF: sacrebleu on the detokenized hypotheses against the raw
references, of the test split (.hyp) and the validation split (.valid.hyp, what the
settings are tuned by).
"""
import argparse
import re
import statistics
from pathlib import Path

import sacrebleu

DATA = Path(__file__).resolve().parents[2] / "data" / "tatoeba-de-en"


def bleu_chrf(hyp_file: Path, split: str):
    hyps = hyp_file.read_text(encoding="utf-8").splitlines()
    refs = (DATA / f"{split}.en").read_text(encoding="utf-8").splitlines()[: len(hyps)]
    return sacrebleu.corpus_bleu(hyps, [refs]).score, sacrebleu.corpus_chrf(hyps, [refs]).score


def read_run(out: Path, run: str) -> dict:
    log = (out / f"{run}.train.log").read_text()
    valid = [(int(e), float(loss)) for e, loss in re.findall(
        r"\| valid \| epoch (\d+) \| .*?\| loss ([\d.]+) \|", log)]
    best_epoch, best_loss = min(valid, key=lambda v: v[1])
    bleu, chrf = bleu_chrf(out / f"{run}.hyp", "test")
    valid_hyps = out / f"{run}.valid.hyp"
    return {
        "valid_loss": best_loss, "best_epoch": best_epoch, "epochs": len(valid),
        "wall_min": float(re.search(r"done training in ([\d.]+) seconds", log)[1]) / 60,
        "wps": statistics.median(float(w) for w in re.findall(r"\| train \| .*? wps ([\d.]+)", log)),
        "params": int(re.search(r"num\. shared model params: ([\d,]+)", log)[1].replace(",", "")),
        "bleu": bleu, "chrf": chrf,
        "valid_bleu": bleu_chrf(valid_hyps, "valid")[0] if valid_hyps.exists() else None,
    }


def runs(out: Path, prefix: str = "") -> dict:
    """The finished runs (scored: a .hyp file) of OUT whose names start with prefix."""
    names = sorted(p.name[: -len(".hyp")] for p in out.glob(f"{prefix}*.hyp")
                   if not p.name.endswith(".valid.hyp"))
    return {name: read_run(out, name) for name in names}


def spread(values, digits=2):
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{statistics.mean(values):,.{digits}f} ± {statistics.stdev(values):,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--best", metavar="PREFIX",
                        help="print the setting of the run with the highest validation "
                             "BLEU among those named PREFIX... (run.sh asks after the first "
                             "seed's runs)")
    parser.add_argument("--final", nargs="+", metavar="NAME", help="the settings to report")
    args = parser.parse_args()
    if args.best:
        scored = {n: r["valid_bleu"] for n, r in runs(args.out, args.best).items()
                  if r["valid_bleu"] is not None}
        print(max(scored, key=scored.get).rsplit(".s", 1)[0])
        return
    every = runs(args.out)
    print("Every run (validation loss: label-smoothed, of the best epoch, whose checkpoint "
          "is scored):\n")
    print("| run | valid loss | best epoch | epochs | valid BLEU | BLEU | chrF | wall min | "
          "tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in every.items():
        valid_bleu = "" if r["valid_bleu"] is None else f"{r['valid_bleu']:.2f}"
        print(f"| {name} | {r['valid_loss']:.3f} | {r['best_epoch']} | {r['epochs']} | "
              f"{valid_bleu} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
              f"{r['wall_min']:.1f} | {r['wps']:,.0f} |")
    print("\nThe tuned settings over their seeds (mean ± sd):\n")
    print("| setting | seeds | BLEU | chrF | epochs | wall min | train tokens/s | parameters |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for setting in args.final or []:
        rs = [r for name, r in every.items() if name.rsplit(".s", 1)[0] == setting]
        col = {k: [r[k] for r in rs] for k in rs[0]}
        print(f"| {setting} | {len(rs)} | {spread(col['bleu'])} | {spread(col['chrf'])} | "
              f"{spread(col['epochs'], 1)} | {spread(col['wall_min'], 1)} | "
              f"{spread(col['wps'], 0)} | {col['params'][0]:,} |")


if __name__ == "__main__":
    main()
