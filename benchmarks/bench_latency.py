"""Per-frame latency of CrossVIS (R-50, R-101, DLA-34) vs torchvision FCOS / Mask R-CNN, plus a FLOPs
breakdown and the fast path's accuracy guard.

    python benchmarks/bench_latency.py [--arch r50,r101,dla34] [--frames 10] [--threads 2]   # latency table
    python benchmarks/bench_latency.py --flops                                               # GMAC per module
    python benchmarks/bench_latency.py --accuracy RECIPE --checkpoint CKPT                   # fast vs fp32

The latency part is ``crossvis bench`` (same options); see benchmarks/README.md for what is timed.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from crossvis.commands import bench as bench_command
from crossvis.engine.bench import fast_accuracy, head_flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flops", action="store_true", help="print the GMAC breakdown (R-50 vs FCOS) and exit")
    parser.add_argument("--accuracy", metavar="RECIPE", default=None,
                        help="compare the fast path with fp32 on the recipe's data.test and exit")
    parser.add_argument("--checkpoint", default=None, help="weights for --accuracy")
    parser.add_argument("--max-videos", type=int, default=None, help="videos used by --accuracy")
    args, rest = parser.parse_known_args(argv)
    if args.flops:
        for key, gmac in head_flops().items():
            print(f"{key:<48}{gmac:>8.2f} GMAC")
        return 0
    if args.accuracy:
        print(json.dumps(fast_accuracy(args.accuracy, args.checkpoint, args.max_videos), indent=1))
        return 0
    latency = argparse.ArgumentParser(prog="bench_latency.py")
    bench_command.add_parser(latency.add_subparsers())
    bench_args = latency.parse_args(["bench", *rest])
    return bench_args.func(bench_args)


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
