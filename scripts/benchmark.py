"""Training and evaluation speed of awd_lstm against fairseq's own lstm_lm.

One run, one table (and JSON): training tokens/s of awd_lstm (weight drop 0.5 and
0) and of lstm_lm of the same sizes, interleaved step by step so that machine noise
hits all alike (the ratios are the figures to read); evaluation tokens/s as
fairseq-eval-lm runs it (awd_lstm: one row carrying its state; lstm_lm: blocks);
peak memory of each, from a short run in its own process (on a CPU: the peak
resident memory above what the imports took). On a CUDA GPU also
awd_lstm with AMP (fp16 autocast and a GradScaler).

Then the real thing beside the bare loop: `fairseq-train` (variable_bptt_lm,
ar_tar_cross_entropy, nt_asgd) on random text of the same vocabulary, its own
tokens/s (`wps`) over --steps updates after as many for warm-up, and
`fairseq-eval-lm` scoring one stream (batch 1). fairseq_train_over_bare_loop is
what fairseq and the plugins' per-update work cost; `--size tiny` makes the
kernels cheap, so that this overhead is most of what is timed.

    OMP_NUM_THREADS=2 python scripts/benchmark.py --size small --steps 20

`--vocab N` measures the split softmax (split_softmax.py, --softmax-cutoffs auto)
against the full one instead: awd_lstm's training tokens/s, interleaved as above,
and peak memory over N words, the tokens drawn from a Zipf distribution (word r
with probability proportional to 1/r, as a corpus's frequency-sorted dictionary):

    OMP_NUM_THREADS=2 python scripts/benchmark.py --size ptb --vocab 267735 --steps 5

`--mos` measures awd_lstm_mos against awd_lstm the same way (at `--size ptb` each
one's Penn Treebank model):

    OMP_NUM_THREADS=2 python scripts/benchmark.py --size ptb --mos --steps 5
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F
from fairseq.data import Dictionary
from fairseq.models.lstm_lm import LSTMLanguageModel, base_architecture
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_awd.ar_tar_criterion import ARTARCrossEntropyCriterion
from fairseq_awd.awd_lstm import AWDLSTMConfig, AWDLSTMDecoder, AWDLSTMModel
from fairseq_awd.awd_lstm_mos import AWDLSTMMoSConfig, AWDLSTMMoSDecoder, AWDLSTMMoSModel
from fairseq_awd.cache_pointer import CachePointer
from fairseq_awd.evaluation import DynamicEvalSettings, EvalLM
from fairseq_awd.split_softmax import parse_cutoffs
from fairseq_awd.stream import Stream

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cache_oracle import one_hot_loop, per_token_cache  # noqa: E402  (the tests' oracle)

REFERENCE_POINTER_BPTT = 5000  # the eval window of the reference's pointer.py
SIZES = {  # embedding, hidden, vocabulary
    "tiny": (32, 64, 10000),
    "small": (200, 400, 10000),
    "ptb": (400, 1150, 10000),
    "wt103": (400, 2500, 267735),  # the WikiText-103 recipe's, for --vocab
}
LAYERS = {"wt103": 4}  # 3 for the others


def awd_settings(name, args):
    return {"awd_lstm wd0.5": {}, "awd_lstm wd0": {"weight_drop": 0.0},
            "full softmax": {"softmax_cutoffs": "none"},
            "split softmax": {"softmax_cutoffs": args.softmax_cutoffs}}[name]


def vocabulary(args):
    return args.vocab or SIZES[args.size][2]


def training_tokens(args, vocab):
    """(batch, bptt + 1) words: uniform, or with --vocab Zipf-distributed."""
    shape = (args.batch_size, args.bptt + 1)
    if not args.vocab:
        return torch.randint(4, vocab, shape, device=args.device)
    rank = torch.arange(1, vocab - 4 + 1, dtype=torch.float64)
    words = torch.multinomial(1 / rank, shape[0] * shape[1], replacement=True) + 4
    return words.view(shape).to(args.device)


def task_for(vocab):
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    return LanguageModelingTask(LanguageModelingConfig(), d, d)


def build(name, args, task):
    """A model and its loss function (tokens, targets) -> mean loss."""
    embed, hidden, _ = SIZES[args.size]
    if name == "lstm_lm":
        args = Namespace(decoder_embed_dim=embed, decoder_hidden_size=hidden, decoder_layers=3,
                         decoder_out_embed_dim=embed, share_decoder_input_output_embed=True,
                         dropout=0.4, criterion="cross_entropy", max_target_positions=None)
        base_architecture(args)
        model = LSTMLanguageModel.build_model(args, task)

        def loss(tokens, target):
            logits = model(tokens)[0]
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))
        return model, loss
    if name == "awd_lstm_mos":  # at --size ptb its own PTB model (emb 280, nhid 960, 620)
        mos = {} if args.size == "ptb" else dict(
            decoder_embed_dim=embed, decoder_hidden_size=hidden, decoder_last_hidden_size=embed)
        model = AWDLSTMMoSModel(AWDLSTMMoSDecoder(AWDLSTMMoSConfig(**mos), task.dictionary))
    else:
        cfg = AWDLSTMConfig(decoder_embed_dim=embed, decoder_hidden_size=hidden,
                            decoder_layers=LAYERS.get(args.size, 3), **awd_settings(name, args))
        model = AWDLSTMModel(AWDLSTMDecoder(cfg, task.dictionary))
    crit = ARTARCrossEntropyCriterion(task, ar_alpha=2.0, tar_beta=1.0)

    def loss(tokens, target):
        sample = {"net_input": {"src_tokens": tokens}, "target": target,
                  "ntokens": target.numel()}
        total, sample_size, _ = crit(model, sample)
        return total / sample_size
    return model, loss


class Trainer:
    def __init__(self, name, args, task):
        self.amp = name.endswith("amp")
        self.model, self.loss = build(name.replace(" amp", ""), args, task)
        self.model.to(args.device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=30, weight_decay=1.2e-6)
        self.scaler = torch.amp.GradScaler(args.device, enabled=self.amp)
        self.device = args.device

    def step(self, tokens):
        self.opt.zero_grad()
        with torch.autocast(self.device, dtype=torch.float16, enabled=self.amp):
            loss = self.loss(tokens[:, :-1], tokens[:, 1:])
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.25)
        self.scaler.step(self.opt)
        self.scaler.update()

    @torch.no_grad()
    def evaluate(self, stream, bptt):
        """fairseq-eval-lm's work: the stream in windows, one row."""
        self.model.eval()
        for offset in range(0, stream.size(1) - 1, bptt):
            window = stream[:, offset : offset + bptt]
            if isinstance(self.model, AWDLSTMModel):
                self.model(window, stream=Stream("bench", offset))
            else:
                self.model(window)
        self.model.train()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def configs(device):
    names = ["awd_lstm wd0.5", "awd_lstm wd0", "lstm_lm"]
    return names + ["awd_lstm wd0.5 amp"] if device == "cuda" else names


def peak_memory_mb(args, name):
    """Peak memory of 3 training steps of one model, in a process of its own. On the
    CPU, glibc returns a freed block to the system only above a threshold that it
    raises (up to 32 MB) as large blocks are freed; below it the block stays resident,
    and the peak would count what the allocator kept as well as what the model held.
    A fixed threshold makes the resident peak the live one, as CUDA's
    max_memory_allocated is."""
    out = subprocess.run(
        [sys.executable, __file__, "--size", args.size, "--batch-size", str(args.batch_size),
         "--bptt", str(args.bptt), "--device", args.device, "--vocab", str(args.vocab),
         "--softmax-cutoffs", args.softmax_cutoffs, *(["--mos"] if args.mos else []),
         "--memory-of", name],
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def status_mb(field):
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, Linux."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def memory_of(args, name):
    """CPU: peak resident memory above what the imports left (model, activations, grads)."""
    if args.device == "cpu":
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak: the imports' own peak would hide a small model
        before = status_mb("VmRSS")
    task = task_for(vocabulary(args))
    trainer = Trainer(name, args, task)
    tokens = training_tokens(args, len(task.dictionary))
    for _ in range(3):
        trainer.step(tokens)
    if args.device == "cuda":
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(status_mb("VmHWM") - before)


def fairseq_commands(args, workdir: Path):
    """fairseq-train's and fairseq-eval-lm's tokens/s, with and without AMP on a GPU."""
    embed, hidden, vocab = SIZES[args.size]
    rng = random.Random(0)
    words = [f"w{i}" for i in range(vocab - 4)]  # + fairseq's 4 special symbols

    def write(name, tokens):
        lines = (" ".join(rng.choices(words, k=19)) for _ in range(tokens // 20))
        (workdir / name).write_text("\n".join(lines) + "\n")
    write("train.txt", args.batch_size * args.bptt * (2 * args.steps + 10))
    write("valid.txt", 20 * args.bptt)
    write("test.txt", args.eval_tokens)
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--only-source",
                    "--trainpref", "train.txt", "--validpref", "valid.txt", "--testpref",
                    "test.txt", "--destdir", "bin", "--workers", "2"], cwd=workdir, check=True,
                   capture_output=True)
    user_dir = str(Path(__file__).resolve().parents[1] / "fairseq_awd")
    cpu = ["--cpu"] if args.device == "cpu" else []
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
    rows = []
    for amp in ([[]] if cpu else [[], ["--amp"]]):
        save_dir = workdir / f"ck{len(rows)}"
        out = subprocess.run(
            [sys.executable, "-m", "fairseq_cli.train", "bin", "--user-dir", user_dir, *cpu,
             *amp, "--task", "variable_bptt_lm", "--bptt", str(args.bptt), "--batch-size",
             str(args.batch_size), "--arch", "awd_lstm", "--decoder-embed-dim", str(embed),
             "--decoder-hidden-size", str(hidden), "--criterion", "ar_tar_cross_entropy",
             "--optimizer", "nt_asgd", "--lr", "30", "--clip-norm", "0.25", "--weight-decay",
             "1.2e-6", "--max-update", str(2 * args.steps), "--log-interval", str(args.steps),
             "--log-format", "simple", "--save-dir", str(save_dir), "--no-epoch-checkpoints"],
            cwd=workdir, env=env, check=True, capture_output=True, text=True)
        # fairseq's wps over the second --log-interval: the updates after the warm-up
        wps = float(re.findall(r"train_inner .*wps=([\d.]+)", out.stderr + out.stdout)[-1])
        out = subprocess.run(
            [sys.executable, "-m", "fairseq_cli.eval_lm", "bin", "--user-dir", user_dir, *cpu,
             "--task", "variable_bptt_lm", "--bptt", str(args.bptt), "--path",
             str(save_dir / "checkpoint_last.pt")],
            cwd=workdir, env=env, check=True, capture_output=True, text=True)
        eval_tps = float(re.search(r"\(([\d.]+) tokens/s\)", out.stderr + out.stdout).group(1))
        rows.append({"model": "fairseq-train" + (" amp" if amp else ""),
                     "train_tokens_per_s": round(wps), "eval_tokens_per_s": round(eval_tps),
                     "peak_memory_mb": None})
    return rows


@torch.no_grad()
def evaluation_extras_speed(args, task, window=3785, theta=0.6625, lam=0.1137):
    """The cache pointer's own work on one stream, tokens/s, from the same model
    outputs: the package's (one masked matrix product per eval window, over the
    windows past the first `window` + 1 positions, where every position uses the
    cache; the windows before fill it untimed), in eval windows of --bptt and of
    the reference pointer.py's 5000, against the reference's one-hot loop (on
    --eval-tokens // 20 positions past the window) and the indexed per-token loop;
    and dynamic evaluation's tokens/s, model included (windows of 5, a step after
    each, after the gradient statistics of 20 batches of 100 rows)."""
    embed, hidden, _ = SIZES[args.size]
    model = AWDLSTMModel(AWDLSTMDecoder(AWDLSTMConfig(decoder_embed_dim=embed,
                                                      decoder_hidden_size=hidden),
                                        task.dictionary)).to(args.device).eval()
    tokens = torch.randint(4, 400, (args.eval_tokens,), device=args.device)  # repeats
    logits, extra = model(tokens[None, :-1])
    lprobs, h, n = logits[0].log_softmax(-1), extra["raw_out"][0], len(tokens) - 1
    host_tokens = tokens.cpu()  # where fairseq-eval-lm's model hands them to the cache
    # only a short test run (--eval-tokens) shrinks the window and the eval windows
    window = min(window, n // 3)

    def package(eval_bptt):
        eval_bptt = min(eval_bptt, n // 3)
        cache = CachePointer(window, theta, lam)

        def run(offsets):
            for offset in offsets:
                end = min(offset + eval_bptt, n)
                cache.log_probs(lprobs[offset:end], h[offset:end], host_tokens[offset:end])
        offsets = range(0, n, eval_bptt)
        run([o for o in offsets if o <= window])
        timed_offsets = [o for o in offsets if o > window]
        return round((n - timed_offsets[0]) / timed(lambda: run(timed_offsets), args.device))
    probs = lprobs.exp()
    positions = range(window + 1, n)[: max(args.eval_tokens // 20, 1)]
    speeds = {"cache_window": window,
              "cache_pointer_tokens_per_s": package(args.bptt),
              "cache_pointer_reference_windows_tokens_per_s": package(REFERENCE_POINTER_BPTT),
              "one_hot_loop_tokens_per_s": round(len(positions) / timed(
                  lambda: one_hot_loop(probs, h, tokens, window, theta, lam, positions),
                  args.device)),
              "per_token_loop_tokens_per_s": round(n / timed(
                  lambda: per_token_cache(probs, h, tokens, window, theta, lam), args.device))}
    train = torch.randint(4, 400, (100, 20 * 5 + 1), device=args.device)
    dynamic = EvalLM(model, dynamic=DynamicEvalSettings(5e-5, 0.002, 2e-5, [
        (train[:, i : i + 5], train[:, i + 1 : i + 6]) for i in range(0, 100, 5)]))

    def dynamic_eval():
        for offset in range(0, n, 5):
            src = tokens[offset : offset + 5][: n - offset]
            target = tokens[offset + 1 : offset + 1 + len(src)]
            dynamic(src[None], stream=Stream("bench-dyn", offset), target=target[None])
    speeds["dynamic_eval_tokens_per_s"] = round(n / timed(dynamic_eval, args.device))
    return speeds


def interleaved_train_speed(args, trainers, tokens):
    """Each trainer's training tokens/s: the median step, the trainers taking turns."""
    times = {name: [] for name in trainers}
    for i in range(args.steps + 2):
        for name, trainer in trainers.items():
            seconds = timed(lambda: trainer.step(tokens), args.device)
            if i >= 2:  # the first steps warm up allocators and kernels
                times[name].append(seconds)
    return {name: tokens[:, 1:].numel() / statistics.median(t) for name, t in times.items()}


def pair_comparison(args, names, about):
    """--vocab, --mos: two awd_lstm variants' training tokens/s (interleaved) and peak
    memory (each in its own process), and their ratios; `about` describes the setting."""
    task = task_for(vocabulary(args))
    trainers = {name: Trainer(name, args, task) for name in names}
    tokens = training_tokens(args, len(task.dictionary))
    speed = interleaved_train_speed(args, trainers, tokens)
    rows = [{"model": name, "train_tokens_per_s": round(speed[name]),
             "peak_memory_mb": round(peak_memory_mb(args, name)),
             "parameters": sum(p.numel() for p in trainers[name].model.parameters())}
            for name in names]
    first, second = rows
    key = f"{names[1]}_over_{names[0]}".replace(" ", "_")
    ratios = {f"{key}_train": round(second["train_tokens_per_s"]
                                    / first["train_tokens_per_s"], 3),
              f"{key}_peak_memory": round(second["peak_memory_mb"]
                                          / first["peak_memory_mb"], 3)}
    print(f"device {args.device}, {about}, batch {args.batch_size}, bptt {args.bptt}, "
          f"{args.steps} timed steps")
    print(f"{'':14s} {'train tok/s':>12s} {'peak MB':>8s} {'parameters':>11s}")
    for r in rows:
        print(f"{r['model']:14s} {r['train_tokens_per_s']:12d} {r['peak_memory_mb']:8d} "
              f"{r['parameters']:11,d}")
    for k, v in ratios.items():
        print(f"{k:48s} {v}")
    with open(args.json, "w") as f:
        json.dump({"settings": vars(args), "rows": rows, "ratios": ratios}, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--bptt", type=int, default=70)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-tokens", type=int, default=20000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="benchmark.json")
    p.add_argument("--vocab", type=int, default=0,
                   help="the split softmax against the full one over this many words")
    p.add_argument("--softmax-cutoffs", default="auto", help="the split's, as awd_lstm's flag")
    p.add_argument("--mos", action="store_true",
                   help="awd_lstm_mos against awd_lstm (at --size ptb: each one's PTB model)")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        return memory_of(args, args.memory_of)
    embed, hidden, _ = SIZES[args.size]
    if args.vocab:
        cutoffs = parse_cutoffs(args.softmax_cutoffs, args.vocab)
        return pair_comparison(args, ("full softmax", "split softmax"), (
            f"awd_lstm {embed}/{hidden} x {LAYERS.get(args.size, 3)} layers, vocabulary "
            f"{args.vocab:,} (Zipf), cutoffs {cutoffs}"))
    if args.mos:
        mos = "280/960/620, 15 experts" if args.size == "ptb" else f"{embed}/{hidden}/{embed}"
        return pair_comparison(args, ("awd_lstm wd0.5", "awd_lstm_mos"), (
            f"awd_lstm {embed}/{hidden}, awd_lstm_mos {mos}, vocabulary "
            f"{SIZES[args.size][2]:,}"))

    task = task_for(SIZES[args.size][2])
    vocab = len(task.dictionary)
    trainers = {name: Trainer(name, args, task) for name in configs(args.device)}
    tokens = training_tokens(args, vocab)
    speed = interleaved_train_speed(args, trainers, tokens)
    stream = torch.randint(4, vocab, (1, args.eval_tokens), device=args.device)
    rows = []
    for name, trainer in trainers.items():
        eval_tps = (args.eval_tokens - 1) / timed(lambda: trainer.evaluate(stream, args.bptt),
                                                  args.device)
        rows.append({"model": name, "train_tokens_per_s": round(speed[name]),
                     "eval_tokens_per_s": round(eval_tps),
                     "peak_memory_mb": round(peak_memory_mb(args, name))})
    with tempfile.TemporaryDirectory() as workdir:
        rows += fairseq_commands(args, Path(workdir))
    # the table now: a failure in the evaluation extras must not lose it
    print(f"device {args.device}, size {args.size} {SIZES[args.size]}, batch {args.batch_size}, "
          f"bptt {args.bptt}, {args.steps} timed steps")
    print(f"{'model':22s} {'train tok/s':>12s} {'eval tok/s':>11s} {'peak MB':>8s}")
    for r in rows:
        peak = "-" if r["peak_memory_mb"] is None else r["peak_memory_mb"]
        print(f"{r['model']:22s} {r['train_tokens_per_s']:12d} {r['eval_tokens_per_s']:11d} "
              f"{peak:>8}", flush=True)
    cache = evaluation_extras_speed(args, task)
    by = {r["model"]: r for r in rows}
    ratios = {
        "awd_lstm_over_lstm_lm_train": by["awd_lstm wd0.5"]["train_tokens_per_s"]
        / by["lstm_lm"]["train_tokens_per_s"],
        "weight_drop_0.5_over_0_train": by["awd_lstm wd0.5"]["train_tokens_per_s"]
        / by["awd_lstm wd0"]["train_tokens_per_s"],
        "awd_lstm_over_lstm_lm_eval": by["awd_lstm wd0.5"]["eval_tokens_per_s"]
        / by["lstm_lm"]["eval_tokens_per_s"],
    }
    ratios["fairseq_train_over_bare_loop"] = (by["fairseq-train"]["train_tokens_per_s"]
                                              / by["awd_lstm wd0.5"]["train_tokens_per_s"])
    if "awd_lstm wd0.5 amp" in by:
        ratios["amp_over_fp32_train"] = (by["awd_lstm wd0.5 amp"]["train_tokens_per_s"]
                                         / by["awd_lstm wd0.5"]["train_tokens_per_s"])
    if "fairseq-train amp" in by:
        ratios["fairseq_train_amp_over_bare_loop_amp"] = (
            by["fairseq-train amp"]["train_tokens_per_s"]
            / by["awd_lstm wd0.5 amp"]["train_tokens_per_s"])
    ratios["cache_pointer_over_per_token_loop"] = (cache["cache_pointer_tokens_per_s"]
                                                   / cache["one_hot_loop_tokens_per_s"])
    ratios["cache_pointer_reference_windows_over_per_token_loop"] = (
        cache["cache_pointer_reference_windows_tokens_per_s"]
        / cache["one_hot_loop_tokens_per_s"])
    ratios["cache_pointer_over_indexed_loop"] = (cache["cache_pointer_tokens_per_s"]
                                                 / cache["per_token_loop_tokens_per_s"])
    ratios = {k: round(v, 3) for k, v in ratios.items()}

    print(f"cache pointer (window {cache['cache_window']}), one stream: "
          f"{cache['cache_pointer_tokens_per_s']} tokens/s in eval windows of {args.bptt}, "
          f"{cache['cache_pointer_reference_windows_tokens_per_s']} in the reference's "
          f"{REFERENCE_POINTER_BPTT}; the reference's one-hot loop: "
          f"{cache['one_hot_loop_tokens_per_s']}; "
          f"an indexed per-token loop: {cache['per_token_loop_tokens_per_s']}; dynamic "
          f"evaluation: {cache['dynamic_eval_tokens_per_s']} tokens/s")
    for k, v in ratios.items():
        print(f"{k:36s} {v}")
    with open(args.json, "w") as f:
        json.dump({"settings": vars(args), "rows": rows, "evaluation": cache,
                   "ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
