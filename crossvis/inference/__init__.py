"""Inference: the online :class:`Predictor`, the fast path, dataset inference and visualisation.

This package never imports the training stack.

    >>> from crossvis.inference import Predictor
    >>> predictor = Predictor("run/recipe.yaml", checkpoint="run/checkpoints/model_final.pth")  # doctest: +SKIP
    >>> for tracked in predictor.track(frames): ...                                              # doctest: +SKIP

Names are imported on first use.
"""
from __future__ import annotations

from crossvis import lazy_attributes

_LAZY = {
    "Predictor": "crossvis.inference.predictor",
    "OnlinePredictor": "crossvis.inference.predictor",
    "FastInference": "crossvis.inference.fast",
    "FastSettings": "crossvis.inference.fast",
    "TunedInference": "crossvis.inference.autotune",
    "AutotuneSettings": "crossvis.inference.autotune",
    "run_inference": "crossvis.inference.runner",
    "infer_and_evaluate": "crossvis.inference.runner",
    "evaluate_on_test": "crossvis.inference.runner",
    "draw_tracked_instances": "crossvis.inference.visualize",
    "track_color": "crossvis.inference.visualize",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
