"""Component ablation on synthetic data, in the layout of the paper's Table 8.

Trains the quickstart model four ways — the CondInst-VIS baseline (pair-wise MaskTrack-style
embedding, no crossover), + crossover learning (COL), + global balanced embedding (GBE), and
both (CrossVIS) — for several seeds each, and prints the median held-out AP (and the min–max
spread) per variant:

    python examples/ablation.py --output ablation_output --seeds 3 --max-iter 300

Each run is an ordinary ``Trainer`` run in ``OUTPUT/<variant>/seed<k>`` (rerunning the script
resumes or skips finished runs). On synthetic shapes the differences are small and noisy; the
script shows how to run the comparison, the paper's numbers come from YouTube-VIS.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from crossvis import load_recipe
from crossvis.data import generate_synthetic_splits
from crossvis.training import Trainer

#: (name, crossover, embedding loss node) — the four rows of Table 8
VARIANTS = [
    ("CondInst-VIS baseline", False, {"type": "pairwise_embedding", "gamma": 0.0}),
    ("+ COL", True, {"type": "pairwise_embedding", "gamma": 0.0}),
    ("+ GBE", False, {"type": "global_focal_embedding", "alpha": 0.25, "gamma": 2.0}),
    ("CrossVIS (COL + GBE)", True, {"type": "global_focal_embedding", "alpha": 0.25, "gamma": 2.0}),
]


def run_variant(out: Path, splits: dict, crossover: bool, embedding: dict, seed: int, max_iter: int) -> float:
    """Train one variant with one seed (or reuse a finished run) and return its held-out AP."""
    metrics_file = out / "eval" / "metrics.json"
    if not metrics_file.is_file():
        recipe = load_recipe("crossvis:quickstart_synthetic", {
            "data.train.annotations": str(splits["train"].annotations),
            "data.train.images": str(splits["train"].images),
            "data.test.annotations": str(splits["test"].annotations),
            "data.test.images": str(splits["test"].images),
            "model.crossover": crossover, "model.embedding_loss": embedding, "runtime.seed": seed,
            "solver.max_iter": max_iter, "solver.steps": [int(max_iter * 0.75), int(max_iter * 0.92)],
            "solver.checkpoint_period": max(1, max_iter // 2)})
        resume = (out / "checkpoints" / "last_checkpoint").is_file()
        Trainer(recipe, out, resume=resume).train()
    return float(json.loads(metrics_file.read_text())["AP"])


def main() -> None:
    parser = argparse.ArgumentParser(description="CrossVIS component ablation on synthetic data (Table 8 layout)")
    parser.add_argument("--output", default="ablation_output")
    parser.add_argument("--seeds", type=int, default=3, help="runs per variant (the median is reported)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--train-videos", type=int, default=32)
    parser.add_argument("--test-videos", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.output)
    splits = generate_synthetic_splits(out / "data", train_videos=args.train_videos, test_videos=args.test_videos,
                                       num_frames=12, height=128, width=192, num_categories=4, max_objects=3,
                                       seed=0)
    rows = []
    for index, (name, crossover, embedding) in enumerate(VARIANTS):
        aps = [run_variant(out / f"variant{index}" / f"seed{seed}", splits, crossover, embedding, seed, args.max_iter)
               for seed in range(args.seeds)]
        rows.append((name, crossover, embedding["type"].startswith("global"), aps))

    print(f"\nHeld-out synthetic AP (fractions, as the official evaluator), median of {args.seeds} seeds "
          f"({args.max_iter} iterations each)")
    print(f"{'variant':<24}{'COL':^5}{'GBE':^5}{'AP':>7}{'min':>7}{'max':>7}")
    for name, col, gbe, aps in rows:
        print(f"{name:<24}{'x' if col else '':^5}{'x' if gbe else '':^5}"
              f"{statistics.median(aps):7.3f}{min(aps):7.3f}{max(aps):7.3f}")


if __name__ == "__main__":
    main()
