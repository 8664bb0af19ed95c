"""Export the per-frame network of a CondInst/CrossVIS model (``torch.export`` or ONNX).

Only the static part is exported: normalised padded image → per-level class / box / centerness /
controller (/ embedding) maps and the mask features, i.e. ``model.forward_network``. The dynamic
mask head, the post-processing and the tracker stay in Python (as in AdelaiDet's CondInst ONNX
export): :func:`predict_from_outputs` runs them on the exported graph's outputs.

The exported graph returns a flat tuple of tensors; :func:`output_names` gives their names
(``cls_logits.0`` … ``mask_feats``) and :func:`unflatten_outputs` turns the tuple back into the
:class:`~crossvis.models.outputs.NetworkOutputs` that ``forward_network`` returns.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from crossvis.atomic import atomic_write
from crossvis.models.outputs import NetworkOutputs
from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["FlatNetwork", "output_names", "unflatten_outputs", "export_network", "load_exported",
           "predict_from_outputs", "onnx_available"]

#: The dense per-level fields of NetworkOutputs that are exported, in this order (then ``mask_feats``).
_PER_LEVEL = ("cls_logits", "bbox_reg", "ctrness", "controller", "embeddings")


def output_names(model: nn.Module) -> list[str]:
    """Names of the exported outputs in order: ``<kind>.<level>`` for each per-level map, then ``mask_feats``."""
    levels = len(model.network.strides)
    kinds = [k for k in _PER_LEVEL if k != "embeddings" or getattr(model.network.head, "embed_dim", None)]
    return [f"{k}.{level}" for k in kinds for level in range(levels)] + ["mask_feats"]


def unflatten_outputs(names: Sequence[str], tensors: Sequence[Tensor]) -> NetworkOutputs:
    """The :class:`~crossvis.models.outputs.NetworkOutputs` from a graph's flat outputs.

    Args:
        names: ``<field>.<level>`` for per-level fields and ``<field>`` for ``mask_feats``, e.g.
            :func:`output_names` of the exported model (dense fields; sparse ones work the same).
        tensors: the graph's outputs, in that order.

    Raises:
        CrossVISError: when the counts differ, a name is not a network output or a required one
            (``cls_logits``, ``bbox_reg``, ``ctrness``, ``mask_feats``) is missing.
    """
    if len(names) != len(tensors):
        raise CrossVISError(f"the exported graph gave {len(tensors)} outputs for {len(names)} names; "
                            f"use output_names() of the model it was exported from")
    known = [f.name for f in fields(NetworkOutputs)]
    values: dict[str, Union[Tensor, list[Tensor]]] = {}
    for name, tensor in zip(names, tensors):
        kind, _, level = name.partition(".")
        if kind not in known:
            raise CrossVISError(f"exported output {name!r} is not a network output (known: {', '.join(known)})")
        if level:
            values.setdefault(kind, []).append(tensor)
        else:
            values[kind] = tensor
    missing = [k for k in ("cls_logits", "bbox_reg", "ctrness", "mask_feats") if k not in values]
    if missing:
        raise CrossVISError(f"the exported outputs lack {', '.join(missing)}; use output_names() of the model "
                            f"they were exported from")
    return NetworkOutputs(**values)


class FlatNetwork(nn.Module):
    """``model.network`` with a flat tuple output (what ONNX and deployment runtimes want)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.network = model.network
        self.names = output_names(model)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images: float32 [B, 3, H, W] normalised, H and W multiples of 32 → tensors in :func:`output_names` order."""
        out = self.network(images)
        return tuple(getattr(out, kind)[int(level)] if level else getattr(out, kind)
                     for kind, _, level in (n.partition(".") for n in self.names))


def onnx_available() -> bool:
    """Whether the ``onnx`` package (needed by ``torch.onnx.export``) is installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_network(model: nn.Module, output: Union[str, Path], fmt: str = "torch-export",
                   height: int = 384, width: int = 640) -> Path:
    """Export ``model``'s network for a [1, 3, height, width] input.

    Args:
        model: a CondInst/CrossVIS model (set to eval mode).
        output: file to write (``.pt2`` for torch.export, ``.onnx`` for ONNX).
        fmt: ``"torch-export"`` (``torch.export.export`` + ``torch.export.save``) or ``"onnx"``
            (``torch.onnx.export(dynamo=False)``; needs the ``onnx`` package).
        height, width: padded input size (multiples of the size divisibility, 32); frames are
            resized to the test size and padded to it before running the exported graph.

    Raises:
        CrossVISError: on a bad size, an unknown format or a missing ``onnx`` package.
    """
    if not hasattr(model, "network"):
        raise CrossVISError(f"{type(model).__name__} has no network to export (CondInst/CrossVIS models only)")
    divisor = getattr(getattr(model, "preprocessor", None), "size_divisibility", 32)
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        raise CrossVISError(f"export size {height}x{width} must be positive multiples of {divisor} "
                            f"(the padded input size, e.g. --height 384 --width 640 for 360x640 frames)")
    model.eval()
    flat = FlatNetwork(model).eval()
    example = (torch.zeros(1, 3, height, width, device=model.device),)
    output = Path(output)
    # the file is written all-or-nothing (crossvis.atomic): an interrupted export leaves no half file
    if fmt == "torch-export":
        with torch.no_grad():
            program = torch.export.export(flat, example)
        atomic_write(output, lambda fh: torch.export.save(program, fh))
    elif fmt == "onnx":
        if not onnx_available():
            raise CrossVISError("ONNX export needs the 'onnx' package (pip install onnx); "
                                "or use --format torch-export")
        with torch.no_grad():
            atomic_write(output, lambda fh: torch.onnx.export(flat, example, fh, input_names=["images"],
                                                              output_names=flat.names, opset_version=17,
                                                              dynamo=False))
    else:
        raise CrossVISError(f"unknown export format {fmt!r}; use torch-export or onnx")
    return output


def load_exported(path: Union[str, Path]) -> nn.Module:
    """The callable module of a ``.pt2`` written by :func:`export_network` (``torch.export.load``)."""
    path = Path(path)
    if not path.is_file():
        raise CrossVISError(f"exported program {path} does not exist")
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not an exported program
        raise CrossVISError(f"{path} is not a torch.export program ({type(exc).__name__}); "
                            f"write it with crossvis export --format torch-export") from None


def predict_from_outputs(model: nn.Module, names: Sequence[str], tensors: Sequence[Tensor],
                         image_sizes: Sequence[tuple[int, int]],
                         orig_sizes: Sequence[tuple[int, int]]) -> list[FrameDetections]:
    """Post-process the exported graph's outputs exactly as ``model.predict`` does.

    Args:
        model: the model the graph was exported from (its post-processor and dynamic mask head run here).
        names: :func:`output_names` of that model.
        tensors: the graph's outputs for a batch made by ``model.preprocessor``.
        image_sizes: (h, w) of each resized frame inside the padded batch.
        orig_sizes: (H, W) of each original frame.
    """
    with torch.no_grad():
        return model.postprocessor(unflatten_outputs(names, tensors), image_sizes, orig_sizes)
