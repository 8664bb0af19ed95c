"""Speed of the YouTube-VIS evaluator on a deterministic, validation-sized synthetic set.

Default: 300 videos × 36 frames at 720×1280, 5 categories, 2 ground-truth tracks and 100
predictions per video (compressed RLE), i.e. 1.08 M predicted frame masks. Masks are ellipses
(their RLE is written column by column); predictions follow a ground-truth object with per-frame
jitter 40% of the time, otherwise a random object.

    python benchmarks/bench_evaluator.py [--videos 300] [--preds 100] [--frames 36] [--via-file]
    python benchmarks/bench_evaluator.py --videos 10 --variants 12 --official
    python benchmarks/bench_evaluator.py --videos 17 --official --cli [--unique]

``--official`` also runs the official mmdet 3.3.0 ``YTVISeval`` in-process on the same data (the
wheel is fetched with pip into ``~/.cache/crossvis-tests/``, as the cross-check test does), checks
that the 12 stats are identical and prints the time ratio. ``--cli`` also times the whole
``crossvis evaluate`` command in a fresh process on the same data written to JSON (start-up, JSON
parsing, validation and evaluation: what a user waits for). ``--variants`` sets how many shifted
copies of each object the masks are drawn from; ``--unique`` makes every predicted mask distinct, as
in real results (the validator then decodes every string; with few variants it decodes each once).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.eval import YTVISEvaluator
from crossvis.inference.autotune import cpu_model

H, W = 720, 1280


def ellipse(cy: float, cx: float, ry: float, rx: float) -> dict:
    """Compressed RLE of the filled ellipse ((y-cy)/ry)² + ((x-cx)/rx)² ≤ 1, built column by column
    (one foreground run per column, no H×W raster, so thousands of distinct masks are cheap)."""
    x = np.arange(W)
    t = 1.0 - ((x - cx) / rx) ** 2
    cols = np.flatnonzero(t >= 0)
    half = ry * np.sqrt(t[cols])
    y0 = np.clip(np.ceil(cy - half), 0, H - 1).astype(np.int64)
    y1 = np.clip(np.floor(cy + half) + 1, 1, H).astype(np.int64)
    keep = y1 > y0
    cols, y0, y1 = cols[keep], y0[keep], y1[keep]
    bounds = np.empty(2 * cols.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, H * W
    bounds[1:-1:2], bounds[2:-1:2] = cols * H + y0, cols * H + y1
    runs = np.diff(bounds)
    rle = mask_utils.frPyObjects({"size": [H, W], "counts": runs.tolist()}, H, W)
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def make_pool(rng: np.random.Generator, objects: int = 48, variants: int = 4) -> list[tuple]:
    """``objects`` ellipses of varied size: (cy, cx, ry, rx, [``variants`` slightly shifted RLEs])."""
    pool = []
    for _ in range(objects):
        ry, rx = rng.uniform(20, 200), rng.uniform(20, 300)
        cy, cx = rng.uniform(ry, H - ry), rng.uniform(rx, W - rx)
        pool.append((cy, cx, ry, rx, [ellipse(cy + rng.normal(0, 6), cx + rng.normal(0, 6), ry, rx)
                                      for _ in range(variants)]))
    return pool


def make_data(videos: int, preds: int, frames: int, categories: int = 5, gts: int = 2,
              seed: int = 0, variants: int = 4, unique: bool = False) -> tuple[dict, list[dict]]:
    """Ground truth and results; with ``unique`` every predicted frame mask is its own jittered
    ellipse (as in real results, where no two masks are the same), else drawn from the pool."""
    rng = np.random.default_rng(seed)
    pool = make_pool(rng, variants=variants)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, categories + 1)]}
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": H, "width": W, "length": frames,
                             "file_names": [f"{v:05d}/{f:05d}.jpg" for f in range(frames)]})
        objs = []
        for _ in range(gts):
            obj, cat = int(rng.integers(len(pool))), int(rng.integers(1, categories + 1))
            segs = [pool[obj][4][0] for _ in range(frames)]
            area = float(mask_utils.area(segs[0]))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat,
                                      "iscrowd": 0, "segmentations": segs, "areas": [area] * frames,
                                      "bboxes": [None] * frames})
            objs.append((obj, cat))
        for _ in range(preds):
            if rng.random() < 0.4:
                obj, cat = objs[int(rng.integers(len(objs)))]
            else:
                obj, cat = int(rng.integers(len(pool))), int(rng.integers(1, categories + 1))
            cy, cx, ry, rx, variants_of = pool[obj]
            if unique:
                segs = [ellipse(cy + rng.normal(0, 6), cx + rng.normal(0, 6), ry * rng.uniform(0.95, 1.05),
                                rx * rng.uniform(0.95, 1.05)) if rng.random() > 0.05 else None for _ in range(frames)]
            else:
                variant = rng.integers(0, len(variants_of), size=frames)
                segs = [variants_of[int(k)] if rng.random() > 0.05 else None for k in variant]
            results.append({"video_id": v, "category_id": cat, "score": float(rng.random()), "segmentations": segs})
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--preds", type=int, default=100, help="predictions per video")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=4, help="shifted copies per object in the mask pool")
    parser.add_argument("--unique", action="store_true",
                        help="every predicted frame mask distinct (as in real results) instead of drawn from the pool")
    parser.add_argument("--via-file", action="store_true", help="also time evaluating from JSON files")
    parser.add_argument("--cli", action="store_true",
                        help="also time the whole `crossvis evaluate` command (a fresh process: start-up, JSON "
                             "parsing, validation, evaluation) on the data written to JSON files")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the fastest is reported")
    parser.add_argument("--official", action="store_true",
                        help="also time the official mmdet 3.3.0 YTVISeval and print the ratio")
    args = parser.parse_args()

    t0 = time.perf_counter()
    gt, results = make_data(args.videos, args.preds, args.frames, seed=args.seed, variants=args.variants,
                            unique=args.unique)
    t1 = time.perf_counter()
    masks = sum(s is not None for r in results for s in r["segmentations"])
    print(f"cpu: {cpu_model()}, load {os.getloadavg()[0]:.2f}")
    print(f"data: {args.videos} videos x {args.preds} predictions x {args.frames} frames ({masks:,} predicted "
          f"masks, {'all distinct' if args.unique else f'{args.variants} variants per object'}, {H}x{W}); "
          f"generated in {t1 - t0:.1f} s")
    ours = []
    for _ in range(max(1, args.repeat)):
        t1 = time.perf_counter()
        evaluator = YTVISEvaluator(gt)
        t2 = time.perf_counter()
        metrics = evaluator.evaluate(results)
        ours.append(time.perf_counter() - t1)
    print(f"ground-truth preparation: {t2 - t1:.2f} s")
    print(f"in-process (GT preparation + evaluate(results list)): {min(ours):.2f} s")
    print("AP={AP:.4f} AP50={AP50:.4f} AP75={AP75:.4f} AR1={AR1:.4f} AR10={AR10:.4f}".format(**metrics))
    cli = None
    if args.via_file or args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            gt_path, res_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "results.json")
            with open(gt_path, "w") as fh:
                json.dump(gt, fh)
            with open(res_path, "w") as fh:
                json.dump(results, fh)
            if args.via_file:
                t4 = time.perf_counter()
                YTVISEvaluator(gt_path).evaluate(res_path)
                print(f"evaluate from files (JSON parsing included): {time.perf_counter() - t4:.2f} s")
            if args.cli:
                command = [sys.executable, "-m", "crossvis", "evaluate", "--annotations", gt_path,
                           "--results", res_path, "--json"]
                times = []
                for _ in range(max(1, args.repeat)):
                    t5 = time.perf_counter()
                    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                    times.append(time.perf_counter() - t5)
                cli = min(times)
                same_cli = json.loads(out)["AP"] == metrics["AP"]
                print(f"`crossvis evaluate` whole command: {cli:.2f} s (fastest of {len(times)}); "
                      f"same AP as in-process: {same_cli}")
    if args.official:
        runs = [run_official(gt, results) for _ in range(max(1, args.repeat))]
        stats, official = runs[0][0], min(t for _, t in runs)
        same = bool(np.array_equal(stats, evaluator.stats))
        print(f"official YTVISeval (mmdet 3.3.0), in-process: {official:.2f} s (fastest of {len(runs)}); "
              f"identical stats: {same}")
        print(f"  crossvis in-process: {official / min(ours):.2f}x faster")
        if cli is not None:
            print(f"  `crossvis evaluate` whole command: {official / cli:.2f}x faster")


def run_official(gt: dict, results: list[dict]) -> tuple[np.ndarray, float]:
    """The official stats and seconds for load + loadRes + evaluate + accumulate + summarize."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "eval"))
    from test_official_ytviseval import fetch_official_wheel, load_official  # the test's fetcher and loader

    try:
        YTVIS, YTVISeval = load_official(str(fetch_official_wheel()))
    except BaseException as exc:  # noqa: BLE001 - pytest's skip/fail outcomes when the index is unreachable
        raise SystemExit(f"cannot load the official evaluator: {exc}") from None
    gt, results = copy.deepcopy(gt), copy.deepcopy(results)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = YTVIS(gt)
        ev = YTVISeval(gt_api, gt_api.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64), time.perf_counter() - start


if __name__ == "__main__":
    main()
