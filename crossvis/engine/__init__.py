"""Engine: training loop, checkpoints, distributed helpers, inference and visualisation.

Training pieces are imported eagerly (they need only torch); ``Predictor``, ``run_inference`` and
the evaluation helpers are imported on first use.
"""
from __future__ import annotations

from typing import Any

from crossvis.engine.checkpoint import (Checkpointer, LoadReport, atomic_save, atomic_write_text, load_checkpoint,
                                        load_weights)
from crossvis.engine.config import RuntimeConfig, SolverConfig
from crossvis.engine.sampler import GroupedInfiniteBatchSampler, KeyedDataset, SampleKey
from crossvis.engine.solver import WarmupMultiStepLR, build_optimizer
from crossvis.engine.trainer import Trainer

_LAZY = {
    "Predictor": ("crossvis.engine.predictor", "Predictor"),
    "run_inference": ("crossvis.engine.inference", "run_inference"),
    "evaluate_on_test": ("crossvis.engine.evaluation", "evaluate_on_test"),
}

__all__ = ["Trainer", "Checkpointer", "LoadReport", "atomic_save", "atomic_write_text", "load_checkpoint",
           "load_weights", "SolverConfig", "RuntimeConfig", "GroupedInfiniteBatchSampler", "KeyedDataset",
           "SampleKey", "WarmupMultiStepLR", "build_optimizer", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crossvis.engine' has no attribute {name!r}")
