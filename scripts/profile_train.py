"""Where fairseq-train's time goes: the real command line under a profiler.

    python scripts/profile_train.py [--torch] [--skip 30] [--updates 20] -- DATA --user-dir fairseq_awd ...

Without --torch: Python's cProfile over the whole run, the functions that take the
most time per call tree (fairseq's trainer, the plugins, the logging), which is
where per-update overhead shows once the kernels are cheap (a tiny model, or a
GPU). With --torch: torch.profiler over --updates updates after --skip (start-up
and warm-up left out), the operators by their own time and, on a GPU, what the
GPU did per update: its busy time against the wall time, kernel launches and
host-device synchronisations (where the GPU waits for the host, or the host for
it). --trace writes the timeline for chrome://tracing or Perfetto.
"""
import argparse
import cProfile
import pstats
import sys

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
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.top))
    if args.trace:
        prof.export_chrome_trace(args.trace)
    if cuda:
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
        per_update(prof, args.updates)


def per_update(prof, n):
    """GPU busy time, launches and synchronisations per update, from the timeline."""
    kernels, wall, launches, syncs = [], 0.0, 0, 0
    for e in prof.events():
        if e.name.startswith("ProfilerStep"):
            wall += e.time_range.elapsed_us()
        elif e.device_type == torch.autograd.DeviceType.CUDA:
            kernels.append((e.time_range.start, e.time_range.end))
        elif e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"):
            launches += 1
        elif e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize"):
            syncs += 1
    busy, end = 0, 0  # the union of kernel intervals: streams may overlap
    for start, stop in sorted(kernels):
        busy += max(0, stop - max(start, end))
        end = max(end, stop)
    print(f"per update over {n}: wall {wall / n / 1e3:.2f} ms, GPU busy {busy / n / 1e3:.2f} ms "
          f"({100 * busy / max(wall, 1):.0f}%), {launches / n:.0f} kernel launches, "
          f"{syncs / n:.1f} stream/device synchronisations")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", action="store_true", help="torch.profiler instead of cProfile")
    p.add_argument("--skip", type=int, default=30, help="--torch: updates before profiling")
    p.add_argument("--updates", type=int, default=20, help="--torch: updates profiled")
    p.add_argument("--trace", help="--torch: write a chrome trace (JSON) here")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("fairseq_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    sys.argv = ["fairseq-train"] + [a for a in args.fairseq_args if a != "--"]
    if args.torch:
        torch_profile(args)
    else:
        profile = cProfile.Profile()
        profile.runcall(train.cli_main)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
