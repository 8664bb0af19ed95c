"""Component ablations on synthetic data: the paper's Table 8, and association methods side by side.

``--table table8`` (default) trains the quickstart model four ways — the CondInst-VIS baseline
(pair-wise MaskTrack-style embedding, no crossover), + crossover learning (COL), + global balanced
embedding (GBE), and both (CrossVIS) — and prints the median held-out AP per variant:

    python examples/ablation.py --output ablation_output --seeds 3 --max-iter 300

``--table association`` compares CrossVIS's association with later online methods on an
occlusion-heavy synthetic setting (``--setting occlusion``: at least 4 objects, objects that leave
for 3-6 frames and return, a slab occluding everything behind it; ``--setting standard`` for the
quickstart's videos). Rows, each trained with and without temporal feature calibration:

* GBE + official tracker (CrossVIS),
* contrastive embedding + memory-bank tracker,
* GBE + contrastive (weighted sum) + memory-bank tracker,

plus, at inference cost only, the crossed pairs (GBE + memory bank, contrastive or both + official
tracker) so the loss and the tracker can be told apart. Columns: AP, AR10 and identity switches
(IDSW: per ground-truth track, the number of times its matched predicted track id changes between
the frames where it is matched — mask IoU >= 0.5, one-to-one by Hungarian matching per frame,
predicted tracks with score >= ``--idsw-score``), and the fraction of ground-truth instance-frames
matched (cover), each the median over seeds:

    python examples/ablation.py --table association --setting occlusion --seeds 2 --max-iter 150

Each training is an ordinary ``Trainer`` run in ``OUTPUT/<variant>/seed<k>`` (rerunning the script
resumes or skips finished runs; inference-only rows reuse the checkpoint). On synthetic shapes the
differences are small and noisy; the script shows how to run the comparison.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Optional

import numpy as np

from crossvis import load_recipe
from crossvis.data import generate_synthetic_splits
from crossvis.data.synthetic import OcclusionSetting
from crossvis.training import Trainer

GBE = {"type": "global_focal_embedding", "alpha": 0.25, "gamma": 2.0}
CONTRASTIVE = {"type": "contrastive_embedding"}  # QDTrack defaults, bi-directional (STC)
BOTH = {"type": "weighted_embedding_sum", "weights": [1.0, 1.0], "losses": [GBE, CONTRASTIVE]}
CALIBRATED_NECK = {"type": "temporal_calibration", "max_displacement": 4,
                   "inner": {"type": "fpn", "in_features": ["level3", "level4", "level5"], "out_channels": 64,
                             "top_levels": 0}}
OFFICIAL_TRACKER = {"type": "crossvis"}


def memory_bank(start_score: float) -> dict:
    return {"type": "memory_bank", "start_score_threshold": start_score}


#: (name, crossover, embedding loss node) — the four rows of Table 8
VARIANTS = [
    ("CondInst-VIS baseline", False, {"type": "pairwise_embedding", "gamma": 0.0}),
    ("+ COL", True, {"type": "pairwise_embedding", "gamma": 0.0}),
    ("+ GBE", False, {"type": "global_focal_embedding", "alpha": 0.25, "gamma": 2.0}),
    ("CrossVIS (COL + GBE)", True, {"type": "global_focal_embedding", "alpha": 0.25, "gamma": 2.0}),
]

#: the paper's Table 8 (YouTube-VIS 2019 val AP, %), in the order of VARIANTS
PAPER_TABLE8 = [32.1, 33.1, 33.5, 34.8]

#: trainings of the association table: (key, embedding loss, calibrated)
TRAININGS = [("gbe", GBE, False), ("contrastive", CONTRASTIVE, False), ("both", BOTH, False),
             ("gbe_cal", GBE, True), ("contrastive_cal", CONTRASTIVE, True), ("both_cal", BOTH, True)]
#: rows of the association table: (name, training key, tracker: "official" | "memory_bank")
ASSOCIATION_ROWS = [
    ("GBE + official tracker (CrossVIS)", "gbe", "official"),
    ("contrastive + memory bank", "contrastive", "memory_bank"),
    ("GBE + contrastive + memory bank", "both", "memory_bank"),
    ("GBE + memory bank", "gbe", "memory_bank"),
    ("contrastive + official tracker", "contrastive", "official"),
    ("GBE + contrastive + official tracker", "both", "official"),
    ("CrossVIS + calibration", "gbe_cal", "official"),
    ("contrastive + memory bank + calibration", "contrastive_cal", "memory_bank"),
    ("GBE + contrastive + memory bank + calib.", "both_cal", "memory_bank"),
]


def extra_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set k=v`` strings as recipe overrides (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"ablation.py: --set expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def data_overrides(splits: dict) -> dict[str, Any]:
    return {"data.train.annotations": str(splits["train"].annotations),
            "data.train.images": str(splits["train"].images),
            "data.test.annotations": str(splits["test"].annotations),
            "data.test.images": str(splits["test"].images)}


def schedule(max_iter: int) -> dict[str, Any]:
    return {"solver.max_iter": max_iter, "solver.steps": [int(max_iter * 0.75), int(max_iter * 0.92)],
            "solver.checkpoint_period": max(1, max_iter // 2)}


def train_once(out: Path, overrides: dict[str, Any]) -> Path:
    """Train (or resume, or skip a finished run) and return the run folder."""
    if not (out / "eval" / "metrics.json").is_file():
        recipe = load_recipe("crossvis:quickstart_synthetic", overrides)
        resume = (out / "checkpoints" / "last_checkpoint").is_file()
        Trainer(recipe, out, resume=resume).train()
    return out


def run_variant(out: Path, splits: dict, crossover: bool, embedding: dict, seed: int, max_iter: int) -> float:
    """Train one Table 8 variant with one seed (or reuse a finished run) and return its held-out AP."""
    train_once(out, {**data_overrides(splits), "model.crossover": crossover, "model.embedding_loss": embedding,
                     "runtime.seed": seed, **schedule(max_iter)})
    return float(json.loads((out / "eval" / "metrics.json").read_text())["AP"])


# -- identity switches ---------------------------------------------------------------------------
def _rle(seg: dict) -> dict:
    from pycocotools import mask as mask_util

    h, w = seg["size"]
    if isinstance(seg["counts"], list):
        return mask_util.frPyObjects(seg, h, w)
    return {"size": [h, w], "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str)
            else seg["counts"]}


def identity_switches(gt: dict, results: list[dict], min_score: float = 0.0, iou_threshold: float = 0.5
                      ) -> tuple[int, float]:
    """(IDSW, cover) of tracking ``results`` against the YouTube-VIS ground truth ``gt``.

    Per frame, ground-truth instances and predicted tracks (score >= ``min_score``) are matched
    one-to-one by Hungarian matching on mask IoU, pairs with IoU >= ``iou_threshold`` kept. For every
    ground-truth track, IDSW counts the changes of its matched predicted track between consecutive
    frames where it is matched (frames without a match are skipped). ``cover`` is the fraction of
    ground-truth instance-frames with a match.
    """
    from pycocotools import mask as mask_util
    from scipy.optimize import linear_sum_assignment

    switches, matched, total = 0, 0, 0
    by_video: dict[int, list[tuple[int, dict]]] = {}
    for k, r in enumerate(results):
        if float(r["score"]) >= min_score:
            by_video.setdefault(int(r["video_id"]), []).append((k, r))
    for video in gt["videos"]:
        tracks = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
        preds = by_video.get(int(video["id"]), [])
        last: dict[int, int] = {}
        for t in range(len(video["file_names"])):
            g = [(j, _rle(a["segmentations"][t])) for j, a in enumerate(tracks) if a["segmentations"][t]]
            p = [(k, _rle(r["segmentations"][t])) for k, r in preds if r["segmentations"][t]]
            total += len(g)
            if not g or not p:
                continue
            iou = np.asarray(mask_util.iou([r for _, r in p], [r for _, r in g], [0] * len(g)))
            rows, cols = linear_sum_assignment(-iou)
            for pi, gi in zip(rows, cols):
                if iou[pi, gi] < iou_threshold:
                    continue
                gt_track, pred_track = g[gi][0], p[pi][0]
                matched += 1
                if gt_track in last and last[gt_track] != pred_track:
                    switches += 1
                last[gt_track] = pred_track
    return switches, (matched / total if total else 0.0)


def evaluate_with_tracker(run: Path, tracker: dict, out: Path, splits: dict) -> dict[str, float]:
    """Track the test split with ``run``'s final model and ``tracker``; AP/AR10 and IDSW/cover."""
    from crossvis.inference.predictor import Predictor
    from crossvis.inference.runner import infer_and_evaluate

    if tracker == OFFICIAL_TRACKER and (run / "eval" / "results.json").is_file():
        out = run / "eval"  # the end-of-training evaluation already used the official tracker
    if not (out / "metrics.json").is_file():
        recipe = load_recipe(run / "recipe.yaml", {"tracker": tracker})
        predictor = Predictor(recipe, checkpoint=run / "checkpoints" / "model_final.pth")
        infer_and_evaluate(predictor, splits["test"].annotations, splits["test"].images, out, progress=False)
    return json.loads((out / "metrics.json").read_text())


def association_table(args: argparse.Namespace, out: Path, splits: dict) -> list[tuple[str, list[dict]]]:
    """Train / evaluate every row; seed-major, so a stopped run still has every row's first seeds."""
    gt = json.loads(Path(splits["test"].annotations).read_text())
    trackers = {"official": OFFICIAL_TRACKER, "memory_bank": memory_bank(args.start_score)}
    wanted = set(args.rows.split(",")) if args.rows else None
    rows = [r for r in ASSOCIATION_ROWS if wanted is None or r[1] in wanted]
    per_row: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
    for seed in range(args.seeds):
        for name, key, tracker in rows:
            _, embedding, calibrated = next(t for t in TRAININGS if t[0] == key)
            overrides = {**data_overrides(splits), "model.embedding_loss": embedding, "runtime.seed": seed,
                         **schedule(args.max_iter), **extra_overrides(args.set)}
            if calibrated:
                overrides["model.neck"] = CALIBRATED_NECK
            run = train_once(out / key / f"seed{seed}", overrides)
            folder = run / ("eval" if tracker == "official" else f"eval_{tracker}")
            metrics = evaluate_with_tracker(run, trackers[tracker], folder, splits)
            results = json.loads((folder / "results.json").read_text())
            idsw, cover = identity_switches(gt, results, args.idsw_score)
            per_row[name].append({"AP": metrics["AP"], "AR10": metrics["AR10"], "IDSW": idsw, "cover": cover})
            print(f"[done] {name}, seed {seed}: AP {metrics['AP']:.3f} AR10 {metrics['AR10']:.3f} "
                  f"IDSW {idsw} cover {cover:.3f}", flush=True)
    return [(name, per_row[name]) for name, _, _ in rows]


def print_association(rows: list[tuple[str, list[dict]]], args: argparse.Namespace, out: Path) -> None:
    def med(values: list[dict], key: str) -> float:
        return statistics.median(v[key] for v in values)

    print(f"\n{args.setting} synthetic setting, {args.test_videos} test videos x {args.num_frames} frames; "
          f"median of {args.seeds} seeds, {args.max_iter} iterations each; AP, AR10, cover as fractions")
    print(f"{'variant':<42}{'AP':>7}{'AR10':>7}{'IDSW':>6}{'cover':>7}   per-seed AP / IDSW")
    for name, values in rows:
        seeds = " ".join(f"{v['AP']:.3f}/{v['IDSW']}" for v in values)
        print(f"{name:<42}{med(values, 'AP'):7.3f}{med(values, 'AR10'):7.3f}"
              f"{med(values, 'IDSW'):6.1f}{med(values, 'cover'):7.3f}   {seeds}")
    summary = {"setting": args.setting, "seeds": args.seeds, "max_iter": args.max_iter,
               "rows": {name: values for name, values in rows}}
    (out / "association_summary.json").write_text(json.dumps(summary, indent=2))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Component ablations on synthetic data")
    parser.add_argument("--table", choices=["table8", "association"], default="table8")
    parser.add_argument("--setting", choices=["standard", "occlusion"], default=None,
                        help="synthetic videos (default: standard for table8, occlusion for association)")
    parser.add_argument("--output", default="ablation_output")
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant (the median is reported)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--train-videos", type=int, default=32)
    parser.add_argument("--test-videos", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--rows", default="", help="association: comma-separated training keys to run "
                        f"({', '.join(t[0] for t in TRAININGS)}); default all")
    parser.add_argument("--start-score", type=float, default=0.2,
                        help="memory-bank tracker's start_score_threshold (IDOL 0.5; small models score lower)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="association: recipe overrides for every training, e.g. solver.ims_per_batch=4")
    parser.add_argument("--idsw-score", type=float, default=0.2, help="predicted tracks below this are not matched")
    args = parser.parse_args(argv)
    args.setting = args.setting or ("occlusion" if args.table == "association" else "standard")
    out = Path(args.output)
    occlusion = OcclusionSetting() if args.setting == "occlusion" else None
    splits = generate_synthetic_splits(out / f"data_{args.setting}", train_videos=args.train_videos,
                                       test_videos=args.test_videos, num_frames=args.num_frames, height=128,
                                       width=192, num_categories=4, max_objects=6 if occlusion else 3, seed=0,
                                       occlusion=occlusion)
    if args.table == "association":
        print_association(association_table(args, out, splits), args, out)
        return
    rows = []
    for index, (name, crossover, embedding) in enumerate(VARIANTS):
        aps = [run_variant(out / f"variant{index}" / f"seed{seed}", splits, crossover, embedding, seed, args.max_iter)
               for seed in range(args.seeds)]
        rows.append((name, crossover, embedding["type"].startswith("global"), aps))
    print_table8(rows, args, out)


def print_table8(rows: list[tuple[str, bool, bool, list[float]]], args: argparse.Namespace, out: Path) -> None:
    """The median, spread and per-seed AP of each variant next to the paper's Table 8 (YouTube-VIS
    2019 val, ResNet-50, AP in percent), and whether the synthetic ordering agrees with the paper's."""
    print(f"\nHeld-out synthetic AP (fractions, as the official evaluator), median of {args.seeds} seeds "
          f"({args.max_iter} iterations each); paper: Table 8, YouTube-VIS 2019 val AP in percent")
    print(f"{'variant':<24}{'COL':^5}{'GBE':^5}{'AP':>7}{'min':>7}{'max':>7}{'paper':>7}   per seed")
    medians = []
    for (name, col, gbe, aps), paper in zip(rows, PAPER_TABLE8):
        medians.append(statistics.median(aps))
        print(f"{name:<24}{'x' if col else '':^5}{'x' if gbe else '':^5}{medians[-1]:7.3f}{min(aps):7.3f}"
              f"{max(aps):7.3f}{paper:7.1f}   {' '.join(f'{a:.3f}' for a in aps)}")
    ours = sorted(range(len(rows)), key=lambda i: medians[i])
    paper_order = sorted(range(len(rows)), key=lambda i: PAPER_TABLE8[i])
    agree = "agrees with" if ours == paper_order else "differs from"
    print(f"ordering by median AP (lowest first): {' < '.join(rows[i][0] for i in ours)}; this {agree} "
          f"the paper's ({' < '.join(rows[i][0] for i in paper_order)})")
    summary = {"seeds": args.seeds, "max_iter": args.max_iter, "train_videos": args.train_videos,
               "test_videos": args.test_videos,
               "rows": [{"variant": name, "crossover": col, "gbe": gbe, "AP": aps, "median_AP": med,
                         "paper_AP": paper} for (name, col, gbe, aps), med, paper in zip(rows, medians, PAPER_TABLE8)]}
    (out / "table8_summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
