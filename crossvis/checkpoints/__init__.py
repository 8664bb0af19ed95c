"""Checkpoint files: safe reading, tolerant weight loading, and the input conventions weights carry.

* :mod:`crossvis.checkpoints.loading` — ``load_checkpoint`` (``weights_only=True``: a checkpoint
  never runs code), ``extract_state_dict``, ``load_weights`` with its report, ``atomic_save``;
* :mod:`crossvis.checkpoints.conventions` — the input format, pixel mean/std and ResNet stride
  placement recorded in every checkpoint crossvis writes, and the check that refuses weights loaded
  into a model that expects other inputs.

Shared by training, inference and deployment.
"""
from crossvis.checkpoints.loading import (LoadReport, atomic_save, describe_load_failure, extract_state_dict,
                                          load_checkpoint, load_weights, unwrap_model)

__all__ = ["LoadReport", "atomic_save", "describe_load_failure", "extract_state_dict", "load_checkpoint",
           "load_weights", "unwrap_model"]
