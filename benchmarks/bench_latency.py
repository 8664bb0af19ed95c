"""Per-frame latency of CrossVIS (R-50, R-101, DLA-34) vs torchvision FCOS / Mask R-CNN, plus a FLOPs
breakdown and the fast path's accuracy guard.

    python benchmarks/bench_latency.py [--arch r50,r101,dla34] [--frames 10] [--threads 2]   # latency table
    python benchmarks/bench_latency.py --flops                                               # GMAC per module
    python benchmarks/bench_latency.py --accuracy RECIPE --checkpoint CKPT                   # fast vs fp32

``crossvis bench [OPTIONS]`` runs this script from a source checkout; see benchmarks/README.md for what is timed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bench  # noqa: E402  (benchmarks/benchlib.py)
from benchlib import fast_accuracy, head_flops  # noqa: E402


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
    add_latency_parser(latency.add_subparsers())
    bench_args = latency.parse_args(["bench", *rest])
    return run_latency(bench_args)


def add_latency_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="per-frame latency of CrossVIS vs torchvision FCOS / Mask R-CNN",
        description="Time CrossVIS (random weights, 40 classes, embeddings; the official test size 360x640) "
                    "network-only and as the full online pipeline (numpy frame in -> tracked instances out), "
                    "fp32 and the fast path, against torchvision fcos_resnet50_fpn and maskrcnn_resnet50_fpn "
                    "on the same frames at the same resolution. Every model is held at --detections per frame.")
    p.add_argument("--arch", default="r50,r101,dla34", help="comma-separated subset of r50,r101,dla34")
    p.add_argument("--frames", type=int, default=10, help="timed frames per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up frames")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    p.add_argument("--detections", type=int, default=100, help="detections per frame for every model")
    p.add_argument("--modes", default="network,pipeline",
                   help="comma-separated subset of network,pipeline (CrossVIS)")
    p.add_argument("--no-fast", action="store_true", help="skip the fast path")
    p.add_argument("--no-baselines", action="store_true", help="skip the torchvision detectors")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")


def run_latency(args: argparse.Namespace) -> int:
    import json

    import torch

    from crossvis.errors import CrossVISError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(bench.ARCHS))
    if unknown:
        raise CrossVISError(f"--arch {unknown[0]} is unknown; use a subset of {','.join(bench.ARCHS)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"network", "pipeline"} or args.frames < 1:
        raise CrossVISError("--modes takes network and/or pipeline, and --frames must be at least 1")
    frames = bench.synthetic_frames(args.frames + args.warmup)
    timed = frames[args.warmup:]
    kw = dict(warmup=args.warmup, num_detections=args.detections)
    speeds = [False] if args.no_fast else [False, True]
    rows = []
    reference = None
    if not args.no_baselines:
        for name in ("fcos", "maskrcnn"):
            for fast in speeds:
                rows.append(bench.bench_torchvision(name, timed, fast=fast, **kw))
                print(bench.format_rows(rows[-1:]).splitlines()[1], flush=True)
        reference = rows[0]
    for arch in archs:
        for mode in modes:
            fn = bench.bench_network if mode == "network" else bench.bench_pipeline
            for fast in speeds:
                rows.append(fn(arch, timed, fast=fast, **kw))
                print(bench.format_rows(rows[-1:]).splitlines()[1], flush=True)
    print()
    print(bench.format_rows(rows, reference))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
