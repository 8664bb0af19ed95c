"""End-of-training evaluation on ``data.test`` (online inference + the YouTube-VIS evaluator)."""
from __future__ import annotations

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
    from crossvis.engine.inference import infer_and_evaluate, split_paths
    from crossvis.engine.predictor import Predictor

    annotations, images = split_paths(recipe, "test")
    predictor = Predictor.from_model(model, recipe, device=device)
    metrics = infer_and_evaluate(predictor, annotations, images, output_dir, progress=progress)
    if metrics is None:
        print(f"crossvis: wrote {Path(output_dir) / 'results.json'} (the test annotations have no ground truth)")
        return None
    print("crossvis: test " + "  ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_LINE_KEYS if k in metrics))
    return metrics
