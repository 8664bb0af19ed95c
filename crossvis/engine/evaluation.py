"""End-of-training evaluation on ``data.test`` (online inference + the YouTube-VIS evaluator)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

__all__ = ["evaluate_on_test", "METRIC_LINE_KEYS"]

METRIC_LINE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")


def evaluate_on_test(model: nn.Module, recipe: Mapping[str, Any], output_dir: Path,
                     device: Optional[torch.device] = None, progress: bool = False) -> Optional[dict[str, float]]:
    """Track every ``data.test`` video with ``model`` and score the results.

    Writes ``output_dir/results.json`` and ``results.zip`` (server layout) and, when the test
    annotations have ground truth, ``output_dir/metrics.json``; prints the AP line. A model that
    detects nothing scores 0 (it is not an error).

    Returns:
        The metrics (``AP, AP50, AP75, APs, APm, APl, AR1, AR10``, ...) or None without ground truth.
    """
    from crossvis.data import YTVISVideoDataset
    from crossvis.engine.checkpoint import atomic_write_text
    from crossvis.engine.inference import run_inference, split_paths
    from crossvis.engine.predictor import Predictor
    from crossvis.eval import evaluate_ytvis, write_results, write_submission_zip

    annotations, images = split_paths(recipe, "test")
    videos = YTVISVideoDataset(annotations, images)
    predictor = Predictor.from_model(model, recipe, device=device)
    results = run_inference(predictor, videos, progress=progress)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_results(results, output_dir / "results.json")
    write_submission_zip(output_dir / "results.json", output_dir / "results.zip")
    if not videos.data.has_annotations:
        print(f"crossvis: wrote {output_dir / 'results.json'} (the test annotations have no ground truth)")
        return None
    metrics = evaluate_ytvis(annotations, results, allow_empty=True)
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print("crossvis: test " + "  ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_LINE_KEYS if k in metrics))
    return metrics
