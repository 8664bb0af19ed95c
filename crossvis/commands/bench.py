"""``crossvis bench``: per-frame latency of CrossVIS (network and online pipeline) vs torchvision detectors."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from crossvis.engine import bench
    from crossvis.structures import CrossVISError

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
