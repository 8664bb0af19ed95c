"""Training: the loop, solver, sampler, seeding, run checkpoints, metrics and the training dataset.

    >>> from crossvis.recipes import load_recipe
    >>> from crossvis.training import Trainer
    >>> Trainer(load_recipe("crossvis:quickstart_synthetic"), "runs/demo").train()   # doctest: +SKIP

Names are imported on first use, so ``import crossvis.training`` is cheap.
"""
from __future__ import annotations

from crossvis import lazy_attributes

_LAZY = {
    "Trainer": "crossvis.training.trainer",
    "Checkpointer": "crossvis.training.checkpointer",
    "build_optimizer": "crossvis.training.solver",
    "WarmupMultiStepLR": "crossvis.training.solver",
    "GroupedInfiniteBatchSampler": "crossvis.training.sampler",
    "KeyedDataset": "crossvis.training.sampler",
    "SampleKey": "crossvis.training.sampler",
    "seed_everything": "crossvis.training.seeding",
    "MetricsLogger": "crossvis.training.metrics",
    "build_train_dataset": "crossvis.training.datasets",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
