"""``crossvis quickstart [--output DIR] [--fast]``: the whole pipeline on synthetic data.

Generates a synthetic YouTube-VIS-format dataset (train + held-out test videos), trains the
built-in ``crossvis:quickstart_synthetic`` recipe from scratch on all CPU cores, tracks the
held-out videos online, evaluates them (YouTube-VIS AP, printed as fractions like the official
evaluator) and draws the held-out video with the most tracks that cross. Everything lands in DIR:
``data/``, ``run/`` (the training run, see ``crossvis train``), ``run/eval/metrics.json``,
``overlays/<video>/*.jpg`` and ``overlays/contact_sheet.png`` (frames × time, one colour and id
per track).

Re-running on the same DIR reuses what is there: the data when it was written with the same
settings, a finished run (its final checkpoint and metrics), an interrupted run is resumed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

from crossvis.commands.recipe import add_set_argument

#: the synthetic dataset of the quickstart (sizes match the recipe's input size)
DATASET = {"train_videos": 48, "test_videos": 8, "num_frames": 12, "height": 128, "width": 192,
           "num_categories": 4, "max_objects": 4, "seed": 0, "appearance": "varied"}
#: --fast: a smoke test of the pipeline (minutes of CPU), not a meaningful AP
FAST = {"dataset": {"train_videos": 6, "test_videos": 2, "num_frames": 6},
        "overrides": {"solver.max_iter": 20, "solver.steps": [15], "solver.warmup_iters": 5,
                      "solver.checkpoint_period": 10, "solver.log_period": 5}}
RECIPE = "crossvis:quickstart_synthetic"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart", help="generate synthetic videos, train a small CrossVIS, track, evaluate, draw",
        description="Generate a synthetic dataset, train the built-in quickstart recipe on it, run online "
                    "inference on held-out videos, print their AP (fractions, as the official evaluator) and "
                    "draw the held-out video with the most crossing tracks. Re-running on DIR reuses its data "
                    "and finished run.")
    p.add_argument("--output", default="quickstart_output", metavar="DIR",
                   help="folder for the data, the run and the overlays (default: quickstart_output)")
    p.add_argument("--fast", action="store_true",
                   help="tiny data and 20 iterations: checks the pipeline in a few minutes (AP is meaningless)")
    add_set_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_quickstart(args.output, fast=args.fast, overrides=args.overrides)
    m = summary["metrics"]
    scores = (f"AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AR10 {m['AR10']:.3f} (fractions)" if m else "no AP")
    print(f"crossvis quickstart: {scores} on {summary['test_videos']} held-out synthetic videos; "
          f"{summary['seconds'] / 60:.1f} min in total{' (reused the finished run)' if summary['reused'] else ''}\n"
          f"  run:           {summary['run_dir']}\n  metrics:       {summary['run_dir'] / 'eval' / 'metrics.json'}\n"
          f"  overlays:      {summary['overlays']}\n  contact sheet: {summary['contact_sheet']}")
    return 0


def _say(message: str) -> None:
    print(f"crossvis quickstart: {message}", flush=True)


def prepare_data(root: Path, dataset: dict[str, Any]) -> dict[str, Any]:
    """The quickstart's splits under ``root``: reused when ``root/settings.json`` matches ``dataset``."""
    from crossvis.atomic import atomic_write_text
    from crossvis.data import generate_synthetic_splits
    from crossvis.data.synthetic import SyntheticPaths

    settings = root / "settings.json"
    splits = {name: SyntheticPaths(root / name, root / name / "annotations.json", root / name / "JPEGImages")
              for name in ("train", "test")}
    if (settings.is_file() and json.loads(settings.read_text()) == dataset
            and all(s.annotations.is_file() for s in splits.values())):
        _say(f"reusing the data in {root}")
        return splits
    _say(f"writing {dataset['train_videos']} training and {dataset['test_videos']} test videos to {root}")
    splits = generate_synthetic_splits(root, progress=True, **dataset)
    atomic_write_text(settings, json.dumps(dataset, indent=1) + "\n")
    return splits


def run_quickstart(output: str | Path, fast: bool = False, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """Run the quickstart pipeline.

    Returns:
        ``{"metrics", "run_dir", "overlays", "contact_sheet", "seconds", "test_videos", "reused"}``.
    """
    start = time.perf_counter()
    from crossvis.threads import available_physical_cores

    cores = available_physical_cores()
    _say(f"starting on {cores} CPU core{'s' if cores > 1 else ''} (torch threads); loading torch")
    import torch

    from crossvis.recipes import apply_overrides, load_recipe, parse_overrides

    out = Path(output)
    dataset = {**DATASET, **(FAST["dataset"] if fast else {})}
    splits = prepare_data(out / "data", dataset)
    recipe = load_recipe(RECIPE, {
        "data.train.annotations": str(splits["train"].annotations), "data.train.images": str(splits["train"].images),
        "data.test.annotations": str(splits["test"].annotations), "data.test.images": str(splits["test"].images),
        **(FAST["overrides"] if fast else {})})
    if overrides:
        apply_overrides(recipe, parse_overrides(overrides))
    runtime = recipe.setdefault("runtime", {})
    if not runtime.get("num_threads"):
        runtime["num_threads"] = cores
    torch.set_num_threads(int(runtime["num_threads"]))
    runtime["eval_at_end"] = False  # evaluated below, with a progress bar

    run_dir = out / "run"
    _check_run_settings(run_dir, {"dataset": dataset, "overrides": list(overrides or []), "fast": fast})
    final = run_dir / "checkpoints" / "model_final.pth"
    metrics_path = run_dir / "eval" / "metrics.json"
    reused = final.is_file() and metrics_path.is_file() and (run_dir / "recipe.yaml").is_file()
    if reused:
        from crossvis.inference.predictor import Predictor

        _say(f"reusing the finished run in {run_dir}")
        predictor = Predictor(run_dir / "recipe.yaml", checkpoint=final, device="cpu")
        metrics = json.loads(metrics_path.read_text())
    else:
        predictor = _train(recipe, run_dir)
        from crossvis.inference.runner import infer_and_evaluate

        _say(f"tracking and evaluating {dataset['test_videos']} held-out videos")
        metrics = infer_and_evaluate(predictor, splits["test"].annotations, splits["test"].images,
                                     run_dir / "eval", progress=True)
    overlays, sheet = draw_overlays(predictor, splits["test"].annotations, splits["test"].images, out / "overlays")
    return {"metrics": metrics, "run_dir": run_dir, "overlays": overlays, "contact_sheet": sheet,
            "seconds": time.perf_counter() - start, "test_videos": dataset["test_videos"], "reused": reused}


def _check_run_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record what ``run_dir`` is trained with; refuse to reuse or resume a run made with other settings."""
    from crossvis.atomic import atomic_write_text
    from crossvis.errors import CrossVISError

    path = run_dir / "quickstart.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != settings:
            raise CrossVISError(f"{run_dir} was trained with other quickstart settings ({path}: {before}); "
                                f"choose another --output, or delete {run_dir} to train anew")
        return
    if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
        raise CrossVISError(f"{run_dir} holds checkpoints of a run this quickstart did not start; "
                            f"choose another --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def _train(recipe: dict[str, Any], run_dir: Path) -> Any:
    """Train (resuming an interrupted run) with a progress bar; return a Predictor of the model."""
    from tqdm import tqdm

    from crossvis.checkpoints import unwrap_model
    from crossvis.hookspecs import hookimpl
    from crossvis.inference.predictor import OnlinePredictor, build_tracker, recipe_categories
    from crossvis.plugins import get_plugin_manager, register_plugin
    from crossvis.training.trainer import Trainer

    resume = (run_dir / "checkpoints" / "last_checkpoint").is_file()
    _say(("resuming the run in " if resume else "building the model and the training data for ") + str(run_dir))
    # resume=True also starts afresh in a folder whose run was killed before its first checkpoint
    trainer = Trainer(recipe, run_dir, resume=True)
    bar = tqdm(total=trainer.max_iter, initial=trainer.iteration, unit="it", desc="training", dynamic_ncols=True)

    class _Progress:
        @hookimpl
        def crossvis_after_step(self, trainer: Any, iteration: int, metrics: dict) -> None:
            bar.update(iteration - bar.n)
            bar.set_postfix_str(f"loss {metrics['total_loss']:.3f}", refresh=False)

    name = register_plugin(_Progress(), name="crossvis-quickstart-progress")
    try:
        trainer.train()
    finally:
        bar.close()
        get_plugin_manager().remove_plugin(name)
    return OnlinePredictor(unwrap_model(trainer.model), build_tracker(trainer.resolved_recipe),
                           recipe_categories(trainer.resolved_recipe), device=trainer.device)


def pick_video_to_draw(annotations: Path) -> int:
    """Index of the video with the most ground-truth tracks among those where two tracks cross
    (their boxes overlap in some frame); the video with the most tracks when none cross."""
    data = json.loads(Path(annotations).read_text())
    tracks: dict[int, list[dict]] = {}
    for track in data.get("annotations") or []:
        tracks.setdefault(track["video_id"], []).append(track)

    def crossing(video_tracks: list[dict]) -> bool:
        for i, a in enumerate(video_tracks):
            for b in video_tracks[i + 1:]:
                for ba, bb in zip(a["bboxes"], b["bboxes"]):
                    if ba and bb and ba[0] < bb[0] + bb[2] and bb[0] < ba[0] + ba[2] \
                            and ba[1] < bb[1] + bb[3] and bb[1] < ba[1] + ba[3]:
                        return True
        return False

    def key(index: int) -> tuple[bool, int, int]:
        video_tracks = tracks.get(data["videos"][index]["id"], [])
        return crossing(video_tracks), len(video_tracks), -index

    return max(range(len(data["videos"])), key=key)


def draw_overlays(predictor: Any, annotations: Path, images: Path, out_dir: Path) -> tuple[Path, Path]:
    """Track the held-out video :func:`pick_video_to_draw` chooses; save one overlay JPEG per frame
    and a contact sheet PNG. Returns ``(overlay folder, contact sheet path)``."""
    from PIL import Image

    from crossvis.data import YTVISVideoDataset
    from crossvis.inference.visualize import ContactSheet, draw_tracked_instances

    videos = YTVISVideoDataset(str(annotations), str(images))
    if hasattr(predictor, "set_categories"):
        predictor.set_categories(videos.data.categories)
    item = videos[pick_video_to_draw(annotations)]
    folder = out_dir / item["name"]
    folder.mkdir(parents=True, exist_ok=True)
    frames = [f.permute(1, 2, 0).numpy() for f in item["frames"]]
    sheet = ContactSheet(predictor.category_name, max_frames=12)
    threshold = 0.3
    for index, (frame, instances) in enumerate(zip(frames, predictor.track(frames))):
        image = draw_tracked_instances(frame, instances, predictor.category_name, threshold)
        Image.fromarray(image).save(folder / f"{index:05d}.jpg", quality=90)
        sheet.add(index, image, instances, threshold)
    path = sheet.save(out_dir / "contact_sheet.png", title=f"{item['name']}: tracks scoring >= {threshold}")
    return folder, path
