"""Validation perplexity per epoch from fairseq-train logs, NT-ASGD's switch marked.

    python scripts/plot_learning_curve.py runs/a/train.log runs/b/train.log -o curve.png

Each log is one line of the plot, labelled by its folder name (or --labels); a
dashed vertical line marks the epoch at which NT-ASGD switched to averaging.
"""
import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

VALID = re.compile(r"epoch (\d+) \| valid on '[^']+' subset \| .*?\| ppl ([\d.]+)")
SWITCH = "NT-ASGD: switching to averaged SGD"


def read_log(path):
    """(epochs, perplexities, switch epoch or None); the last validation of each epoch.
    NT-ASGD logs its switch after the validation that triggered it."""
    per_epoch, last, switch = {}, None, None
    for line in Path(path).read_text().splitlines():
        if m := VALID.search(line):
            last = int(m.group(1))
            per_epoch[last] = float(m.group(2))
        elif SWITCH in line:
            switch = last
    epochs = sorted(per_epoch)
    return epochs, [per_epoch[e] for e in epochs], switch


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+")
    p.add_argument("--labels", nargs="+")
    p.add_argument("-o", "--output", default="learning_curve.png")
    p.add_argument("--title", default="validation perplexity")
    args = p.parse_args()
    labels = args.labels or [Path(log).parent.name for log in args.logs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for log, label in zip(args.logs, labels):
        epochs, ppl, switch = read_log(log)
        (line,) = ax.plot(epochs, ppl, marker="o", markersize=3, label=label)
        if switch is not None:
            ax.axvline(switch, color=line.get_color(), linestyle="--", linewidth=1)
            ax.annotate("NT-ASGD averages", (switch, max(ppl)), rotation=90, fontsize=8,
                        color=line.get_color(), xytext=(3, 0), textcoords="offset points",
                        va="top")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation perplexity")
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(ScalarFormatter())  # perplexities as plain numbers on the log scale
    ax.set_title(args.title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
