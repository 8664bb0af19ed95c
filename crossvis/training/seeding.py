"""Seeding and random-generator state capture (for exact resume)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "worker_init_fn", "get_rng_states", "set_rng_states"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: derive Python/NumPy seeds from torch's per-worker seed.

    torch seeds each worker with ``base_seed + worker_id``; NumPy and ``random`` would otherwise
    start from the parent's copied state in every worker.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def get_rng_states() -> dict[str, Any]:
    """The states of every global generator: ``python``, ``numpy``, ``torch`` and ``cuda`` (if any)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain lists/tensors only, so checkpoints load with torch.load(weights_only=True)
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_states` returned."""
    random.setstate(_as_python_state(states["python"]))
    np.random.set_state(_as_numpy_state(states["numpy"]))
    torch.set_rng_state(torch.as_tensor(states["torch"], dtype=torch.uint8))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in states["cuda"]])


def _as_python_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)


def _as_numpy_state(state: Any) -> tuple:
    name, keys, pos, has_gauss, cached = state
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    return (str(name), keys.astype(np.uint32), int(pos), int(has_gauss), float(cached))
