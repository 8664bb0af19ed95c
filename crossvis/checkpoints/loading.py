"""Checkpoint files: atomic saving, safe loading and tolerant weight loading.

Shared by training (:mod:`crossvis.training.checkpointer` writes and resumes runs), inference
(:class:`crossvis.inference.Predictor`) and deployment (:mod:`crossvis.deploy.convert`).
Loading is ``torch.load(weights_only=True)``: a checkpoint never runs code.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from crossvis.atomic import atomic_write
from crossvis.errors import CrossVISError

__all__ = ["atomic_save", "load_checkpoint", "describe_load_failure", "extract_state_dict", "load_weights", "LoadReport", "unwrap_model"]

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save(obj, path)`` all-or-nothing (see :func:`crossvis.atomic.atomic_write`)."""
    atomic_write(Path(path), lambda f: torch.save(obj, f), "wb")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP/DataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; a missing or unreadable file is a CrossVISError."""
    path = Path(path)
    if not path.is_file():
        raise CrossVISError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warnings are not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we can read"
        raise CrossVISError(f"{path} cannot be loaded as a checkpoint: {describe_load_failure(exc)}; pass a .pth "
                            f"written by crossvis or torch.save(state_dict)") from None
    if not isinstance(obj, Mapping):
        raise CrossVISError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict or a state_dict")
    return dict(obj)


def describe_load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words (never torch's advice to
    load it unsafely: crossvis does not unpickle code)."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"it pickles the Python object {unsafe.group(1)}, and crossvis loads only tensors and plain "
                f"containers (a checkpoint never runs code)")
    if "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error: \s*([^\n]+)", text)
        return ("it is not a torch.save file of tensors and plain containers"
                + (f" ({detail.group(1).strip()[:80]})" if detail else ""))
    if isinstance(exc, (EOFError, OSError)) or "zip archive" in text or "central directory" in text:
        return "the file is truncated or corrupted (not a complete torch.save archive)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:160]}"


def extract_state_dict(ckpt: Mapping[str, Any], source: str = "<state dict>") -> "OrderedDict[str, torch.Tensor]":
    """The model weights in ``ckpt``: ``ckpt["model"]`` or ``ckpt`` itself, ``module.`` prefixes removed.

    Plugins implementing ``crossvis_convert_checkpoint`` may translate foreign formats first.
    """
    from crossvis.plugins import get_plugin_manager

    state: Any = ckpt
    converted = get_plugin_manager().call("crossvis_convert_checkpoint", state_dict=dict(ckpt), source=source)
    if converted is not None:
        state = converted
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

    Weights whose recorded input conventions (:mod:`crossvis.checkpoints.conventions`) disagree with the
    model's are refused (CrossVISError). Tensors whose shape differs from the model's (e.g. a
    classifier trained with another number of classes) are skipped; keys the model lacks are
    reported as unexpected, model keys the file lacks as missing (they keep their current values).

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
    from crossvis.checkpoints.conventions import adapt_torchvision_resnet, check_weight_conventions

    check_weight_conventions(model, ckpt, source, incoming)  # refuses weights of other input conventions
    incoming = adapt_torchvision_resnet(model, incoming)
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
        logger.info(result.table(), extra={"plain": True})
    return result
