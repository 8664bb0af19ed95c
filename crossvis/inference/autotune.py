"""Choose the fastest network backend on this machine by measuring, with an accuracy guard.

Which way of running the network is fastest depends on the CPU (bf16 autocast is 1.8× faster
than float32 on one AVX512-BF16 CPU and 1.3× slower on another), so nothing is hard-coded: on
first use :func:`autotune` builds every candidate backend (:mod:`crossvis.inference.backends`),
times each on a few frames — the network and the post-processing after it, masks included —
round-robin so that load changes on a shared machine hit every candidate alike, and keeps the
fastest one whose detections agree with float32: mean mask IoU against the float32 detections
≥ ``min_mask_iou`` (0.98) on the same frames. ``fp32`` is always a candidate, and another backend
replaces it only when it is at least :data:`CHOICE_MARGIN` (5%) faster, so timing noise does not
pick a runtime that is no faster.

The choice is cached in ``$XDG_CACHE_HOME/crossvis/autotune.json`` (default ``~/.cache``; the
``CROSSVIS_CACHE_DIR`` environment variable overrides the folder), keyed by the CPU model string,
the torch version, the thread count, the device and a fingerprint of the model's architecture and
weights, so the next run on the same machine skips the measurement.

Recipe (all keys optional; the older ``dtype`` / ``channels_last`` / ``compile`` keys of the same
section still pin the matching backend)::

    inference:
      fast: true
      backend: auto            # or pin one of crossvis.inference.backends.BACKENDS, e.g. bf16
      candidates: [fp32, fp32-cl, bf16, int8, onnxruntime, openvino]   # default: DEFAULT_CANDIDATES
      min_mask_iou: 0.98
      tune_frames: 2
      cache: true
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.atomic import atomic_write_json
from crossvis.errors import CrossVISError
from crossvis.inference.backends import BACKENDS, NetworkBackend, backend_unavailable, build_backend, cpuinfo_field
from crossvis.structures import FrameDetections

__all__ = ["AutotuneSettings", "CandidateReport", "TuneResult", "DEFAULT_CANDIDATES", "autotune_settings",
           "autotune", "mask_agreement", "cpu_model", "model_fingerprint", "cache_key", "cache_file",
           "TunedInference", "backend_detections", "summarize", "FP32_LAYOUTS", "default_runner",
           "stateful_modules", "read_cache_entries", "write_cache_entry"]

logger = logging.getLogger(__name__)

#: candidates tried by default: those that build in seconds (the two int8 ONNX ones export and
#: quantize the network: ~15 s each for an R-50 on 2 cores). ``compile`` / ``compile-bf16`` / ``int8``
#: (Inductor code generation: minutes for an R-50 on a small machine) are tried when listed in
#: ``inference.candidates`` or pinned.
DEFAULT_CANDIDATES = ("fp32", "fp32-cl", "fp32-fused", "fp32-winograd", "bf16", "bf16-fused", "onnxruntime",
                      "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class AutotuneSettings:
    """The ``inference:`` section as the tuner reads it.

    Args:
        backend: ``"auto"`` (measure) or a backend name to pin.
        candidates: backends measured by ``auto`` (unavailable ones are skipped; ``fp32`` is added).
        min_mask_iou: accuracy guard, mean mask IoU against float32 on the tuning frames.
        tune_frames: timed passes per candidate and round.
        rounds: round-robin timing rounds (the minimum over rounds is kept).
        cache: read and write the on-disk choice cache.
    """

    backend: str = "auto"
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    min_mask_iou: float = 0.98
    tune_frames: int = 2
    rounds: int = 3
    cache: bool = True

    def __post_init__(self) -> None:
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise CrossVISError(f"recipe key inference.backend: {self.backend!r} is unknown; "
                                f"use auto or one of {', '.join(BACKENDS)}")
        unknown = [c for c in self.candidates if c not in BACKENDS]
        if unknown:
            raise CrossVISError(f"recipe key inference.candidates: {unknown[0]!r} is unknown; "
                                f"use names from {', '.join(BACKENDS)}")
        if not 0.0 <= self.min_mask_iou <= 1.0:
            raise CrossVISError(f"recipe key inference.min_mask_iou must be in [0, 1], got {self.min_mask_iou}")
        if self.tune_frames < 1 or self.rounds < 1:
            raise CrossVISError("recipe keys inference.tune_frames and inference.rounds must be at least 1")


_LEGACY_KEYS = ("dtype", "channels_last", "compile")


def autotune_settings(recipe: Mapping[str, Any]) -> tuple[bool, AutotuneSettings]:
    """``(enabled, settings)`` from the recipe's optional ``inference:`` section.

    ``backend`` absent and one of the older keys set (``dtype: bf16``, ``channels_last``,
    ``compile: true``) pins the backend those keys describe, so older recipes keep their meaning.

    Raises:
        CrossVISError: for an unknown key or a bad value.
    """
    node = recipe.get("inference") if isinstance(recipe, Mapping) else None
    if node is None:
        return False, AutotuneSettings()
    if not isinstance(node, Mapping):
        raise CrossVISError("recipe key inference must be a mapping like {fast: true, backend: auto}")
    known = {f.name for f in fields(AutotuneSettings)} | {"fast", *_LEGACY_KEYS}
    unknown = sorted(set(node) - known)
    if unknown:
        raise CrossVISError(f"recipe key inference.{unknown[0]} is unknown; known keys: {', '.join(sorted(known))}")
    for key in ("fast", "cache", "channels_last", "compile"):
        if key in node and not isinstance(node[key], bool):
            raise CrossVISError(f"recipe key inference.{key} must be true or false, got {node[key]!r}")
    kwargs = {k: node[k] for k in node if k in {f.name for f in fields(AutotuneSettings)}}
    if "candidates" in kwargs:
        if not isinstance(kwargs["candidates"], (list, tuple)):
            raise CrossVISError("recipe key inference.candidates must be a list of backend names")
        kwargs["candidates"] = tuple(str(c) for c in kwargs["candidates"])
    if "backend" not in kwargs and any(k in node for k in _LEGACY_KEYS):
        kwargs["backend"] = _legacy_backend(node)
    return bool(node.get("fast", False)), AutotuneSettings(**kwargs)


def _legacy_backend(node: Mapping[str, Any]) -> str:
    dtype = node.get("dtype", "auto")
    if dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise CrossVISError(f"recipe key inference.dtype must be auto, bf16, fp16 or fp32, got {dtype!r}")
    if dtype == "auto":
        return "auto"
    if node.get("compile", False):
        return "compile-bf16" if dtype == "bf16" else "compile"
    if dtype == "bf16":
        return "bf16"
    return "fp32-cl" if node.get("channels_last", True) else "fp32"


# -- cache ----------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model string (``/proc/cpuinfo`` ``model name``, else :func:`platform.processor`)."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-1 of the network's architecture (module types, parameter names, shapes, dtypes) and weights."""
    digest = hashlib.sha1()
    digest.update(type(model).__name__.encode())
    for name, module in model.network.named_modules():
        digest.update(f"{name}:{type(module).__name__};".encode())
    for name, tensor in model.network.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: nn.Module, device: torch.device) -> dict[str, str]:
    """What the choice depends on: CPU model, torch version, threads, device, model fingerprint."""
    return {"cpu": cpu_model(), "torch": torch.__version__, "threads": str(torch.get_num_threads()),
            "device": str(device), "model": model_fingerprint(model)}


def cache_file() -> Path:
    """``$CROSSVIS_CACHE_DIR/autotune.json``, else ``$XDG_CACHE_HOME/crossvis/`` (default ``~/.cache``)."""
    folder = os.environ.get("CROSSVIS_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "crossvis")
    return Path(folder) / "autotune.json"


def _key_string(key: Mapping[str, str]) -> str:
    return "|".join(f"{k}={key[k]}" for k in sorted(key))


def read_cache_entries(path: Path, version: int) -> dict[str, Any]:
    """The ``entries`` of a JSON cache file ``{"version": version, "entries": {...}}``; empty when
    the file is missing, unreadable or of another version (a cache is only ever re-measured)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def write_cache_entry(path: Path, version: int, key: str, entry: Any, what: str) -> None:
    """Set ``entries[key] = entry`` in the cache file (written atomically); a failure to write is
    logged (``what``: what will be measured again) and otherwise ignored."""
    entries = read_cache_entries(path, version)
    entries[key] = entry
    try:
        atomic_write_json(path, {"version": version, "entries": entries}, indent=1)
    except OSError as exc:
        logger.warning("could not write the %s cache %s (%s); it will be measured again", what, path, exc)


def _read_cache(path: Path) -> dict[str, Any]:
    return read_cache_entries(path, _CACHE_VERSION)


def _write_cache(path: Path, key: Mapping[str, str], entry: Mapping[str, Any]) -> None:
    write_cache_entry(path, _CACHE_VERSION, _key_string(key), {**entry, "key": dict(key)}, "backend choice")


# -- accuracy guard -------------------------------------------------------------------------------
def mask_agreement(reference: Sequence[FrameDetections], candidate: Sequence[FrameDetections]) -> float:
    """Mean over the reference detections of the best mask IoU with a same-class candidate detection.

    A reference detection without a same-class candidate counts 0; frames where neither has a
    detection count as full agreement (1.0), frames where only the candidate has some count 0.
    """
    ious: list[float] = []
    for ref, got in zip(reference, candidate):
        if len(ref) == 0:
            ious.append(1.0 if len(got) == 0 else 0.0)
            continue
        if len(got) == 0:
            ious.extend([0.0] * len(ref))
            continue
        a = ref.masks.reshape(len(ref), -1).float()
        b = got.masks.reshape(len(got), -1).float()
        inter = a @ b.t()
        union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(inter))
        iou[ref.labels[:, None] != got.labels[None, :]] = 0.0
        ious.extend(iou.max(dim=1).values.tolist())
    return float(sum(ious) / len(ious)) if ious else 1.0


# -- tuning ---------------------------------------------------------------------------------------
@dataclass
class CandidateReport:
    """One candidate's measurement: network + post-processing ms per batch (min over rounds of the
    mean), mask IoU against float32, whether it passed the guard, or why it was not measured."""

    name: str
    ms: float = float("nan")
    build_s: float = float("nan")
    mask_iou: float = float("nan")
    passed: bool = False
    skipped: str = ""


@dataclass
class TuneResult:
    """The chosen backend and how it was chosen (``source``: measured, cache or pinned)."""

    backend: NetworkBackend
    source: str
    reports: list[CandidateReport] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.backend.name


def backend_detections(model: nn.Module, backend: NetworkBackend, batch: Tensor,
                       sizes: Sequence[tuple[int, int]], orig: Sequence[tuple[int, int]]) -> list[FrameDetections]:
    """The model's post-processor on ``backend``'s outputs for ``batch`` (equal scores in a stable
    order where the backend's precision is reduced: see :func:`crossvis.models.nms.batched_nms`)."""
    outputs = backend(batch)
    with torch.inference_mode():
        return model.postprocessor(outputs, sizes, orig, gather=model.network.at_locations,
                                   stable_ties=not backend.float32)


#: a backend must be this much faster than fp32 on the tuning frames to be chosen over it
CHOICE_MARGIN = 0.05


def autotune(model: nn.Module, batches: Sequence[Tensor], sizes: Sequence[Sequence[tuple[int, int]]],
             settings: AutotuneSettings = AutotuneSettings(),
             cache_path: Optional[Path] = None) -> TuneResult:
    """The backend to run ``model``'s network with, measured on ``batches`` (or cached / pinned).

    Args:
        model: a CondInst/CrossVIS model in eval mode.
        batches: normalised padded float32 batches [B, 3, H, W] (``model.preprocessor.batch``),
            used for int8 calibration, timing and the accuracy guard.
        sizes: per batch, the (h, w) of each resized image in it (the guard's masks are compared
            at that size).
        settings: see :class:`AutotuneSettings`.
        cache_path: the cache file (default :func:`cache_file`).

    Raises:
        CrossVISError: when the pinned backend is unavailable or no batch is given.
    """
    if not batches:
        raise CrossVISError("the backend autotuner needs at least one frame")
    device = model.device
    if settings.backend != "auto":
        return TuneResult(build_backend(settings.backend, model, batches), "pinned")
    path = cache_path if cache_path is not None else cache_file()
    # the choice among these candidates (the fp32 layouts of the default path are not the fast path's)
    key = {**cache_key(model, device), "candidates": ",".join(sorted({"fp32", *settings.candidates}))}
    if settings.cache:
        cached = _read_cache(path).get(_key_string(key))
        name = cached.get("backend") if isinstance(cached, dict) else None
        if name in BACKENDS and backend_unavailable(name, device) is None:
            try:
                return TuneResult(build_backend(name, model, batches), "cache")
            except Exception as exc:  # noqa: BLE001 - a cached choice that no longer builds is re-measured
                logger.warning("cached inference backend %s failed to build (%s: %s); measuring again",
                               name, type(exc).__name__, exc)
    result = _measure(model, batches, sizes, settings)
    if settings.cache:
        _write_cache(path, key, {"backend": result.name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "ms": {r.name: r.ms for r in result.reports if r.passed},
                                 "mask_iou": {r.name: r.mask_iou for r in result.reports if not r.skipped}})
    return result


def _measure(model: nn.Module, batches: Sequence[Tensor], sizes: Sequence[Sequence[tuple[int, int]]],
             settings: AutotuneSettings) -> TuneResult:
    device = model.device
    names = ["fp32"] + [c for c in settings.candidates if c != "fp32"]
    reports = {n: CandidateReport(n) for n in names}
    guarded = settings.min_mask_iou > 0  # 0: float32-exact candidates only, nothing to compare
    built: dict[str, NetworkBackend] = {}
    reference: list[FrameDetections] = []
    for name in names:
        why = backend_unavailable(name, device)
        if why is not None:
            reports[name].skipped = why
            continue
        start = time.perf_counter()
        try:
            backend = build_backend(name, model, batches)
            detections = [] if not guarded else [
                d for b, s in zip(batches, sizes) for d in backend_detections(model, backend, b, s, s)]
        except Exception as exc:  # noqa: BLE001 - an optional runtime that fails here is not chosen
            if name == "fp32":
                raise
            reports[name].skipped = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            logger.info("inference backend %s failed and is skipped (%s)", name, reports[name].skipped)
            continue
        reports[name].build_s = time.perf_counter() - start
        if name == "fp32":
            reference = detections
        reports[name].mask_iou = mask_agreement(reference, detections) if guarded else 1.0
        reports[name].passed = name == "fp32" or reports[name].mask_iou >= settings.min_mask_iou
        if reports[name].passed:
            built[name] = backend
        else:
            backend.close()
    timed = [(batches[i % len(batches)], sizes[i % len(batches)]) for i in range(settings.tune_frames)]
    samples: dict[str, list[float]] = {n: [] for n in built}
    for _ in range(settings.rounds):
        for name, backend in built.items():
            # the network and the post-processing after it, masks included: a runtime whose
            # threads keep the cores busy after a run (measured: ONNX Runtime's spinning pool)
            # slows the float32 post-processing, which the network alone would not show
            start = time.perf_counter()
            for batch, size in timed:
                for det in backend_detections(model, backend, batch, size, size):
                    det.masks
            samples[name].append((time.perf_counter() - start) * 1000.0 / len(timed))
    for name, values in samples.items():
        reports[name].ms = min(values)
    best = min(built, key=lambda n: reports[n].ms)
    if reports[best].ms > (1.0 - CHOICE_MARGIN) * reports["fp32"].ms:
        best = "fp32"  # a gain within timing noise is not worth a different runtime
    for name, backend in built.items():
        if name != best:
            backend.close()
    lines = ", ".join(f"{r.name} {r.ms:.1f} ms (IoU {r.mask_iou:.3f})" for r in reports.values() if r.passed)
    logger.info("inference backend %s chosen by measurement: %s", best, lines)
    return TuneResult(built[best], "measured", list(reports.values()))


#: the default (non-fast) path: float32 only — contiguous, channels-last or fused, or the exported
#: network on ONNX Runtime / OpenVINO in float32 where those extras are installed (measured on a Zen 2
#: EPYC without AVX-512: 0.89–0.94 of fused oneDNN's time for an R-50) — as measured here; no
#: accuracy guard (all are float32, equal up to summation order); one timed frame, three rounds
FP32_LAYOUTS = AutotuneSettings(candidates=("fp32-cl", "fp32-fused", "onnxruntime", "openvino"), min_mask_iou=0.0,
                                tune_frames=1, rounds=3)


def stateful_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that keep per-video state: those with a ``reset_stream`` method
    (temporal necks, :mod:`crossvis.calibration`), which the predictor calls at every new video."""
    return [m for m in model.modules() if callable(getattr(m, "reset_stream", None))]


def default_runner(model: nn.Module) -> Optional["TunedInference"]:
    """The default per-frame runner of the online predictor: :data:`FP32_LAYOUTS`, or None.

    None (use ``model.predict`` as it is) for a model without the CondInst parts, and for one with
    per-stream state (a module with ``reset_stream``, e.g. a temporal neck), whose state must
    stay in the model's own network.
    """
    if not all(hasattr(model, part) for part in ("preprocessor", "network", "postprocessor")):
        return None
    if stateful_modules(model):
        return None
    return TunedInference(model, FP32_LAYOUTS)


class TunedInference:
    """``model.predict`` with the network run by the backend :func:`autotune` chooses on first use.

    The first call's frames (and their horizontal flips, for a second calibration / guard
    sample) are the tuning frames. Post-processing is the model's own, in float32.

    Example::

        fast = TunedInference(model, AutotuneSettings())
        detections = fast.predict([frame])      # uint8 [3, H, W] RGB, like model.predict
        fast.result.name                        # e.g. "bf16"
    """

    def __init__(self, model: nn.Module, settings: AutotuneSettings = AutotuneSettings(),
                 cache_path: Optional[Path] = None) -> None:
        for part in ("preprocessor", "network", "postprocessor"):
            if not hasattr(model, part):
                raise CrossVISError(f"the fast inference path needs a CondInst-style model with a {part}; "
                                    f"{type(model).__name__} has none (set inference.fast: false)")
        self.model, self.settings, self.cache_path = model.eval(), settings, cache_path
        self.result: Optional[TuneResult] = None
        self._weights_version: Optional[int] = None
        # A module with per-video state (a temporal neck) must run in the model's own network: the
        # backends run copies or exports of it, which the predictor's reset would not reach (and the
        # tuning frames would become the video's past).
        stateful = sorted({type(m).__name__ for m in stateful_modules(model)})
        self.stateful = bool(stateful)
        if stateful:
            logger.warning("inference.fast: the network keeps per-video state (%s), which the fast backends "
                           "(copies or exports of the network) cannot carry; running the model's own network",
                           ", ".join(stateful))

    def predict(self, images: Sequence[Tensor]) -> list[FrameDetections]:
        """Detections for uint8 RGB frames [3, H, W] at their original sizes (as ``model.predict``)."""
        if not images:
            return []
        model = self.model
        if self.stateful:
            return model.predict(images)
        with torch.inference_mode():
            resized = [model.preprocessor.resize_for_test(im.to(model.device)) for im in images]
            batch, sizes = model.preprocessor.batch(resized)
        version = _weights_version(model)
        if self.result is None:
            self.result = autotune(model, [batch, batch.flip(-1)], [sizes, sizes], self.settings, self.cache_path)
        elif version != self._weights_version:
            # the backends run copies of the network: weights changed in place (an optimiser step,
            # load_state_dict) are copied again into the backend chosen before
            name = self.result.backend.name
            self.result.backend.close()
            self.result = TuneResult(build_backend(name, model, [batch, batch.flip(-1)]), "rebuilt",
                                     self.result.reports)
        self._weights_version = version
        orig = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return backend_detections(model, self.result.backend, batch, sizes, orig)

    __call__ = predict


def _weights_version(model: nn.Module) -> int:
    """Changes whenever a parameter or buffer of ``model.network`` is modified in place (-1 for a
    network made under ``torch.inference_mode``, whose tensors keep no version counter)."""
    try:
        return sum(t._version for t in (*model.network.parameters(), *model.network.buffers()))
    except RuntimeError:
        return -1


def summarize(reports: Sequence[CandidateReport]) -> str:
    """The candidates as a text table (for benchmarks and logs)."""
    lines = [f"{'backend':<15}{'ms':>9}{'build s':>9}{'mask IoU':>10}  status"]
    for r in reports:
        status = r.skipped or ("ok" if r.passed else "rejected by the accuracy guard")
        lines.append(f"{r.name:<15}{r.ms:>9.1f}{r.build_s:>9.1f}{r.mask_iou:>10.3f}  {status}")
    return "\n".join(lines)

