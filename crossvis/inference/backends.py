"""Ways to run a CondInst/CrossVIS network on the CPU (or CUDA), each with the same outputs.

A *backend* turns a normalised padded float32 batch [B, 3, H, W] into the outputs of
``model.network(batch, dense=False)`` — per-level lists ``cls_logits`` [B, C, h, w], ``bbox_reg``
[B, 4, h, w], ``ctrness`` [B, 1, h, w], ``bbox_features`` [B, F, h, w], optionally
``embed_features`` [B, F, h, w], and ``mask_feats`` [B, 8, H/8, W/8] — as float32 tensors
(``mask_feats`` contiguous; the per-level maps in the layout the backend made them, e.g.
channels-last, which the post-processor reads in place). The model's own float32 post-processor
then runs on them unchanged (dynamic filters and embeddings computed at the kept locations by
``model.network.at_locations``), so every decision at a threshold is taken in float32 whatever the
network ran in.

Backends (:data:`BACKENDS`; which is fastest depends on the CPU, so
:mod:`crossvis.inference.autotune` measures them):

* ``fp32``: eager float32, the reference;
* ``fp32-cl``: eager float32, channels-last weights and input (oneDNN NHWC kernels);
* ``fp32-fused``: channels-last float32 with every convolution a oneDNN call whose weight is packed
  once and whose ReLU (and a residual block's sum) runs in the same pass
  (:mod:`crossvis.inference.fused`; same numbers up to summation order);
* ``fp32-winograd``: eager float32 with the 3×3 stride-1 convolutions run by NNPACK's Winograd
  kernels at the map sizes where they measured faster than the direct convolution here (each
  size timed when it first comes)
  (:mod:`crossvis.inference.winograd`; not the same numbers: ~1.5e-5 of the output's magnitude
  off, so it is a guarded fast-path candidate, not a float32 layout of the default path);
* the eager and compiled torch backends run a copy of the network whose batch norms are folded
  into the convolutions before them (:mod:`crossvis.inference.fold`; same numbers up to rounding);
* ``bf16``: bfloat16 autocast + channels-last (fast only where the CPU has native bf16: AVX512-BF16
  or AMX; GroupNorm runs in float32 under autocast);
* ``bf16-fused``: the network converted to bfloat16 (GroupNorm included) and fused as
  ``fp32-fused``, except the head's score and box convolutions (:data:`BF16_FLOAT32_PARTS`),
  which stay float32; no per-call casts of weights, so faster than ``bf16`` where bf16 is native;
* ``compile``, ``compile-bf16``: ``torch.compile`` (Inductor) with weight freezing, float32 or bf16
  autocast; needs a C++ compiler; compiled once per input shape;
* ``int8``: post-training static quantization (x86 oneDNN, per-channel weights) of the backbone,
  calibrated on a few frames — PT2E with ``torchao``'s ``X86InductorQuantizer``, lowered by
  Inductor (needs ``torchao`` and a C++ compiler). The FPN and the head stay float32 (see
  :func:`_int8`). The ``torch.ao`` FX fallback is not
  offered: the backbones' input checks (``if x.shape[1] != 3``) stop FX symbolic tracing;
* ``onnxruntime``, ``openvino``, ``openvino-bf16``: the network exported to ONNX (the extras
  ``crossvis[onnx]`` / ``crossvis[openvino]``);
* ``onnxruntime-int8``, ``openvino-int8``: the exported network with every convolution quantized
  to int8 by ONNX Runtime's static post-training quantizer (QDQ format, per-channel int8 weights,
  uint8 activations, min/max ranges calibrated on the calibration batches; GroupNorm, the heads'
  outputs and everything else stay float32), run by ONNX Runtime or by OpenVINO, which executes a
  QDQ model with its own int8 kernels. Each quantizes when it is built (~15 s for an R-50 on
  2 cores); the exported model keeps a dynamic batch, height and width.

Every backend works on its own copy of the network, so the model itself is left as it was.
"""
from __future__ import annotations

import copy
import functools
import logging
import shutil
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.deploy.export import FlatNetwork, unflatten_outputs
from crossvis.errors import CrossVISError

__all__ = ["BACKENDS", "FLOAT32_BACKENDS", "NetworkBackend", "TowerFlatNetwork", "backend_unavailable", "build_backend",
           "cpuinfo_field", "available_backends"]

logger = logging.getLogger(__name__)

#: every backend name, in the order they are tried (fp32 first: the reference)
BACKENDS = ("fp32", "fp32-cl", "fp32-fused", "fp32-winograd", "bf16", "bf16-fused", "compile", "compile-bf16",
            "int8", "onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")
#: the backends whose network runs in float32 (the same outputs as ``fp32`` up to summation order)
FLOAT32_BACKENDS = ("fp32", "fp32-cl", "fp32-fused", "compile", "onnxruntime", "openvino")


class TowerFlatNetwork(FlatNetwork):
    """``model.network(images, dense=False)`` with a flat tuple output (for export and graph runtimes).

    ``names`` are ``<kind>.<level>`` for ``cls_logits``, ``bbox_reg``, ``ctrness``,
    ``bbox_features`` (and ``embed_features``), then ``mask_feats``; :func:`unflatten_outputs`
    rebuilds the dictionary.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        kinds = ["cls_logits", "bbox_reg", "ctrness", "bbox_features"]
        if getattr(model.network.head, "embed_dim", None):
            kinds.append("embed_features")
        levels = len(model.network.strides)
        self.names = [f"{k}.{level}" for k in kinds for level in range(levels)] + ["mask_feats"]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images: float32 [B, 3, H, W] normalised → tensors in ``names`` order."""
        out = self.network(images, dense=False)
        return tuple(_field(out, kind)[int(level)] if level else _field(out, kind)
                     for kind, _, level in (n.partition(".") for n in self.names))


def _field(outputs: Any, name: str) -> Any:
    """A field of the network outputs (a NetworkOutputs, or a dict in older code)."""
    return outputs[name] if isinstance(outputs, dict) else getattr(outputs, name)


def _as_float(outputs: Any) -> Any:
    """The outputs in float32; ``mask_feats`` contiguous (the mask head reads it row-major).

    The per-level maps keep the backend's layout: the post-processor reads them at a few hundred
    locations, and copying every channels-last map to contiguous cost ~2 ms a frame (R-50, 360×640).
    """
    def cast(t: Tensor) -> Tensor:
        return t.float()
    if hasattr(outputs, "map"):
        outputs = outputs.map(cast)
        outputs.mask_feats = outputs.mask_feats.contiguous()
        return outputs
    return {k: [cast(t) for t in v] if isinstance(v, list) else cast(v).contiguous() for k, v in outputs.items()}


class NetworkBackend:
    """A named way to run a model's network; ``backend(batch)`` gives float32 ``dense=False`` outputs.

    Args:
        name: the backend name (one of :data:`BACKENDS`).
        run: maps a float32 [B, 3, H, W] batch to the raw outputs (dict, or a flat tuple in
            ``names`` order).
        names: output names when ``run`` returns a flat tuple.
        channels_last: convert the input to channels-last first.
        cleanup: called by :meth:`close` (e.g. removes the exported file's folder).

    Attributes:
        float32: the network runs in float32 (:data:`FLOAT32_BACKENDS`); otherwise in a reduced
            precision, whose outputs the post-processor orders equal scores of stably.
    """

    def __init__(self, name: str, run: Callable[[Tensor], Any], names: Optional[Sequence[str]] = None,
                 channels_last: bool = False, cleanup: Optional[Callable[[], None]] = None) -> None:
        self.name, self._run, self.names = name, run, list(names) if names is not None else None
        self.channels_last, self._cleanup = channels_last, cleanup
        self.float32 = name in FLOAT32_BACKENDS

    def __call__(self, batch: Tensor) -> Any:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self._run(batch)
            if self.names is not None:
                out = unflatten_outputs(self.names, [torch.as_tensor(t) for t in out])
            return _as_float(out)

    def close(self) -> None:
        """Release what the backend holds outside Python objects (temporary files)."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __repr__(self) -> str:
        return f"NetworkBackend({self.name!r})"


# -- availability ---------------------------------------------------------------------------------
def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def _cpu_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of ``/proc/cpuinfo`` (e.g. ``model name``, ``flags``);
    None where there is no such file or line (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI; Linux flags)."""
    flags = (cpuinfo_field("flags") or "").split()
    return "avx512_vnni" in flags or "avx_vnni" in flags


@functools.lru_cache(maxsize=None)
def _fusion_unavailable(device_type: str) -> Optional[str]:
    from crossvis.inference.fused import fusion_unavailable

    return fusion_unavailable(torch.device(device_type))


def backend_unavailable(name: str, device: torch.device) -> Optional[str]:
    """Why backend ``name`` cannot run on ``device`` here, or None when it can.

    Raises:
        CrossVISError: for an unknown backend name.
    """
    if name not in BACKENDS:
        raise CrossVISError(f"inference.backend {name!r} is unknown; use auto or one of {', '.join(BACKENDS)}")
    cpu = device.type == "cpu"
    if name.endswith("-fused"):
        why = _fusion_unavailable(device.type)
        if why is not None:
            return why
    if name == "fp32-winograd":
        from crossvis.inference.winograd import winograd_unavailable

        why = winograd_unavailable(device)
        if why is not None:
            return why
    if name in ("bf16", "bf16-fused", "compile-bf16") and cpu and not _cpu_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    if name.startswith("compile") and cpu and not _has_compiler():
        return "torch.compile needs a C++ compiler (g++ or clang++)"
    if name == "int8":
        if not cpu:
            return "int8 quantization runs on the CPU only"
        if not _has_module("torchao"):
            return "needs torchao (pip install torchao) for PT2E x86 quantization"
        if not _has_compiler():
            return "int8 kernels are generated by torch.compile, which needs a C++ compiler"
    if name.startswith("onnxruntime") and not (cpu and _has_module("onnxruntime") and _has_module("onnx")):
        return "needs the CPU and the onnx extra (pip install 'crossvis[onnx]')"
    if name.startswith("openvino"):
        if not (cpu and _has_module("openvino") and _has_module("onnx")):
            return "needs the CPU and the openvino extra (pip install 'crossvis[openvino]')"
        if name == "openvino-int8" and not _has_module("onnxruntime"):
            return "the int8 model is made by ONNX Runtime's quantizer (pip install 'crossvis[openvino]')"
        if name == "openvino-bf16" and not _cpu_bf16():
            return "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    return None


def available_backends(device: torch.device) -> list[str]:
    """The backends that can run on ``device`` here, in :data:`BACKENDS` order."""
    return [n for n in BACKENDS if backend_unavailable(n, device) is None]


# -- construction ---------------------------------------------------------------------------------
def build_backend(name: str, model: nn.Module, calibration: Sequence[Tensor] = ()) -> NetworkBackend:
    """Backend ``name`` for ``model`` (a CondInst/CrossVIS model in eval mode).

    Args:
        name: one of :data:`BACKENDS`.
        model: its network is copied (the model is not modified).
        calibration: normalised padded float32 batches [B, 3, H, W] like those the backend will
            run (int8 calibrates on them; exported backends take their shape from the first).

    Raises:
        CrossVISError: when the backend cannot run here (see :func:`backend_unavailable`).
    """
    why = backend_unavailable(name, model.device)
    if why is not None:
        raise CrossVISError(f"inference backend {name} is not available: {why}")
    if name in ("int8", "onnxruntime", "onnxruntime-int8") or name.startswith("openvino"):
        if not calibration:
            raise CrossVISError(f"inference backend {name} needs calibration frames")
    model.eval()
    if name == "fp32":
        network = _folded_network(model)
        return NetworkBackend(name, lambda b: network(b, dense=False))
    if name in ("fp32-cl", "bf16"):
        network = _folded_network(model).to(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if name == "bf16" else None
        if dtype is not None:
            network = _bf16_convolutions(network, model.device, calibration)
        return NetworkBackend(name, _eager(network, model.device, dtype), channels_last=True)
    if name.endswith("-fused"):
        return _fused(name, model, calibration)
    if name == "fp32-winograd":
        return _winograd(model, calibration)
    if name.startswith("compile"):
        return _compiled(name, model)
    if name == "int8":
        return _int8(model, calibration)
    return _exported(name, model, calibration)


def _folded_network(model: nn.Module) -> nn.Module:
    """A copy of ``model.network`` with its batch norms folded into the convolutions (checked on a
    random 1×3×128×128 batch)."""
    from crossvis.inference.fold import folded_copy

    example = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(model.device)
    return folded_copy(model.network, example, lambda network, batch: network(batch, dense=False))


#: the layers whose weights autocast casts to its lower precision on every call
_AUTOCAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                    nn.Linear)


def _autocast_weights_to(network: nn.Module, dtype: torch.dtype) -> None:
    """Store the weights and biases of the layers autocast runs in ``dtype`` already in ``dtype``.

    Autocast casts a float32 weight on every call (it caches casts only of tensors that require
    grad, outside inference mode): for an R-50 that re-reads and re-writes every convolution's
    weights once per frame (~19 ms of 131 on a 2-core Xeon, 2026-12-03). A weight already in
    ``dtype`` passes through unchanged, and the rounding is the same one autocast applies, so the
    outputs are bit-identical. Only layers of exactly these types (whose forward is the plain
    autocast op) are cast; norms and other parameters stay float32, as under autocast.
    """
    for module in network.modules():
        if type(module) in _AUTOCAST_LAYERS:
            for key, value in module._parameters.items():
                if value is not None and value.is_floating_point():
                    module._parameters[key] = nn.Parameter(value.detach().to(dtype), requires_grad=False)


def _bf16_convolutions(network: nn.Module, device: torch.device, calibration: Sequence[Tensor]) -> nn.Module:
    """``network`` (folded, channels-last) with its convolutions stored in bf16, for bf16 autocast.

    Where oneDNN fusion is available the convolutions become :class:`~crossvis.inference.fused.
    FusedConv2d` with ``autocast_numerics``: weights packed once and the ReLU after a convolution
    fused in (measured on a 2-core Xeon with AMX, R-50 at 360×640: 131 → 112 ms for the weights
    cast once, → 98 ms packed and fused). Its outputs are compared with plain autocast's on the
    example batch, and kept only when bit-identical; otherwise, and where fusion is unavailable,
    the weights are cast once in place (:func:`_autocast_weights_to`, bit-identical by construction).
    """
    if _fusion_unavailable(device.type) is None:
        from crossvis.inference.fused import fuse_for_inference

        example = calibration[0] if calibration else torch.zeros(1, 3, 384, 640)
        example = example.to(device, torch.float32).contiguous(memory_format=torch.channels_last)

        def run(n: nn.Module) -> Any:
            with torch.inference_mode(), _autocast(device, torch.bfloat16):
                return n(example, dense=False)
        reference = run(network)
        fused = fuse_for_inference(copy.deepcopy(network), run, torch.bfloat16, autocast_numerics=True)
        if _identical(run(fused), reference):
            _autocast_weights_to(fused, torch.bfloat16)   # any layer left unfused
            return fused
        logger.info("bf16 backend: the fused convolutions differ from autocast's on this CPU; "
                    "keeping autocast's own convolutions with their weights cast once")
    _autocast_weights_to(network, torch.bfloat16)
    return network


def _identical(a: Any, b: Any) -> bool:
    """Whether two network outputs hold bit-identical tensors."""
    a, b = (a.present(), b.present()) if hasattr(a, "present") else (a, b)
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        left, right = (value, b[key]) if isinstance(value, list) else ([value], [b[key]])
        if len(left) != len(right) or not all(torch.equal(x, y) for x, y in zip(left, right)):
            return False
    return True


def _autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _eager(network: nn.Module, device: torch.device, dtype: Optional[torch.dtype]) -> Callable[[Tensor], Any]:
    def run(batch: Tensor) -> Any:
        with _autocast(device, dtype):
            return network(batch, dense=False)
    return run


#: the parts of the network ``bf16-fused`` keeps in float32: the FCOS head's score and box
#: convolutions (~1 GFLOP of R-50's 126 at 360×640). Measured on the trained quickstart model
#: (mask IoU against fp32 on its test videos): all bf16 0.956; these three in float32 0.980, AP
#: equal to fp32's; the mask branch in float32 as well 0.981; only the scores (not the boxes) 0.961.
BF16_FLOAT32_PARTS = ("head.cls_logits", "head.bbox_pred", "head.ctrness")


def _fused(name: str, model: nn.Module, calibration: Sequence[Tensor]) -> NetworkBackend:
    """The folded channels-last network with fused oneDNN convolutions, in float32 or bfloat16.

    The weights are packed for the input sizes the first calibration batch produces (a
    1×3×384×640 batch without one); other sizes run too.
    """
    from crossvis.inference.fused import fuse_for_inference

    dtype = torch.bfloat16 if name == "bf16-fused" else torch.float32
    network = _folded_network(model).to(memory_format=torch.channels_last)
    example = calibration[0] if calibration else torch.zeros(1, 3, 384, 640)
    example = example.to(model.device, torch.float32).contiguous(memory_format=torch.channels_last)
    network = fuse_for_inference(network, lambda n: n(example, dense=False), dtype, BF16_FLOAT32_PARTS)

    def run(batch: Tensor) -> Any:
        return network(batch.to(dtype), dense=False)
    return NetworkBackend(name, run, channels_last=True)


def _winograd(model: nn.Module, calibration: Sequence[Tensor]) -> NetworkBackend:
    """The folded float32 network with NNPACK's Winograd 3×3 convolutions where they measure faster,
    timed at the map sizes of the first calibration batch (a 1×3×384×640 batch without one) and
    at any other size the first time it comes. Decisions not in ``winograd.json`` yet, those of the
    build and those of sizes first met later (a video of another shape), are written there."""
    from crossvis.inference.winograd import winograd_for_inference

    example = calibration[0] if calibration else torch.zeros(1, 3, 384, 640)
    example = example.to(model.device, torch.float32).contiguous()
    path, key = _winograd_cache()
    decisions = _read_winograd_decisions(path, key)   # the layers add the ones they time
    kept = len(decisions)
    network = winograd_for_inference(_folded_network(model), lambda n: n(example, dense=False), decisions=decisions)

    def keep_new_decisions() -> None:
        nonlocal kept
        if len(decisions) != kept:   # decisions are only added
            _write_winograd_decisions(path, key, decisions)
            kept = len(decisions)

    def run(batch: Tensor) -> Any:
        outputs = network(batch, dense=False)
        keep_new_decisions()
        return outputs
    keep_new_decisions()
    return NetworkBackend("fp32-winograd", run)


#: the version of the Winograd decision cache's layout
_WINOGRAD_CACHE_VERSION = 1


def _winograd_cache() -> tuple[Path, str]:
    """Where NNPACK-or-direct decisions are kept (``winograd.json`` beside the backend choice
    cache, ``crossvis.inference.autotune.cache_file``), and the key they hold for here: they
    depend on the CPU, the torch version and the thread count (timing one R-50 takes ~1.8 s)."""
    from crossvis.inference.autotune import cache_file, cpu_model

    key = f"cpu={cpu_model()}|torch={torch.__version__}|threads={torch.get_num_threads()}"
    return cache_file().with_name("winograd.json"), key


def _read_winograd_decisions(path: Path, key: str) -> dict[str, bool]:
    from crossvis.inference.autotune import read_cache_entries

    found = read_cache_entries(path, _WINOGRAD_CACHE_VERSION).get(key)
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, bool)}


def _write_winograd_decisions(path: Path, key: str, decisions: dict[str, bool]) -> None:
    from crossvis.inference.autotune import write_cache_entry

    write_cache_entry(path, _WINOGRAD_CACHE_VERSION, key, dict(sorted(decisions.items())), "Winograd timing")


def _compiled(name: str, model: nn.Module) -> NetworkBackend:
    """Inductor with ``freezing`` (weights folded into the graph as constants; inference only)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    inductor_config.cpp.enable_kernel_profile = False
    flat = TowerFlatNetwork(model).eval()
    flat.network = _folded_network(model).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if name == "compile-bf16" else None
    compiled = torch.compile(flat, dynamic=False)
    device = model.device

    def run(batch: Tensor) -> Any:
        with _autocast(device, dtype):
            return compiled(batch)
    return NetworkBackend(name, run, names=flat.names, channels_last=True)


def _pt2e_int8(module: nn.Module, example: tuple, calibration: Sequence[tuple],
               skip: Sequence[str] = ()) -> nn.Module:
    """``module`` quantized by PT2E with the x86 Inductor quantizer (``skip``: module names kept in float)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in skip:
        quantizer.set_module_name_qconfig(name, None)
    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for args in calibration:
        prepared(*args)
    return convert_pt2e(prepared)


def _int8(model: nn.Module, calibration: Sequence[Tensor]) -> NetworkBackend:
    """The backbone quantized (PT2E, x86 Inductor quantizer) and lowered by Inductor; the rest float32.

    The FPN and the head are not quantized: the x86 quantizer rejects a convolution module that is
    called more than once in the graph ("conv partition has more than one output node"), which is
    what a head shared across FPN levels is, and the FPN's output convolutions feed several
    consumers.
    """
    import torch._inductor.config as inductor_config

    network = copy.deepcopy(model.network).eval()
    with torch.no_grad():
        backbone = _pt2e_int8(network.backbone, (calibration[0],), [(b,) for b in calibration])
    inductor_config.freezing = True
    network.backbone = torch.compile(backbone, dynamic=False)
    return NetworkBackend("int8", lambda b: network(b, dense=False))


def _export_onnx(model: nn.Module, example: Tensor, folder: Path) -> tuple[Path, list[str]]:
    """``model``'s network as ``folder/network.onnx`` (dynamic batch/height/width) and its output names."""
    flat = TowerFlatNetwork(model).eval()
    path = folder / "network.onnx"
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the shape checks, which hold for every size
        torch.onnx.export(flat, (example,), str(path), input_names=["images"], output_names=flat.names,
                          opset_version=17, dynamo=False, dynamic_axes=dynamic)
    return path, flat.names


def _quantize_onnx(path: Path, calibration: Sequence[Tensor]) -> Path:
    """``path`` with its convolutions quantized to int8 (QDQ), calibrated on ``calibration``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([{"images": b.detach().cpu().contiguous().numpy()} for b in calibration])

        def get_next(self) -> Optional[dict]:
            return next(self._items, None)

    import onnx

    prepared, quantized = path.with_name("prepared.onnx"), path.with_name("network-int8.onnx")
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    convs = [n.name for n in onnx.load(str(prepared)).graph.node
             if n.op_type == "Conv" and n.name.startswith(INT8_SCOPE)]
    # Without VNNI, x86 int8 kernels multiply u8×s8 pairs with an int16 sum that saturates;
    # 7-bit weights (reduce_range) keep that sum in range (measured on a Zen 2 EPYC: the int8
    # outputs of the test model were 0.21 off float32 with 8-bit weights)
    quantize_static(str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=not _cpu_vnni(), activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv"],
                    nodes_to_quantize=convs)
    return quantized


#: the convolutions the int8 backends quantize (ONNX node-name prefixes of the exported network).
#: Measured on the trained quickstart model (mask IoU against fp32 on its test videos, OpenVINO):
#: every convolution 0.91; the backbone only 0.92; DLA level3–5 only 0.97; percentile, entropy or
#: symmetric calibration 0.86–0.91; calibrating on 48 frames of all its test videos instead of one
#: frame and its flip 0.93. One group alone (the stem, any one DLA level, the neck, any one tower,
#: the predictors, the mask branch) already gives 0.954–0.994: the loss is spread over the whole
#: network, not one sensitive layer. The guard (0.98) rejects all of them there, so the fastest
#: (everything) is what is offered; a model whose features survive int8 passes the guard.
INT8_SCOPE: tuple[str, ...] = ("/network/backbone", "/network/neck", "/network/head", "/network/mask_branch")


def _exported(name: str, model: nn.Module, calibration: Sequence[Tensor]) -> NetworkBackend:
    """ONNX export of the network, run by ONNX Runtime or OpenVINO (int8: quantized first)."""
    folder = Path(tempfile.mkdtemp(prefix="crossvis-backend-"))

    def cleanup() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    try:
        path, names = _export_onnx(model, calibration[0], folder)
        if name.endswith("-int8"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = _quantize_onnx(path, calibration)
    except Exception:
        cleanup()
        raise
    threads = torch.get_num_threads()
    if name.startswith("onnxruntime"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: spinning pool threads took the cores from torch's own
        # post-processing (measured: the tuned pipeline 5% slower than fp32 with a faster network)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(batch: Tensor) -> Any:
            return [torch.from_numpy(t) for t in session.run(None, {"images": batch.contiguous().numpy()})]
    else:
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "bf16" if name == "openvino-bf16" else "f32"}
        compiled = _openvino_core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()

        def run(batch: Tensor) -> Any:
            result = request.infer({0: batch.contiguous().numpy()})
            return [torch.from_numpy(result[out].copy()) for out in compiled.outputs]
    return NetworkBackend(name, run, names=names, cleanup=cleanup)


@functools.lru_cache(maxsize=1)
def _openvino_core() -> Any:
    """One OpenVINO ``Core`` for the process.

    Compiled models must not outlive the ``Core`` that compiled them: a temporary ``Core`` freed
    while a compiled model (or a request of it) is still referenced crashed the process later, when
    the garbage collector freed the rest in an arbitrary order.
    """
    import openvino as ov

    return ov.Core()
