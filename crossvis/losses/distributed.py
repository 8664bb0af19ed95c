"""Cross-process averaging of loss normalisers (a no-op without torch.distributed)."""
from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["mean_over_processes"]


def mean_over_processes(value: Tensor) -> Tensor:
    """Mean of ``value`` over all processes of the default group; ``value`` itself when not distributed.

    Args:
        value: a float tensor (any shape); not modified.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()
