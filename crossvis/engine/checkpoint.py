"""Checkpoints: atomic saving, keep-last-K rotation, resume pointers and tolerant weight loading.

A training checkpoint ``DIR/checkpoints/model_{iter:07d}.pth`` is a dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... (AMP only),
     "iteration": int (completed iterations), "recipe": plain dict (resolved),
     "rng": {"python", "numpy", "torch", "cuda"?}, "sampler": {...}}

``DIR/checkpoints/last_checkpoint`` holds the file name of the newest one. Every file is written
to a temporary file in the same directory, fsynced and moved into place with ``os.replace``, so
a crash never leaves a truncated checkpoint or pointer behind.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from crossvis.structures import CrossVISError

__all__ = ["atomic_save", "atomic_write_text", "Checkpointer", "load_checkpoint", "extract_state_dict",
           "load_weights", "LoadReport", "unwrap_model"]

POINTER = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj, path)`` through a temporary file + ``os.replace`` (all-or-nothing)."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write ``text`` to ``path`` all-or-nothing."""
    _atomic_write(Path(path), lambda f: f.write(text), "w")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP/DataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class Checkpointer:
    """Saves and finds training checkpoints in ``directory``.

    Args:
        directory: where ``model_{iter:07d}.pth``, ``model_final.pth`` and ``last_checkpoint`` live.
        keep_last: how many periodic checkpoints to keep (older ones are deleted after a save;
            ``model_final.pth`` is never deleted).
    """

    def __init__(self, directory: Union[str, Path], keep_last: int = 3) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``state`` as ``name`` (e.g. ``model_0001900.pth``), update the pointer, rotate."""
        path = self.directory / name
        atomic_save(dict(state), path)
        atomic_write_text(self.directory / POINTER, name + "\n")
        self._rotate()
        return path

    @staticmethod
    def periodic_name(iteration: int) -> str:
        return f"model_{iteration:07d}.pth"

    def _rotate(self) -> None:
        periodic = sorted(p for p in self.directory.iterdir() if _PERIODIC.match(p.name))
        for old in periodic[:-self.keep_last]:
            old.unlink(missing_ok=True)

    def latest(self) -> Optional[Path]:
        """The checkpoint named by ``last_checkpoint``, else the newest periodic one, else None."""
        pointer = self.directory / POINTER
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if candidate.is_file():
                return candidate
        periodic = sorted(p for p in self.directory.glob("model_*.pth") if _PERIODIC.match(p.name))
        return periodic[-1] if periodic else None


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; a missing or unreadable file is a CrossVISError."""
    path = Path(path)
    if not path.is_file():
        raise CrossVISError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we can read"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrossVISError(f"{path} is not a PyTorch checkpoint that can be loaded safely "
                            f"(torch.load weights_only=True failed: {first[:200]}); pass a .pth written by "
                            f"crossvis or torch.save(state_dict)") from None
    if not isinstance(obj, Mapping):
        raise CrossVISError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or a state_dict")
    return dict(obj)


def extract_state_dict(ckpt: Mapping[str, Any], source: str = "<state dict>") -> "OrderedDict[str, torch.Tensor]":
    """The model weights in ``ckpt``: ``ckpt["model"]`` or ``ckpt`` itself, ``module.`` prefixes removed.

    Plugins implementing ``crossvis_convert_checkpoint`` may translate foreign formats first.
    """
    from crossvis.plugins import get_plugin_manager

    state: Any = ckpt
    for converted in get_plugin_manager().call_safely("crossvis_convert_checkpoint", state_dict=dict(ckpt),
                                                      source=source):
        if converted is not None:
            state = converted
            break
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    tensors = OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise CrossVISError(f"{source} contains no tensors: it is not a model checkpoint "
                            f"(expected a state_dict or a dict with a 'model' state_dict)")
    if all(k.startswith("module.") for k in tensors):
        tensors = OrderedDict((k[len("module."):], v) for k, v in tensors.items())
    return tensors


@dataclass
class LoadReport:
    """What :func:`load_weights` did. ``skipped`` maps key -> (checkpoint shape, model shape)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A human-readable table: loaded keys summarised per module, the others one per line."""
        lines = [f"weights from {self.source}: {len(self.loaded)} loaded, {len(self.skipped)} skipped "
                 f"(shape mismatch), {len(self.missing)} missing, {len(self.unexpected)} unexpected"]
        rows: list[tuple[str, str, str, str]] = []
        per_prefix: "OrderedDict[str, int]" = OrderedDict()
        for key in self.loaded:
            prefix = ".".join(key.split(".")[:2])
            per_prefix[prefix] = per_prefix.get(prefix, 0) + 1
        rows += [("loaded", f"{prefix}.* ({n} tensors)", "", "") for prefix, n in per_prefix.items()]
        rows += [("skipped", k, str(tuple(a)), str(tuple(b))) for k, (a, b) in self.skipped.items()]
        rows += [("missing", k, "-", "") for k in self.missing]
        rows += [("unexpected", k, "", "-") for k in self.unexpected]
        if rows:
            header = ("status", "key", "checkpoint shape", "model shape")
            widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
            fmt = "  ".join(f"{{:{w}}}" for w in widths)
            lines.append(fmt.format(*header).rstrip())
            lines += [fmt.format(*r).rstrip() for r in rows]
        return "\n".join(lines)


def load_weights(model: nn.Module, path_or_state: Union[str, Path, Mapping[str, Any]],
                 report: bool = True) -> LoadReport:
    """Load every matching tensor of a checkpoint into ``model``; never fails on a mismatch.

    Tensors whose shape differs from the model's (e.g. a classifier trained with another number of
    classes) are skipped; keys the model lacks are reported as unexpected, model keys the file
    lacks as missing (they keep their current values).

    Args:
        model: the target (a DDP wrapper is unwrapped).
        path_or_state: a checkpoint path (crossvis ``.pth`` or a bare ``state_dict`` saved by
            ``torch.save``) or an already loaded dict.
        report: print :meth:`LoadReport.table` to stdout.
    """
    model = unwrap_model(model)
    if isinstance(path_or_state, (str, Path)):
        source = str(path_or_state)
        ckpt = load_checkpoint(path_or_state)
    else:
        source = "<state dict>"
        ckpt = dict(path_or_state)
    incoming = extract_state_dict(ckpt, source)
    own = model.state_dict()
    result = LoadReport(source=source)
    to_load = OrderedDict()
    for key, value in incoming.items():
        if key not in own:
            result.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            result.skipped[key] = (tuple(value.shape), tuple(own[key].shape))
        else:
            to_load[key] = value
            result.loaded.append(key)
    result.missing = [k for k in own if k not in incoming]
    model.load_state_dict(to_load, strict=False)
    if report:
        print(result.table(), file=sys.stdout, flush=True)
    return result
