"""Speed of the YouTube-VIS evaluator on a deterministic, validation-sized synthetic set.

Default: 300 videos × 36 frames at 720×1280, 5 categories, 2 ground-truth tracks and 100
predictions per video (compressed RLE), i.e. 1.08 M predicted frame masks. Masks are ellipses drawn
from a pool (encoding 720×1280 masks is slow); predictions follow a ground-truth object with
per-frame jitter 40% of the time, otherwise a random object.

    python benchmarks/bench_evaluator.py [--videos 300] [--preds 100] [--frames 36] [--via-file]
    python benchmarks/bench_evaluator.py --videos 10 --variants 12 --official

``--official`` also runs the official mmdet 3.3.0 ``YTVISeval`` in-process on the same data (the
wheel is fetched with pip into ``~/.cache/crossvis-tests/``, as the cross-check test does), checks
that the 12 stats are identical and prints the time ratio. ``--variants`` sets how many shifted
copies of each object the masks are drawn from (more variants: more distinct masks).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.eval import YTVISEvaluator

H, W = 720, 1280


def ellipse(cy: float, cx: float, ry: float, rx: float) -> dict:
    y, x = np.ogrid[:H, :W]
    m = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [H, W], "counts": enc["counts"].decode("ascii")}


def make_pool(rng: np.random.Generator, objects: int = 48, variants: int = 4) -> list[list[dict]]:
    """``objects`` ellipses of varied size, each in ``variants`` slightly shifted versions."""
    pool = []
    for _ in range(objects):
        ry, rx = rng.uniform(20, 200), rng.uniform(20, 300)
        cy, cx = rng.uniform(ry, H - ry), rng.uniform(rx, W - rx)
        pool.append([ellipse(cy + rng.normal(0, 6), cx + rng.normal(0, 6), ry, rx) for _ in range(variants)])
    return pool


def make_data(videos: int, preds: int, frames: int, categories: int = 5, gts: int = 2,
              seed: int = 0, variants: int = 4) -> tuple[dict, list[dict]]:
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
            segs = [pool[obj][0] for _ in range(frames)]
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
            variant = rng.integers(0, len(pool[obj]), size=frames)
            segs = [pool[obj][int(k)] if rng.random() > 0.05 else None for k in variant]
            results.append({"video_id": v, "category_id": cat, "score": float(rng.random()), "segmentations": segs})
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--preds", type=int, default=100, help="predictions per video")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=4, help="shifted copies per object in the mask pool")
    parser.add_argument("--via-file", action="store_true", help="also time evaluating from JSON files")
    parser.add_argument("--official", action="store_true",
                        help="also time the official mmdet 3.3.0 YTVISeval and print the ratio")
    args = parser.parse_args()

    t0 = time.perf_counter()
    gt, results = make_data(args.videos, args.preds, args.frames, seed=args.seed, variants=args.variants)
    t1 = time.perf_counter()
    evaluator = YTVISEvaluator(gt)
    t2 = time.perf_counter()
    metrics = evaluator.evaluate(results)
    t3 = time.perf_counter()
    print(f"data: {args.videos} videos x {args.preds} predictions x {args.frames} frames "
          f"({args.videos * args.preds * args.frames:,} predicted masks, {H}x{W}); generated in {t1 - t0:.1f} s")
    print(f"ground-truth preparation: {t2 - t1:.2f} s")
    print(f"evaluate(results list):   {t3 - t2:.2f} s")
    print("AP={AP:.4f} AP50={AP50:.4f} AP75={AP75:.4f} AR1={AR1:.4f} AR10={AR10:.4f}".format(**metrics))
    if args.via_file:
        with tempfile.TemporaryDirectory() as tmp:
            gt_path, res_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "results.json")
            with open(gt_path, "w") as fh:
                json.dump(gt, fh)
            with open(res_path, "w") as fh:
                json.dump(results, fh)
            t4 = time.perf_counter()
            YTVISEvaluator(gt_path).evaluate(res_path)
            print(f"evaluate from files (JSON parsing included): {time.perf_counter() - t4:.2f} s")
    if args.official:
        ours = t3 - t1
        stats, official = run_official(gt, results)
        same = bool(np.array_equal(stats, evaluator.stats))
        print(f"official YTVISeval (mmdet 3.3.0), in-process: {official:.2f} s; crossvis (GT preparation included) "
              f"{ours:.2f} s: {official / ours:.2f}x faster; identical stats: {same}")


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
