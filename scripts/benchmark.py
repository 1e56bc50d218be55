"""Training speed of awd_lstm: weight drop 0.5 against weight drop 0, same model.

Both settings are timed in one run, alternating step by step, so that machine
noise hits both alike; the figure that matters is the ratio. Prints one table
and writes it as JSON.

    OMP_NUM_THREADS=2 python scripts/benchmark.py --size small --steps 20
"""
import argparse
import json
import statistics
import time

import torch
from fairseq.data import Dictionary
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel

SIZES = {  # embedding, hidden, vocabulary
    "small": (200, 400, 10000),
    "ptb": (400, 1150, 10000),
}


def build(weight_drop, embed, hidden, vocab, device):
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    cfg = AWDLSTMConfig(decoder_embed_dim=embed, decoder_hidden_size=hidden,
                        weight_drop=weight_drop)
    model = AWDLSTMModel(AWDLSTMDecoder(cfg, d)).to(device).train()
    task = LanguageModelingTask(LanguageModelingConfig(), d, d)
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0)
    return model, crit, torch.optim.SGD(model.parameters(), lr=30, weight_decay=1.2e-6)


def step(model, crit, opt, sample, device):
    opt.zero_grad()
    loss, sample_size, _ = crit(model, sample)
    (loss / sample_size).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    opt.step()
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="benchmark.json")
    args = p.parse_args()

    embed, hidden, vocab = SIZES[args.size]
    runs = {wd: build(wd, embed, hidden, vocab, args.device) for wd in (0.0, 0.5)}
    tokens = torch.randint(4, vocab, (args.batch_size, args.bptt + 1), device=args.device)
    sample = {"net_input": {"src_tokens": tokens[:, :-1]}, "target": tokens[:, 1:],
              "ntokens": tokens[:, 1:].numel()}
    times = {wd: [] for wd in runs}
    for i in range(args.steps + 2):
        for wd, run in runs.items():
            start = time.perf_counter()
            step(*run, sample, args.device)
            if i >= 2:  # the first steps warm up allocators and kernels
                times[wd].append(time.perf_counter() - start)

    tps = {wd: sample["ntokens"] / statistics.median(t) for wd, t in times.items()}
    result = {
        "device": args.device, "size": args.size, "batch_size": args.batch_size,
        "bptt": args.bptt, "steps": args.steps,
        "train_tokens_per_s_weight_drop_0": round(tps[0.0]),
        "train_tokens_per_s_weight_drop_0.5": round(tps[0.5]),
        "ratio_weight_drop_0.5_over_0": round(tps[0.5] / tps[0.0], 3),
    }
    for k, v in result.items():
        print(f"{k:40s} {v}")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
