"""Where fairseq-train's time goes: the real command line under a profiler.

    python scripts/profile_train.py [--torch] [--top 25] -- DATA --user-dir fairseq_awd ...

Without --torch: Python's cProfile, the functions that take the most time per
call tree (fairseq's trainer, the plugins, the logging), which is where per-update
overhead shows once the kernels are cheap (a tiny model, or a GPU). With --torch:
torch.profiler, the operators and kernels by their own time, on CPU and CUDA.
Startup (imports, data loading) is in both: profile enough updates (--max-update)
that the loop dominates.
"""
import argparse
import cProfile
import pstats
import sys

import torch
from fairseq_cli import train


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", action="store_true", help="torch.profiler instead of cProfile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("fairseq_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    sys.argv = ["fairseq-train"] + [a for a in args.fairseq_args if a != "--"]
    if args.torch:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            train.cli_main()
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=args.top))
        if torch.cuda.is_available():
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    else:
        profile = cProfile.Profile()
        profile.runcall(train.cli_main)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
