"""``crossvis quickstart [--output DIR] [--fast]``: the whole pipeline on synthetic data.

Generates a synthetic YouTube-VIS-format dataset (train + held-out test videos), trains the
built-in ``crossvis:quickstart_synthetic`` recipe from scratch, tracks the held-out videos online,
evaluates them (YouTube-VIS AP) and draws overlays of one test video. Everything lands in DIR:
``data/``, ``run/`` (the training run, see ``crossvis train``), ``run/eval/metrics.json``,
``overlays/<video>/*.jpg``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Optional

from crossvis.commands.recipe import add_set_argument

#: the synthetic dataset of the quickstart (sizes match the recipe's input size)
DATASET = {"train_videos": 48, "test_videos": 8, "num_frames": 12, "height": 128, "width": 192,
           "num_categories": 4, "max_objects": 3, "seed": 0}
#: --fast: a smoke test of the pipeline (minutes of CPU), not a meaningful AP
FAST = {"dataset": {"train_videos": 6, "test_videos": 2, "num_frames": 6},
        "overrides": {"solver.max_iter": 20, "solver.steps": [15], "solver.warmup_iters": 5,
                      "solver.checkpoint_period": 10, "solver.log_period": 5}}
RECIPE = "crossvis:quickstart_synthetic"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart", help="generate synthetic videos, train a small CrossVIS, track, evaluate, draw",
        description="Generate a synthetic dataset, train the built-in quickstart recipe on it, run online "
                    "inference on held-out videos, print their AP and write overlays of one video.")
    p.add_argument("--output", default="quickstart_output", metavar="DIR",
                   help="folder for the data, the run and the overlays (default: quickstart_output)")
    p.add_argument("--fast", action="store_true",
                   help="tiny data and 20 iterations: checks the pipeline in a few minutes (AP is meaningless)")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_quickstart(args.output, fast=args.fast, overrides=args.overrides)
    ap = summary["metrics"]["AP"] if summary["metrics"] else float("nan")
    print(f"crossvis quickstart: AP {ap:.3f} on {summary['test_videos']} held-out synthetic videos; "
          f"{summary['seconds'] / 60:.1f} min in total\n"
          f"  run:      {summary['run_dir']}\n  metrics:  {summary['run_dir'] / 'eval' / 'metrics.json'}\n"
          f"  overlays: {summary['overlays']}")
    return 0


def run_quickstart(output: str | Path, fast: bool = False, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the quickstart pipeline; return ``{"metrics", "run_dir", "overlays", "seconds", "test_videos"}``.

    An existing ``DIR/run`` with checkpoints is resumed instead of restarted.
    """
    from crossvis.data import generate_synthetic_splits
    from crossvis.training.trainer import Trainer
    from crossvis.recipes import apply_overrides, load_recipe, parse_overrides

    start = time.perf_counter()
    out = Path(output)
    dataset = {**DATASET, **(FAST["dataset"] if fast else {})}
    print(f"crossvis quickstart: writing {dataset['train_videos']} training and {dataset['test_videos']} "
          f"test videos to {out / 'data'}", flush=True)
    splits = generate_synthetic_splits(out / "data", **dataset)
    recipe = load_recipe(RECIPE, {
        "data.train.annotations": str(splits["train"].annotations), "data.train.images": str(splits["train"].images),
        "data.test.annotations": str(splits["test"].annotations), "data.test.images": str(splits["test"].images),
        **(FAST["overrides"] if fast else {})})
    if overrides:
        apply_overrides(recipe, parse_overrides(overrides))
    run_dir = out / "run"
    resume = (run_dir / "checkpoints" / "last_checkpoint").is_file()
    trainer = Trainer(recipe, run_dir, resume=resume)
    result = trainer.train()
    overlays = draw_overlays(trainer, splits["test"].annotations, splits["test"].images, out / "overlays")
    return {"metrics": result["metrics"], "run_dir": run_dir, "overlays": overlays,
            "seconds": time.perf_counter() - start, "test_videos": dataset["test_videos"]}


def draw_overlays(trainer: Any, annotations: Path, images: Path, out_dir: Path, video_index: int = 0) -> Path:
    """Track one test video with the trained model and save one overlay JPEG per frame."""
    import numpy as np
    from PIL import Image

    from crossvis.data import YTVISVideoDataset
    from crossvis.checkpoint import unwrap_model
    from crossvis.inference.predictor import OnlinePredictor, build_tracker, recipe_categories
    from crossvis.inference.visualize import draw_tracked_instances

    videos = YTVISVideoDataset(str(annotations), str(images))
    predictor = OnlinePredictor(unwrap_model(trainer.model), build_tracker(trainer.resolved_recipe),
                                recipe_categories(trainer.resolved_recipe), device=trainer.device)
    item = videos[video_index]
    frames = [np.ascontiguousarray(f.permute(1, 2, 0).numpy()) if hasattr(f, "permute") else f
              for f in item["frames"]]
    folder = out_dir / f"video_{int(item['video_id'])}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, (frame, instances) in enumerate(zip(frames, predictor.track(frames))):
        image = draw_tracked_instances(frame, instances, predictor.category_name)
        Image.fromarray(image).save(folder / f"{index:05d}.jpg", quality=90)
    return folder
