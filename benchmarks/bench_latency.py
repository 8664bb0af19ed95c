"""Per-frame latency of CrossVIS (R-50, R-101, DLA-34) vs torchvision FCOS / Mask R-CNN, every network
backend (crossvis.inference.backends) side by side, plus a FLOPs breakdown and the accuracy guard.

    python benchmarks/bench_latency.py [--arch r50,r101,dla34] [--frames 10] [--threads 2]   # latency table
    python benchmarks/bench_latency.py --flops                                               # GMAC per module
    python benchmarks/bench_latency.py --accuracy RECIPE --checkpoint CKPT                   # guard per backend

``crossvis bench [OPTIONS]`` runs this script from a source checkout; see benchmarks/README.md for what is timed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "crossvis" not in sys.modules:  # run as a script: this checkout's library, not an installed one
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from crossvis.threads import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # before torch loads OpenMP, as the crossvis command does
import torch  # noqa: E402

import benchlib as bench  # noqa: E402  (benchmarks/benchlib.py)
from benchlib import backend_accuracy, head_flops  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("-h", "--help", action="store_true", help="show these options and the latency table's, and exit")
    parser.add_argument("--flops", action="store_true", help="print the GMAC breakdown (R-50 vs FCOS) and exit")
    parser.add_argument("--accuracy", metavar="RECIPE", default=None,
                        help="compare the fast path with fp32 on the recipe's data.test and exit")
    parser.add_argument("--checkpoint", default=None, help="weights for --accuracy")
    parser.add_argument("--max-videos", type=int, default=None, help="videos used by --accuracy")
    parser.add_argument("--accuracy-backends", default=",".join(_all_backends()),
                        help="comma-separated backends checked by --accuracy")
    args, rest = parser.parse_known_args(argv)
    latency = argparse.ArgumentParser(prog="bench_latency.py")
    table_parser = add_latency_parser(latency.add_subparsers())
    if args.help:
        print(parser.format_help())
        print("The latency table (the default; every option below):\n")
        print(table_parser.format_help())
        return 0
    if args.flops:
        for key, gmac in head_flops().items():
            print(f"{key:<48}{gmac:>8.2f} GMAC")
        return 0
    if args.accuracy:
        from crossvis.threads import configure_threads

        configure_threads(None)
        names = [n.strip() for n in args.accuracy_backends.split(",") if n.strip()]
        table = backend_accuracy(args.accuracy, names, args.checkpoint, args.max_videos)
        print(format_accuracy(table))
        return 0
    bench_args = latency.parse_args(["bench", *rest])
    return run_latency(bench_args)


#: where the README's quickstart command writes its run (``crossvis quickstart --output quickstart_output``)
QUICKSTART_RUN = "quickstart_output/run"


def resolve_guard(guard_from: str | None, checkpoint: str | None) -> tuple[str | None, str | None]:
    """The (recipe, checkpoint) of the trained model the fast path's guard runs on, or (None, None).

    ``guard_from``: a recipe file, a run folder (``recipe.yaml`` + ``checkpoints/model_final.pth``),
    ``auto`` (the quickstart run in :data:`QUICKSTART_RUN` of the working directory or of this
    checkout, when it has finished; else none) or ``none``. A checkpoint not given is the run's final one.

    Raises:
        CrossVISError: for a recipe or run folder that does not exist or lacks its checkpoint.
    """
    from crossvis.errors import CrossVISError

    if guard_from in (None, "", "none"):
        return None, None
    if guard_from == "auto":   # the working directory's, else this checkout's
        for run in (Path(QUICKSTART_RUN), Path(__file__).resolve().parents[1] / QUICKSTART_RUN):
            final = run / "checkpoints" / "model_final.pth"
            if (run / "recipe.yaml").is_file() and final.is_file():
                return str(run / "recipe.yaml"), str(checkpoint or final)
        return None, None
    path = Path(guard_from)
    recipe = path / "recipe.yaml" if path.is_dir() else path
    final = recipe.parent / "checkpoints" / "model_final.pth"
    if not recipe.is_file():
        raise CrossVISError(f"--guard-from {guard_from}: no such recipe or run folder (a run folder holds "
                            "recipe.yaml; use none for the guard on the random-weight frames)")
    if checkpoint is None:
        if not final.is_file():
            raise CrossVISError(f"--guard-from {guard_from}: {final} does not exist; pass --guard-checkpoint CKPT "
                                "(the trained weights the guard runs on)")
        checkpoint = str(final)
    return str(recipe), checkpoint


def add_latency_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="per-frame latency of CrossVIS vs torchvision FCOS / Mask R-CNN",
        description="Time CrossVIS (random weights, 40 classes, embeddings; the official test size 360x640) "
                    "network-only and as the full online pipeline (numpy frame in -> tracked instances out), "
                    "fp32 and the fast path, against torchvision fcos_resnet50_fpn and maskrcnn_resnet50_fpn "
                    "on the same frames at the same resolution. Every model is held at --detections per frame.")
    p.add_argument("--arch", default="r50,r101,dla34", help="comma-separated subset of r50,r101,dla34")
    p.add_argument("--frames", type=int, default=10, help="timed frames per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up frames")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: the physical cores available to this process that "
                        "other processes leave free)")
    p.add_argument("--backends", default=",".join(_all_backends()),
                   help="comma-separated network backends timed side by side (crossvis.inference.backends); "
                        "'' skips the table")
    p.add_argument("--detections", type=int, default=100, help="detections per frame for every model")
    p.add_argument("--modes", default="network,pipeline",
                   help="comma-separated subset of network,pipeline (CrossVIS)")
    p.add_argument("--no-fast", action="store_true", help="skip the fast path")
    p.add_argument("--fast-candidates", default=None,
                   help="comma-separated backends the fast path chooses from (default: the autotuner's "
                        "DEFAULT_CANDIDATES), e.g. those that passed --accuracy on a trained model")
    p.add_argument("--guard-from", metavar="RECIPE|RUN|auto|none", default="auto",
                   help="take the fast path's accuracy guard from a trained model: run the guard "
                        "(--accuracy) on the test videos of RECIPE (or of a run folder RUN, with its "
                        "checkpoints/model_final.pth) and let the fast path choose, on the random-weight "
                        "frames, among the candidates that passed there. auto (the default): the "
                        f"quickstart run in ./{QUICKSTART_RUN} when it has finished, else none: the guard "
                        "on the random-weight frames (--min-mask-iou)")
    p.add_argument("--guard-checkpoint", default=None,
                   help="weights for --guard-from (default: RUN/checkpoints/model_final.pth next to the recipe)")
    p.add_argument("--min-mask-iou", type=float, default=0.98,
                   help="the fast path's accuracy guard on these random-weight frames (0: off; random "
                        "weights give near-tie scores, so low-precision candidates fail it here whatever "
                        "they do on a trained model: check that with --accuracy)")
    p.add_argument("--no-baselines", action="store_true", help="skip the torchvision detectors")
    p.add_argument("--baselines", default="fcos,maskrcnn", help="comma-separated torchvision detectors timed")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    return p


def run_latency(args: argparse.Namespace) -> int:
    import json

    import torch

    from crossvis.errors import CrossVISError

    from crossvis.inference.autotune import cpu_model
    from crossvis.threads import configure_threads

    # the inference default: the physical cores other processes leave free (crossvis.threads)
    threads = configure_threads(args.threads if args.threads > 0 else None, load_aware=True)
    allocator = bench.keep_freed_memory()
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {threads} threads; {allocator}; load average "
          f"{' '.join(f'{x:.2f}' for x in _loadavg())}", flush=True)
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
    from crossvis.inference.autotune import DEFAULT_CANDIDATES, AutotuneSettings

    candidates = tuple(c.strip() for c in args.fast_candidates.split(",") if c.strip()) \
        if args.fast_candidates else DEFAULT_CANDIDATES
    min_mask_iou = args.min_mask_iou
    guard_recipe, guard_checkpoint = resolve_guard(args.guard_from, args.guard_checkpoint) \
        if not args.no_fast else (None, None)
    if guard_recipe is not None:
        table = backend_accuracy(guard_recipe, ["fp32", *[c for c in candidates if c != "fp32"]],
                                 guard_checkpoint)
        print(f"accuracy guard on {guard_recipe} ({guard_checkpoint}):\n{format_accuracy(table)}", flush=True)
        candidates = tuple(name for name, row in table.items() if guard_passes(row))
        min_mask_iou = 0.0  # already applied, on the trained model
    elif not args.no_fast and args.guard_from == "auto":
        print(f"fast path: no finished quickstart run in ./{QUICKSTART_RUN}, so the accuracy guard runs on the "
              "random-weight frames, where near-tied scores make bf16 and int8 fail or pass by chance; run "
              "`crossvis quickstart --output quickstart_output` first (or pass --guard-from RUN) for the "
              "guard on a trained model", flush=True)
    fast_settings = AutotuneSettings(cache=False, candidates=candidates, min_mask_iou=min_mask_iou)
    if not args.no_fast:
        guard = "off" if min_mask_iou <= 0 else f"mask IoU >= {min_mask_iou}"
        if guard_recipe is not None:
            guard = f"the one above (passed on {guard_recipe})"
        print(f"fast path: chosen among {','.join(candidates)} with the accuracy guard {guard}", flush=True)
    speeds = [False] if args.no_fast else [False, True]
    rows = []
    reference = None
    if not args.no_baselines:
        for name in [b.strip() for b in args.baselines.split(",") if b.strip()]:
            for fast in speeds:
                rows.append(bench.bench_torchvision(name, timed, fast=fast, **kw))
                print(bench.format_rows(rows[-1:]).splitlines()[1], flush=True)
        reference = rows[0]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    candidate_tables = []
    beside: dict[str, bench.BenchResult] = {}  # per CrossVIS model: the reference timed alongside its pipelines
    for arch in archs:
        if backends and "network" in modes:
            table = bench.bench_backends(arch, timed, backends, **kw)
            candidate_tables.append((arch, table))
            print(format_candidates(arch, table, reference), flush=True)
        for mode in modes:
            if mode == "pipeline" and reference is not None and len(speeds) == 2:
                # the targets' three timings frame by frame, so that drift of the machine cancels
                side = bench.bench_side_by_side(arch, timed, reference.name.removeprefix("torchvision-"),
                                                settings=fast_settings, **kw)
                beside[f"crossvis-{arch}"] = side[0]
                rows.extend(side)
                print("\n".join(bench.format_rows(side).splitlines()[1:]), flush=True)
                continue
            fn = bench.bench_network if mode == "network" else bench.bench_pipeline
            for fast in speeds:
                rows.append(fn(arch, timed, fast=fast, settings=fast_settings, **kw))
                print(bench.format_rows(rows[-1:]).splitlines()[1], flush=True)
    if reference is not None:
        # FCOS fp32 again after the CrossVIS rows: the ratios use the mean of both timings, so a
        # load change on a shared machine between the first and the last row moves both sides
        again = bench.bench_torchvision(rows[0].name.removeprefix("torchvision-"), timed, **kw)
        again.mode = "fp32 again"
        print(bench.format_rows([again]).splitlines()[1], flush=True)
        reference = dataclasses.replace(
            rows[0], mode="fp32 before+after", median_ms=(rows[0].median_ms + again.median_ms) / 2,
            p25_ms=min(rows[0].p25_ms, again.p25_ms), p75_ms=max(rows[0].p75_ms, again.p75_ms),
            cpu_median_ms=(rows[0].cpu_median_ms + again.cpu_median_ms) / 2)
        rows[1:1] = [again, reference]
    print()
    for arch, table in candidate_tables:
        print(format_candidates(arch, table, reference))
        print()
    print(bench.format_rows(rows, reference))
    targets = format_targets(rows, reference, beside)
    if targets:
        print()
        print(targets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)
    return 0


#: issue 13's targets against torchvision FCOS fp32 (the mean of its timings before and after)
PIPELINE_FP32_TARGET = 1.15
FAST_TARGET = 0.5


def format_targets(rows: list, reference: "bench.BenchResult | None",
                   beside: "dict[str, bench.BenchResult] | None" = None) -> str:
    """Per CrossVIS arch with both pipeline rows: the fp32 and fast pipelines against the reference
    (FCOS fp32) and each other, with the targets they are held to; '' without them.

    ``beside``: per CrossVIS row name, the reference timed frame by frame alongside its pipelines
    (:func:`benchlib.bench_side_by_side`), which that arch's ratios use instead of ``reference``.
    """
    if reference is None:
        return ""
    lines = []
    for name in dict.fromkeys(r.name for r in rows if r.name.startswith("crossvis-")):
        fp32 = next((r for r in rows if r.name == name and r.mode.startswith("pipeline-fp32")), None)
        fast = next((r for r in rows if r.name == name and r.mode.startswith("pipe-")), None)
        if fp32 is None or fast is None:
            continue
        ref = (beside or {}).get(name, reference)

        def verdict(value: float, limit: float, strict: bool = False) -> str:
            ok = value < limit if strict else value <= limit
            return f"{value:.3f} ({'<' if strict else '<='} {limit:g}: {'met' if ok else 'NOT met'})"

        lines.append(f"{name} targets (FCOS fp32 {ref.median_ms:.1f} ms, {ref.mode}): "
                     f"pipeline fp32 / FCOS {verdict(fp32.median_ms / ref.median_ms, PIPELINE_FP32_TARGET)}; "
                     f"fast pipeline ({fast.mode.removeprefix('pipe-')}) / FCOS "
                     f"{verdict(fast.median_ms / ref.median_ms, FAST_TARGET)}; "
                     f"fast / fp32 pipeline {verdict(fast.median_ms / fp32.median_ms, 1.0, strict=True)}")
    return "\n".join(lines)


def _all_backends() -> list[str]:
    from crossvis.inference.backends import BACKENDS

    return list(BACKENDS)


def _loadavg() -> tuple[float, ...]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def format_candidates(arch: str, table: list, reference: "bench.BenchResult | None") -> str:
    """Every backend of one architecture: network ms, ratios to fp32 (and FCOS), the guard's mask IoU."""
    fp32 = next((r for r, *_ in table if r.mode == "network-fp32"), None)
    head = f"{'crossvis-' + arch + ' network':<26}{'median ms':>10}{'cpu ms':>9}{'/fp32':>7}{'/FCOS':>7}" \
           f"{'mask IoU':>10}{'build s':>9}  status"
    lines = [head]
    for r, iou, build_s, why in table:
        name = r.mode.removeprefix("network-")
        rel = r.median_ms / fp32.median_ms if fp32 else float("nan")
        ref = r.median_ms / reference.median_ms if reference else float("nan")
        status = why or ("ok" if iou >= 0.98 else "fails the guard (IoU < 0.98)")
        lines.append(f"{name:<26}{r.median_ms:>10.1f}{r.cpu_median_ms:>9.1f}{rel:>7.2f}{ref:>7.2f}"
                     f"{iou:>10.3f}{build_s:>9.1f}  {status}")
    return "\n".join(lines)


def guard_passes(row: dict) -> bool:
    """The accuracy guard on a trained model: mask IoU vs fp32 ≥ 0.98 and AP within ±0.01."""
    return "skipped" not in row and row["mask_iou"] >= 0.98 and abs(row["dAP"]) <= 0.01


def format_accuracy(table: dict) -> str:
    """The accuracy guard per backend: mask IoU vs fp32 (≥ 0.98) and AP within ±1 point (AP as a
    fraction, like every crossvis command: ±0.01)."""
    lines = [f"{'backend':<15}{'mask IoU':>10}{'AP':>8}{'dAP':>8}  guard"]
    for name, row in table.items():
        if "skipped" in row:
            lines.append(f"{name:<15}{'':>26}  skipped: {row['skipped']}")
            continue
        ok = guard_passes(row)
        lines.append(f"{name:<15}{row['mask_iou']:>10.3f}{row['AP']:>8.3f}{row['dAP']:>+8.3f}  "
                     f"{'pass' if ok else 'FAIL'}")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
