"""Process-group helpers for ``torchrun`` training, and cross-process averaging for the losses.

``torchrun --nproc_per_node N crossvis train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts a process group
(NCCL when the run uses CUDA, gloo otherwise). Without those variables everything here degrades to
a single process: rank 0 of a world of size 1.

What a multi-process run shares with a single-process run of the same ``solver.ims_per_batch``:
the sampler gives every rank its contiguous slice of the same global batch, DDP averages the
gradients, and the criterion averages the FCOS normalisers (positive counts) over ranks, so the
detection losses match. BatchNorm layers (mask branch, embedding head, a BN backbone) use
per-rank batch statistics, as in the official per-GPU training (no SyncBN), so the mask and
embedding losses differ slightly (tests/training/test_distributed.py states the measured sizes).
Only rank 0 writes logs, checkpoints and the evaluation; random-generator states saved in a
checkpoint are rank 0's and are restored on every rank.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from crossvis.errors import CrossVISError

__all__ = ["init_distributed", "cleanup_distributed", "is_distributed", "get_rank", "get_world_size",
           "get_local_rank", "is_main_process", "barrier", "all_reduce_mean", "launched_by_torchrun",
           "mean_over_processes"]


def launched_by_torchrun() -> bool:
    """True when the process was started by ``torchrun`` (or an equivalent launcher) with WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device: str) -> torch.device:
    """Start the process group if launched by torchrun; return the device this rank should use.

    Args:
        device: the recipe's ``runtime.device`` (``"cpu"``, ``"cuda"`` or ``"cuda:K"``). Under torchrun
            with CUDA, each rank uses ``cuda:LOCAL_RANK``.
    """
    wants_cuda = device.startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        raise CrossVISError(f"runtime.device is {device!r} but CUDA is not available; "
                            f"use --set runtime.device=cpu")
    if not launched_by_torchrun():
        return torch.device(device)
    if not is_distributed():
        backend = "nccl" if wants_cuda else "gloo"
        if wants_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    if wants_cuda:
        return torch.device("cuda", get_local_rank())
    return torch.device("cpu")


def cleanup_distributed(wait: bool = True) -> None:
    """Destroy the process group (no-op in a single process).

    Args:
        wait: first wait for every rank at a barrier (skip it when this rank failed, since the
            others may never arrive).
    """
    if is_distributed():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: Any = "cpu") -> dict[str, float]:
    """Average a dict of Python floats over ranks (identity in a single process)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = list(values)  # every rank has the same keys in the same order (the model's loss dict)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over all processes of the default group; ``value`` itself when not distributed.

    Used by the losses for their normalisers (FCOS positive counts), so a multi-process run
    normalises like one process with the same total batch.

    Args:
        value: a float tensor (any shape); not modified.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()
