"""A faster inference path for CondInst/CrossVIS models with the same post-processing.

What it changes, and only for the network (backbone → FPN → head towers → mask branch):

* ``torch.inference_mode`` (no autograd bookkeeping);
* channels-last memory format for the network's weights and input (oneDNN / cuDNN pick their
  fastest convolution kernels for NHWC);
* mixed precision: bfloat16 autocast on CPUs whose oneDNN build supports bf16 (AVX512-BF16 or
  AMX), float16 autocast on CUDA; GroupNorm/BatchNorm statistics stay in float32 under autocast;
* optionally ``torch.compile`` (off by default, never required).

Everything after the network — score thresholds, top-k, NMS, the dynamic mask head, mask
upsampling and thresholding — runs in float32 on the network outputs cast back to float32, with
the model's own post-processor, so decisions at thresholds are not made in low precision.

What it does not do, measured on the 2-core AMD EPYC (AVX512-BF16, no AMX) development machine
at the P3 size of a 360×640 frame (48×80, 256 channels, 1 thread):

* batching the FPN levels through the shared head in one call: GroupNorm normalises per sample
  over the whole map, so levels of different sizes cannot share a batch, and concatenating them
  spatially would mix their statistics (different numbers);
* fusing the three towers' first convolutions (256→768 in one conv: 266 ms vs 3×256→256: 253 ms)
  or running the towers as one grouped convolution (groups=3: 434 ms vs 3×143 ms): no gain on
  oneDNN, so the per-tower convolutions are kept.

Recipe switch: ``inference: {fast: true, dtype: auto|bf16|fp16|fp32, channels_last: true,
compile: false}``; ``Predictor(..., fast=True)`` uses the same path: the predictor holds a
:class:`FastInference` as its ``runner`` (any callable ``list[uint8 [3, H, W]] ->
list[FrameDetections]``; the default runner is ``model.predict``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.models.outputs import NetworkOutputs
from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["FastSettings", "FastInference", "fast_settings", "resolve_autocast_dtype", "cpu_supports_bf16"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass(frozen=True)
class FastSettings:
    """Options of the fast path.

    Args:
        dtype: ``"auto"`` (bf16 on a bf16-capable CPU, fp16 on CUDA, else fp32), ``"bf16"``,
            ``"fp16"`` or ``"fp32"`` (no autocast).
        channels_last: convert the network and its input to channels-last.
        compile: wrap the network in ``torch.compile`` (first frames are slow; needs a working
            compiler toolchain).
    """

    dtype: str = "auto"
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise CrossVISError(f"inference.dtype must be auto, bf16, fp16 or fp32, got {self.dtype!r}")


def fast_settings(recipe: Mapping[str, Any]) -> tuple[bool, FastSettings]:
    """``(enabled, settings)`` from the recipe's optional ``inference:`` section.

    Raises:
        CrossVISError: for an unknown key or a bad value in ``inference``.
    """
    node = recipe.get("inference") if isinstance(recipe, Mapping) else None
    if node is None:
        return False, FastSettings()
    if not isinstance(node, Mapping):
        raise CrossVISError("recipe key inference must be a mapping like {fast: true, dtype: auto}")
    known = {f.name for f in fields(FastSettings)} | {"fast"}
    unknown = sorted(set(node) - known)
    if unknown:
        raise CrossVISError(f"recipe key inference.{unknown[0]} is unknown; known keys: {', '.join(sorted(known))}")
    kwargs = {k: node[k] for k in node if k != "fast"}
    for key in ("channels_last", "compile"):
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise CrossVISError(f"recipe key inference.{key} must be true or false, got {kwargs[key]!r}")
    enabled = node.get("fast", False)
    if not isinstance(enabled, bool):
        raise CrossVISError(f"recipe key inference.fast must be true or false, got {enabled!r}")
    return enabled, FastSettings(**kwargs)


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (AVX512-BF16 or AMX), i.e. bf16 is not emulated."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_autocast_dtype(dtype: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``dtype`` on ``device`` (None = run in float32)."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    return _DTYPES[dtype]


class FastInference:
    """Runs a CondInst/CrossVIS model's ``predict`` with a faster network pass.

    Args:
        model: a built model with a ``network`` and ``predict_with`` (CondInst, CrossVIS). It is
            switched to eval mode; with ``channels_last`` its network weights are converted in
            place (``model.predict`` keeps working; only float rounding changes).
        settings: see :class:`FastSettings`.

    Example::

        fast = FastInference(model)
        detections = fast.predict([frame])      # uint8 [3, H, W] RGB, like model.predict
        predictor = OnlinePredictor(model, runner=fast)   # track videos with it

    Calling the object is :meth:`predict`, so it is a predictor ``runner``.
    """

    def __init__(self, model: nn.Module, settings: FastSettings = FastSettings()) -> None:
        for part in ("network", "predict_with"):
            if not hasattr(model, part):
                raise CrossVISError(f"the fast inference path needs a CondInst-style model with a {part}; "
                                    f"{type(model).__name__} has none (set inference.fast: false)")
        self.model = model.eval()
        self.settings = settings
        self.device = model.device
        self.autocast_dtype = resolve_autocast_dtype(settings.dtype, self.device)
        if settings.channels_last:
            model.network.to(memory_format=torch.channels_last)
        self._network = torch.compile(model.network, dynamic=True) if settings.compile else model.network

    def network_outputs(self, batch: Tensor, dense: bool = True) -> NetworkOutputs:
        """The network's outputs for a normalised padded float32 batch [B, 3, H, W], as float32.

        The same :class:`~crossvis.models.outputs.NetworkOutputs` as ``model.forward_network``;
        with ``dense=False`` the controller and embedding maps are replaced by the tower features
        they are computed from (see ``CondInstNetwork.forward``). Every tensor is contiguous.
        """
        if self.settings.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.autocast_dtype is None:
                outputs = self._network(batch, dense=dense)
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    outputs = self._network(batch, dense=dense)
        return outputs.map(lambda t: t.float().contiguous())

    def predict(self, images: Sequence[Tensor]) -> list[FrameDetections]:
        """Detections for uint8 RGB frames [3, H, W] at their original sizes (as ``model.predict``).

        The model's own steps (``model.predict_with``) with this object's network pass; the
        dynamic filters and embeddings are computed at the kept detections only, in float32.
        """
        with torch.inference_mode():
            return self.model.predict_with(images, lambda batch: self.network_outputs(batch, dense=False))

    __call__ = predict

