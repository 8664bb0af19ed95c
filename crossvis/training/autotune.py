"""How training runs fastest on this machine: the memory layout and the precision, measured.

Convolutions on CPU run through oneDNN, whose speed depends on the tensor layout, the channel
counts and the CPU: on one machine channels-last (NHWC) training of a small network is ~15%
faster, on another it is slower; bfloat16 autocast halves a step on a CPU with fast bf16 dot
products (AVX512-BF16 on AMD Zen 4) and slows it down on one that emulates them. So
``runtime.memory_format: auto`` and ``solver.amp: auto`` are decided by timing a few
forward+backward passes of copies of the model on one real batch in each candidate setup; the
run trains in the fastest, which must beat plain contiguous float32 by :data:`MARGIN`. The
choice is logged and stored in every checkpoint, so a resumed run continues in the same setup (and
stays exact). The weights are the same numbers in either layout; only the summation order of
convolutions differs. bfloat16 autocast keeps float32 weights and optimizer state (only the
matmuls/convolutions run in bf16, see ``torch.autocast``), so no loss scaling is needed.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

__all__ = ["LAYOUTS", "TrainingSetup", "apply_memory_format", "fastest_training_setup"]

logger = logging.getLogger(__name__)

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
#: a setup other than contiguous float32 must be this much faster to be chosen (a few timed
#: steps are noisy, and a tie is not worth another summation order or precision)
MARGIN = 0.05


class TrainingSetup(NamedTuple):
    """One candidate: a layout name (``contiguous`` | ``channels_last``) and bf16 autocast on/off."""

    memory_format: str
    amp: bool

    def __str__(self) -> str:
        return f"{self.memory_format} {'bf16 autocast' if self.amp else 'fp32'}"


def apply_memory_format(model: nn.Module, name: str) -> nn.Module:
    """Put ``model``'s 4-d parameters and buffers in layout ``name`` (contiguous | channels_last), in place.

    Convolutions given channels-last weights return channels-last outputs, so the whole network
    then runs in that layout from a plain (contiguous) input batch.
    """
    return model.to(memory_format=LAYOUTS[name])


def fastest_training_setup(model: nn.Module, batch: list[Any], memory_formats: Sequence[str],
                           amps: Sequence[bool], steps: int = 2,
                           device_type: str = "cpu") -> tuple[TrainingSetup, dict[TrainingSetup, float]]:
    """Time ``steps`` forward+backward passes (after one untimed pass) of a copy of ``model`` in
    every combination of ``memory_formats`` x ``amps`` on ``batch``.

    Returns:
        ``(best, seconds)``: the chosen setup and the seconds per pass of each candidate. The
        first candidate (``memory_formats[0]``, ``amps[0]``) is the baseline; another is chosen
        only when it is the fastest and at least :data:`MARGIN` faster than the baseline.

    Side-effect free: copies are timed (``model``'s weights, BatchNorm statistics and gradients
    are untouched) and the random generators are restored afterwards.
    """
    candidates = [TrainingSetup(fmt, bool(amp)) for fmt in memory_formats for amp in amps]
    seconds: dict[TrainingSetup, float] = {}
    with torch.random.fork_rng(devices=[]):
        for setup in candidates:
            probe = apply_memory_format(copy.deepcopy(model), setup.memory_format).train()
            passes = []
            for _ in range(steps + 1):
                start = time.perf_counter()
                with autocast(device_type, setup.amp):
                    losses = probe(batch)
                sum(losses.values()).backward()
                probe.zero_grad(set_to_none=True)
                passes.append(time.perf_counter() - start)
            seconds[setup] = min(passes[1:])
            del probe
    baseline = candidates[0]
    fastest = min(candidates, key=seconds.__getitem__)
    best = fastest if seconds[fastest] < (1.0 - MARGIN) * seconds[baseline] else baseline
    return best, seconds


def autocast(device_type: str, enabled: bool) -> contextlib.AbstractContextManager:
    """The training forward's mixed-precision context: bfloat16 on CPU, float16 on CUDA, or none."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if device_type == "cpu" else torch.float16)
