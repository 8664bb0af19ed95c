"""Online inference over a video dataset, the files ``crossvis eval`` writes, and the end-of-training evaluation."""
from __future__ import annotations

import logging
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from tqdm import tqdm

from crossvis.errors import CrossVISError

__all__ = ["run_inference", "infer_and_evaluate", "split_paths", "evaluate_on_test", "METRIC_LINE_KEYS",
           "EVAL_OUTPUTS", "eval_output_folder"]

logger = logging.getLogger(__name__)

METRIC_LINE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
#: The files :func:`infer_and_evaluate` writes into its output folder.
EVAL_OUTPUTS = ("results.json", "results.zip", "metrics.json")


def eval_output_folder(output_dir: Union[str, os.PathLike], force: bool = False) -> Path:
    """Claim ``output_dir`` for the evaluation files (see :class:`crossvis.inference.outputs.OutputFolder`):
    the files of an earlier evaluation there are deleted; other files of those names are refused
    unless ``force``."""
    from crossvis.inference.outputs import OutputFolder

    return OutputFolder(output_dir, "eval", files=EVAL_OUTPUTS, force=force).prepare()


def run_inference(predictor: Any, video_dataset: Any, progress: bool = True) -> list[dict]:
    """Track every video of ``video_dataset`` online and collect the YouTube-VIS result entries.

    Args:
        predictor: a :class:`~crossvis.inference.predictor.Predictor` (anything with ``track`` and
            ``video_results``).
        video_dataset: items ``{"video_id": int, "frames": iterable of uint8 [3, H, W] tensors or
            H×W×3 arrays, "length": int, ...}`` (e.g. :class:`crossvis.data.YTVISVideoDataset`).
            When it carries the annotation ``categories`` (``video_dataset.data.categories``), labels
            are mapped to those category ids.
        progress: show a tqdm bar over frames.

    Returns:
        The result entries of all videos (``video_id``, ``score``, ``category_id``, ``segmentations``),
        videos in dataset order, tracks in id order.
    """
    categories = getattr(getattr(video_dataset, "data", None), "categories", None)
    if categories is not None and hasattr(predictor, "set_categories"):
        predictor.set_categories(categories)
    total = sum(int(video_dataset[i]["length"]) for i in range(len(video_dataset))) if progress else None
    results: list[dict] = []
    with tqdm(total=total, unit="frame", desc="inference", disable=not progress, dynamic_ncols=True) as bar:
        for index in range(len(video_dataset)):
            item = video_dataset[index]
            bar.set_postfix_str(f"video {index + 1}/{len(video_dataset)}")
            for _ in predictor.track(_hwc(frame) for frame in item["frames"]):
                bar.update(1)
            results.extend(predictor.video_results(int(item["video_id"])))
    return results


def _hwc(frame: Any) -> Any:
    """An H×W×3 numpy view of a uint8 [3, H, W] tensor (arrays pass through)."""
    if hasattr(frame, "permute") and frame.ndim == 3 and frame.shape[0] == 3:
        return frame.permute(1, 2, 0).numpy()
    return frame


def split_paths(recipe: Mapping[str, Any], split: str = "test") -> tuple[str, str]:
    """``(data.<split>.annotations, data.<split>.images)`` of a recipe, or a CrossVISError saying what to set."""
    data = recipe.get("data")
    node = data.get(split) if isinstance(data, Mapping) else None
    if not isinstance(node, Mapping) or not node.get("annotations") or not node.get("images"):
        raise CrossVISError(f"the recipe has no data.{split}.annotations / data.{split}.images; set them, e.g. "
                            f"--set data.{split}.annotations=valid.json data.{split}.images=valid/JPEGImages")
    return str(node["annotations"]), str(node["images"])


def infer_and_evaluate(predictor: Any, annotations: Union[str, os.PathLike], images: Union[str, os.PathLike],
                       output_dir: Union[str, os.PathLike], progress: bool = True,
                       force: bool = False) -> Optional[dict[str, float]]:
    """Run online inference on an annotated split and write the evaluation files.

    Writes ``output_dir/results.json`` (atomically), ``output_dir/results.zip`` (one member
    ``results.json``, the server layout) and, when the annotations have ground truth,
    ``output_dir/metrics.json`` (the official AP/AR keys). The folder is claimed first with
    :func:`eval_output_folder` (``force`` is passed on), so a stale ``metrics.json`` of an earlier
    evaluation never stays beside new results.

    Returns:
        The metrics, or None when the annotations carry no ground truth (valid/test splits).
    """
    from crossvis.data import YTVISVideoDataset
    from crossvis.atomic import atomic_write_text
    from crossvis.eval import evaluate_ytvis, write_results, write_submission_zip

    output_dir = eval_output_folder(output_dir, force=force)
    dataset = YTVISVideoDataset(str(annotations), str(images))
    results = run_inference(predictor, dataset, progress=progress)
    write_results(results, output_dir / "results.json")
    write_submission_zip(output_dir / "results.json", output_dir / "results.zip")
    if not dataset.data.has_annotations:
        return None
    if not results:
        logger.warning("the model detected nothing on %s; every metric is 0", annotations)
    # An empty prediction list is a legitimate outcome here (AP 0), not an input error.
    metrics = evaluate_ytvis(str(annotations), results, allow_empty=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_on_test(model: nn.Module, recipe: Mapping[str, Any], output_dir: Path,
                     device: Optional[torch.device] = None, progress: bool = False) -> Optional[dict[str, float]]:
    """Track every ``data.test`` video with ``model`` and score the results.

    Writes ``output_dir/results.json`` and ``results.zip`` (server layout) and, when the test
    annotations have ground truth, ``output_dir/metrics.json``; prints the AP line. A model that
    detects nothing scores 0 (it is not an error).

    Returns:
        The metrics (``AP, AP50, AP75, APs, APm, APl, AR1, AR10``, ...) or None without ground truth.
    """
    from crossvis.inference.runner import infer_and_evaluate, split_paths
    from crossvis.inference.predictor import OnlinePredictor, build_tracker, recipe_categories

    annotations, images = split_paths(recipe, "test")
    predictor = OnlinePredictor(model, build_tracker(recipe), recipe_categories(recipe), device=device)
    # the run folder is the trainer's (checked when the run started), so its eval/ files are too
    metrics = infer_and_evaluate(predictor, annotations, images, output_dir, progress=progress, force=True)
    if metrics is None:
        logger.info("wrote %s (the test annotations have no ground truth)", Path(output_dir) / "results.json")
        return None
    logger.info("test " + "  ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_LINE_KEYS if k in metrics))
    return metrics
