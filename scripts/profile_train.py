"""Where fairseq-train's time goes: the real command line under a profiler.

    python scripts/profile_train.py [--torch] [--skip 30] [--updates 20] -- DATA --user-dir fairseq_awd ...
    python scripts/profile_train.py --timeline trace.json.gz

Without --torch: Python's cProfile over the whole run, the functions that take the
most time per call tree (fairseq's trainer, the plugins, the logging), which is
where per-update overhead shows once the kernels are cheap (a tiny model, or a
GPU). With --torch: torch.profiler over --updates updates after --skip (start-up
and warm-up left out), the operators by their own time and, on a GPU, what the
GPU did per update: its busy time against the wall time, and each stretch where
it sat idle charged to the host operation it was waiting for (--trace keeps the
timeline for chrome://tracing or Perfetto; --timeline TRACE reads a kept one again,
on any machine).
"""
import argparse
import bisect
import collections
import cProfile
import gzip
import json
import os
import pstats
import sys
import tempfile

import torch
from fairseq import trainer
from fairseq_cli import train


def torch_profile(args):
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = torch.cuda.is_available() and "--cpu" not in sys.argv
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities, schedule=torch.profiler.schedule(
        wait=args.skip, warmup=2, active=args.updates, repeat=1))
    train_step = trainer.Trainer.train_step

    def stepped(self, *a, **kw):  # the profiler's step: one fairseq update
        out = train_step(self, *a, **kw)
        prof.step()
        return out
    trainer.Trainer.train_step = stepped
    with prof:
        train.cli_main()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=args.top))
        with tempfile.TemporaryDirectory() as tmp:
            trace = args.trace or os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(trace)
            gpu_timeline(trace, args.top)


def gpu_timeline(path, top):
    """Per update, from a chrome trace: the wall time, the time the GPU ran kernels
    or copies, and where it sat idle, charged to the host operation that launched the
    kernel it waited for (cuDNN's gaps between its per-step kernels included)."""
    with (gzip.open(path) if path.endswith(".gz") else open(path)) as f:
        events = json.load(f)["traceEvents"]
    steps = sorted((e for e in events if e.get("name", "").startswith("ProfilerStep")),
                   key=lambda e: e["ts"])
    start, end, n = steps[0]["ts"], steps[-1]["ts"] + steps[-1]["dur"], len(steps)
    gpu = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
                  and start <= e["ts"] < end), key=lambda e: e["ts"])
    launch = {e["args"]["correlation"]: e for e in events
              if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e["args"]}
    host = collections.defaultdict(list)  # the host's operations per thread, by start
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") in ("cpu_op", "user_annotation"):
            host[e["tid"]].append(e)
    starts = {tid: [e["ts"] for e in ops] for tid, ops in host.items()}

    def launcher(kernel):
        call = launch.get(kernel["args"].get("correlation"))
        if call is None:
            return "?", "?"
        ops = host[call["tid"]]
        i = bisect.bisect_right(starts[call["tid"]], call["ts"])
        names = [e["name"] for e in ops[:i] if e["ts"] + e["dur"] >= call["ts"]]
        phase = next((p for p in ("forward", "backward", "clip-grads", "multiply-grads",
                                  "optimizer") if p in names), "trainer")
        if any(x.startswith("autograd::") for x in names):
            phase = "backward"
        if any("cudnn_rnn" in x for x in names):
            return phase, "cuDNN LSTM"
        return phase, next((x for x in names if x.startswith("aten::")), names[-1] if names else "?")

    busy, frontier, idle, gaps = 0, start, collections.Counter(), collections.Counter()
    for k in gpu:
        if k["ts"] > frontier:
            key = launcher(k)
            idle[key] += k["ts"] - frontier
            gaps[key] += 1
        busy += max(0, k["ts"] + k["dur"] - max(k["ts"], frontier))
        frontier = max(frontier, k["ts"] + k["dur"])
    wall = end - start
    print(f"per update ({n}): wall {wall / n / 1e3:.2f} ms, GPU busy {busy / n / 1e3:.2f} ms "
          f"({100 * busy / wall:.0f}%), {len(gpu) / n:.0f} kernels and copies")
    phases = collections.Counter()
    for (phase, _), us in idle.items():
        phases[phase] += us
    print("GPU idle per update by phase: " + ", ".join(
        f"{phase} {us / n / 1e3:.2f} ms" for phase, us in phases.most_common()))
    print("GPU idle before a kernel, by the host operation that launched it:")
    print(f"{'ms/update':>10s} {'gaps/update':>12s}  phase / operation")
    for key, us in idle.most_common(top):
        print(f"{us / n / 1e3:10.3f} {gaps[key] / n:12.1f}  {key[0]} / {key[1]}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", action="store_true", help="torch.profiler instead of cProfile")
    p.add_argument("--skip", type=int, default=30, help="--torch: updates before profiling")
    p.add_argument("--updates", type=int, default=20, help="--torch: updates profiled")
    p.add_argument("--trace", help="--torch on a GPU: keep the chrome trace (JSON) here")
    p.add_argument("--timeline", metavar="TRACE", help="only the per-update GPU timeline "
                   "of a saved trace (.json or .json.gz), no GPU needed")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("fairseq_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.timeline:
        return gpu_timeline(args.timeline, args.top)
    sys.argv = ["fairseq-train"] + [a for a in args.fairseq_args if a != "--"]
    if args.torch:
        torch_profile(args)
    else:
        profile = cProfile.Profile()
        profile.runcall(train.cli_main)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
