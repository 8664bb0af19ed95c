"""The memory layout training runs in: measured on this machine when the recipe says ``auto``.

Convolutions on CPU run through oneDNN, whose speed depends on the tensor layout, the channel
counts and the CPU: on one machine channels-last (NHWC) training of a small network is ~15%
faster, on another it is slower. ``runtime.memory_format: auto`` times a few forward+backward
passes of copies of the model on one real batch in each layout and trains in the faster one;
the choice is stored in every checkpoint, so a resumed run continues in the same layout (and
stays exact). The weights are the same numbers in either layout; only the summation order of
convolutions differs.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from torch import nn

__all__ = ["apply_memory_format", "fastest_memory_format"]

logger = logging.getLogger(__name__)

_LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
#: channels-last must be this much faster to be chosen (timings of a few steps are noisy)
MARGIN = 0.05


def apply_memory_format(model: nn.Module, name: str) -> nn.Module:
    """Put ``model``'s 4-d parameters and buffers in layout ``name`` (contiguous | channels_last), in place.

    Convolutions given channels-last weights return channels-last outputs, so the whole network
    then runs in that layout from a plain (contiguous) input batch.
    """
    return model.to(memory_format=_LAYOUTS[name])


def fastest_memory_format(model: nn.Module, batch: list[Any], steps: int = 2) -> tuple[str, dict[str, float]]:
    """Time ``steps`` forward+backward passes (after one untimed pass) of a copy of ``model`` in
    each layout on ``batch``; returns the faster layout's name and the seconds per pass of each.

    Side-effect free: copies are timed (``model``'s weights, BatchNorm statistics and gradients
    are untouched) and the random generators are restored afterwards.
    """
    seconds: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for name in ("contiguous", "channels_last"):
            probe = apply_memory_format(copy.deepcopy(model), name).train()
            passes = []
            for _ in range(steps + 1):
                start = time.perf_counter()
                losses = probe(batch)
                sum(losses.values()).backward()
                probe.zero_grad(set_to_none=True)
                passes.append(time.perf_counter() - start)
            seconds[name] = min(passes[1:])
            del probe
    best = "channels_last" if seconds["channels_last"] < (1.0 - MARGIN) * seconds["contiguous"] else "contiguous"
    return best, seconds
