"""The engine's recipe sections, ``solver:`` and ``runtime:``, as validated dataclasses.

Every key has a default (the official CrossVIS schedule: configs/CrossVIS/Base-CrossVIS.yaml with detectron2's defaults); an unknown key is a
:class:`~crossvis.structures.CrossVISError` naming it with the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from crossvis.errors import CrossVISError

__all__ = ["SolverConfig", "RuntimeConfig", "section", "check_device"]


def _parse_section(cls: type, node: Optional[Mapping[str, Any]], where: str) -> Any:
    source = node
    node = dict(node or {})
    names = [f.name for f in dataclasses.fields(cls)]
    for key in node:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {where}.{close[0]}?" if close else f"; valid keys: {', '.join(names)}"
            # a location-aware recipe node names the file:line that set the key
            located = source.where(key) if hasattr(source, "where") else f"{where}.{key}"
            raise CrossVISError(f"unknown recipe key {located}{hint}")
    cfg = cls(**node)
    cfg.validate(where)
    return cfg


def _number(where: str, key: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                return kind(float(value))
            except ValueError:
                pass
        raise CrossVISError(f"recipe key {where}.{key} must be a number, got {value!r}")
    return kind(value)


def _flag(where: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise CrossVISError(f"recipe key {where}.{key} must be true or false, got {value!r}")


@dataclass
class SolverConfig:
    """Optimisation schedule. Iteration counts are in optimizer steps; ``ims_per_batch`` is the
    total number of frame pairs per step over all processes.

    ``optimizer``: ``sgd`` (momentum, the official solver) or ``adamw`` (used by the small
    quickstart recipe, which trains from scratch). ``weight_decay_norm`` applies to normalisation
    weights/biases and to the FCOS per-level scales. ``scale_by_batch: true`` applies the linear
    scaling rule against ``reference_batch_size``: with ``k = ims_per_batch / reference_batch_size``
    the learning rate is multiplied by ``k`` and ``max_iter``, ``steps``, ``warmup_iters`` and
    ``checkpoint_period`` are divided by ``k`` (so the number of pairs seen stays the same).
    ``amp``: mixed precision, float16 autocast with loss scaling on CUDA, bfloat16 autocast on CPU;
    ``auto``: on one CPU process, measured at the start together with ``runtime.memory_format``
    (bf16 is chosen only where it is faster, see crossvis/training/autotune.py); on CUDA, on.
    """

    optimizer: str = "sgd"
    ims_per_batch: int = 16
    base_lr: float = 0.005
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    max_iter: int = 23000
    steps: tuple = (15000, 21000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    checkpoint_period: int = 1900
    keep_last: int = 3
    amp: Union[bool, str] = False
    clip_grad_norm: Optional[float] = None
    scale_by_batch: bool = False
    reference_batch_size: int = 16
    log_period: int = 20

    def validate(self, where: str = "solver") -> None:
        for key in ("base_lr", "momentum", "weight_decay", "weight_decay_norm", "gamma", "warmup_factor"):
            setattr(self, key, _number(where, key, getattr(self, key)))
        for key in ("ims_per_batch", "max_iter", "warmup_iters", "checkpoint_period", "keep_last",
                    "reference_batch_size", "log_period"):
            setattr(self, key, _number(where, key, getattr(self, key), int))
        if self.clip_grad_norm is not None:
            self.clip_grad_norm = _number(where, "clip_grad_norm", self.clip_grad_norm)
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in ("sgd", "adamw"):
            raise CrossVISError(f"recipe key {where}.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        self.steps = tuple(_number(where, "steps", s, int) for s in (self.steps or ()))
        self.betas = tuple(_number(where, "betas", b) for b in self.betas)
        if list(self.steps) != sorted(self.steps):
            raise CrossVISError(f"recipe key {where}.steps must be increasing, got {list(self.steps)}")
        for key in ("ims_per_batch", "max_iter", "checkpoint_period", "reference_batch_size", "log_period"):
            if getattr(self, key) <= 0:
                raise CrossVISError(f"recipe key {where}.{key} must be positive, got {getattr(self, key)}")
        if self.keep_last < 1:
            raise CrossVISError(f"recipe key {where}.keep_last must be >= 1, got {self.keep_last}")
        for key in ("base_lr", "momentum", "weight_decay", "weight_decay_norm", "warmup_iters"):
            if getattr(self, key) < 0:
                raise CrossVISError(f"recipe key {where}.{key} must be >= 0, got {getattr(self, key)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise CrossVISError(f"recipe key {where}.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise CrossVISError(f"recipe key {where}.clip_grad_norm must be positive (or null), "
                                f"got {self.clip_grad_norm}")
        _flag(where, "scale_by_batch", self.scale_by_batch)
        if self.amp != "auto" and not isinstance(self.amp, bool):
            raise CrossVISError(f"recipe key {where}.amp must be true, false or auto, got {self.amp!r}")
        if not 0.0 < self.warmup_factor <= 1.0:
            raise CrossVISError(f"recipe key {where}.warmup_factor must be in (0, 1], got {self.warmup_factor}")

    def scaled(self) -> "SolverConfig":
        """Apply the linear scaling rule when ``scale_by_batch`` is set (otherwise return self)."""
        if not self.scale_by_batch:
            return self
        k = self.ims_per_batch / self.reference_batch_size

        def shrink(n: int) -> int:
            return max(1, int(round(n / k)))

        return dataclasses.replace(
            self, base_lr=self.base_lr * k, max_iter=shrink(self.max_iter),
            steps=tuple(shrink(s) for s in self.steps), warmup_iters=int(round(self.warmup_iters / k)),
            checkpoint_period=shrink(self.checkpoint_period), scale_by_batch=False,
            reference_batch_size=self.ims_per_batch)


@dataclass
class RuntimeConfig:
    """Where and how training runs.

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:K``. ``num_workers``:
    DataLoader worker processes per rank. ``tensorboard``: also write TensorBoard event files
    (needs the ``tensorboard`` package). ``find_unused_parameters``: passed to DDP.
    ``aspect_ratio_grouping``: batch landscape and portrait pairs separately. ``eval_at_end``:
    evaluate on ``data.test`` after training when it is set. ``num_threads``: torch intra-op
    threads on CPU (0: the physical cores in this process's affinity mask, see crossvis/threads.py).
    ``memory_format``: the training layout, ``contiguous``, ``channels_last`` or ``auto`` (on a
    single CPU process: measured at the start, the faster one; see crossvis/training/autotune.py).
    """

    device: str = "auto"
    seed: int = 42
    num_workers: int = 2
    tensorboard: bool = False
    find_unused_parameters: bool = True
    aspect_ratio_grouping: bool = True
    eval_at_end: bool = True
    num_threads: int = 0
    memory_format: str = "contiguous"

    def validate(self, where: str = "runtime") -> None:
        self.seed = _number(where, "seed", self.seed, int)
        self.num_workers = _number(where, "num_workers", self.num_workers, int)
        self.num_threads = _number(where, "num_threads", self.num_threads, int)
        for key in ("num_workers", "num_threads"):
            if getattr(self, key) < 0:
                raise CrossVISError(f"recipe key {where}.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("tensorboard", "find_unused_parameters", "aspect_ratio_grouping", "eval_at_end"):
            _flag(where, key, getattr(self, key))
        self.device = str(self.device)
        if self.memory_format not in ("contiguous", "channels_last", "auto"):
            raise CrossVISError(f"recipe key {where}.memory_format must be contiguous, channels_last or auto, "
                                f"got {self.memory_format!r}")

    def resolved_device(self) -> str:
        """``device`` with ``auto`` resolved; a device this machine lacks is a CrossVISError."""
        return check_device(self.device, "runtime.device")


def check_device(spec: Any, where: str = "--device") -> str:
    """``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:K``) as a device string this machine has.

    Raises:
        CrossVISError: an unknown device name, CUDA without a GPU, or a GPU index out of range.
    """
    import torch

    spec = str(spec).strip()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CrossVISError(f"{where} {spec!r} is not a device; use auto, cpu, cuda or cuda:K") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CrossVISError(f"{where} is {spec!r} but CUDA is not available; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CrossVISError(f"{where} is {spec!r} but this machine has {torch.cuda.device_count()} GPU(s) "
                                f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1})")
    elif device.type not in ("cpu", "mps"):
        raise CrossVISError(f"{where} {spec!r}: crossvis runs on cpu or cuda")
    return spec


def section(recipe: Mapping[str, Any], name: str) -> Any:
    """Parse ``recipe[name]`` (``solver`` or ``runtime``) into its dataclass.

    The one schema of these sections: ``crossvis train``, ``recipe check`` and ``recipe show``
    all validate through it, so they accept and refuse the same keys.
    """
    cls = {"solver": SolverConfig, "runtime": RuntimeConfig}[name]
    node = recipe.get(name) if isinstance(recipe, Mapping) else None
    if node is not None and not isinstance(node, Mapping):
        raise CrossVISError(f"recipe key {name} must be a mapping, got {type(node).__name__}")
    return _parse_section(cls, node, name)
