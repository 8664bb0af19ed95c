"""Speed and memory measurements of the per-frame detector and the online pipeline.

Models run with random weights (speed does not depend on the values) at the official test size:
frames of 360×640 are resized to short side 360 / long side ≤ 640 (no-op) and padded to 384×640.
Random weights give no detections at the official 0.05 threshold (prior 0.01) or far too many,
so every model is held at a fixed number of detections per frame (default 100, the official cap):

* CrossVIS: ``cls_logits`` and ``ctrness`` biases are set to 0 (every candidate scores ≈ 0.5) and
  the ``bbox_pred`` bias to 1 (boxes one stride around their location, so none is empty and
  neighbours overlap below the NMS IoU), so each frame yields ``max_detections`` detections, each
  with a mask and an embedding;
* torchvision FCOS: ``score_thresh=0.0``, ``detections_per_img=N``;
* torchvision Mask R-CNN: ``box_score_thresh=0.0``, ``detections_per_img=N`` (its mask head and
  mask pasting run on N boxes).

torchvision models get ``min_size=360, max_size=640`` so they see the same resolution.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from crossvis.errors import CrossVISError

__all__ = ["BenchResult", "synthetic_frames", "crossvis_model", "torchvision_detector", "time_per_frame",
           "peak_rss_mib", "current_rss_mib", "backend_accuracy", "bench_backends", "head_flops",
           "bench_network", "bench_pipeline", "bench_side_by_side", "bench_torchvision", "time_side_by_side",
           "PipelineStep", "TorchvisionStep", "format_rows"]

ARCHS = ("r50", "r101", "dla34")


@dataclass
class BenchResult:
    """One timed configuration: median and quartiles of the per-frame wall time in milliseconds and
    the median per-frame CPU time of the process (all threads; with one thread it is the compute
    time and barely depends on other load on the machine)."""

    name: str
    mode: str
    median_ms: float
    p25_ms: float
    p75_ms: float
    cpu_median_ms: float
    frames: int
    threads: int
    detections: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_frames(num: int, height: int = 360, width: int = 640, seed: int = 0) -> list[np.ndarray]:
    """``num`` H×W×3 uint8 RGB frames: smooth colour blobs drifting over a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    blobs = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 80), rng.integers(0, 255, 3))
             for _ in range(5)]
    frames = []
    for t in range(num):
        frame = background.copy()
        for cy, cx, r, colour in blobs:
            inside = (yy - cy - 3 * t) ** 2 + (xx - cx - 5 * t) ** 2 < r * r
            frame[inside] = colour
        frames.append(frame)
    return frames


def crossvis_model(arch: str, num_detections: int = 100, num_classes: int = 40, seed: int = 0) -> nn.Module:
    """An official-layout CrossVIS model with random weights (drawn from ``seed``, the global
    generator untouched) that yields ``num_detections`` per frame.

    The same weights in every row: how many detections the tracker keeps, and so how many masks
    are pasted and encoded, depends on them (36-90 of 100 a frame over unseeded draws).
    """
    from crossvis.deploy.convert import official_recipe
    from crossvis.models import build_model

    if arch not in ARCHS:
        raise CrossVISError(f"unknown benchmark architecture {arch!r}; use one of {', '.join(ARCHS)}")
    recipe = official_recipe(arch, num_classes=num_classes)
    recipe["model"]["max_detections"] = int(num_detections)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(recipe).eval()
    with torch.no_grad():
        model.network.head.cls_logits.bias.zero_()
        model.network.head.ctrness.bias.zero_()
        model.network.head.bbox_pred.bias.fill_(1.0)
    return model


def torchvision_detector(name: str, num_detections: int = 100, num_classes: int = 41) -> nn.Module:
    """torchvision ``fcos_resnet50_fpn`` or ``maskrcnn_resnet50_fpn`` (random weights) at 360×640."""
    from torchvision.models import detection

    common = dict(weights=None, weights_backbone=None, num_classes=num_classes, min_size=360, max_size=640,
                  detections_per_img=int(num_detections))
    if name == "fcos":
        return detection.fcos_resnet50_fpn(score_thresh=0.0, **common).eval()
    if name == "maskrcnn":
        return detection.maskrcnn_resnet50_fpn(box_score_thresh=0.0, **common).eval()
    raise CrossVISError(f"unknown torchvision detector {name!r}; use fcos or maskrcnn")


def time_per_frame(step: Callable[[Any], Any], frames: Sequence[Any], warmup: int = 2) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds per call of ``step(frame)`` for each frame after ``warmup`` untimed calls."""
    for frame in frames[:warmup]:
        step(frame)
    times = []
    for frame in frames:
        wall, cpu = time.perf_counter(), time.process_time()
        step(frame)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def _result(name: str, mode: str, times: list[tuple[float, float]], detections: float = float("nan")) -> BenchResult:
    ms = sorted(t[0] * 1000.0 for t in times)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    cpu = statistics.median(t[1] * 1000.0 for t in times)
    return BenchResult(name, mode, statistics.median(ms), q[0], q[2], cpu, len(ms), torch.get_num_threads(),
                       detections)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1).contiguous()


def _bench_batches(model: nn.Module, frames: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], list[list]]:
    batches, sizes = [], []
    for f in frames:
        batch, size = model.preprocessor.batch([model.preprocessor.resize_for_test(_to_tensor(f))])
        batches.append(batch)
        sizes.append(size)
    return batches, sizes


def bench_network(arch: str, frames: Sequence[np.ndarray], fast: bool = False, warmup: int = 2,
                  num_detections: int = 100, backend: Optional[str] = None, settings: Any = None) -> BenchResult:
    """Network only (normalised padded batch → raw per-level maps) with one backend of
    :mod:`crossvis.inference.backends` (``backend``; ``fast=True`` means the autotuned choice, with
    ``settings``: an ``AutotuneSettings``, default uncached defaults)."""
    from dataclasses import replace

    from crossvis.inference.autotune import AutotuneSettings, autotune

    model = crossvis_model(arch, num_detections)
    batches, sizes = _bench_batches(model, frames)
    name = backend or ("auto" if fast else "fp32")
    settings = replace(settings if settings is not None else AutotuneSettings(cache=False), backend=name)
    tuned = autotune(model, batches[:2], sizes[:2], settings)
    try:
        times = time_per_frame(tuned.backend, batches, warmup)
    finally:
        tuned.backend.close()
    return _result(f"crossvis-{arch}", f"network-{tuned.name}" if name != "auto" else f"net-auto:{tuned.name}",
                   times)


def bench_backends(arch: str, frames: Sequence[np.ndarray], names: Sequence[str], warmup: int = 2,
                   num_detections: int = 100) -> list[tuple[BenchResult, float, float, str]]:
    """Every backend in ``names`` on the same model and frames, network only.

    Returns per backend ``(timing, mask IoU vs fp32 on these frames, build seconds, skip reason)``;
    a skipped backend has a NaN timing. The IoU is :func:`crossvis.inference.autotune.mask_agreement`
    of the post-processed detections (the fixed ``num_detections`` per frame) against fp32.
    """
    from crossvis.inference.autotune import backend_detections, mask_agreement
    from crossvis.inference.backends import backend_unavailable, build_backend

    model = crossvis_model(arch, num_detections)
    batches, sizes = _bench_batches(model, frames)

    def detections(backend: Any) -> list:
        return [d for b, s in zip(batches, sizes) for d in backend_detections(model, backend, b, s, s)]

    reference = detections(build_backend("fp32", model))
    rows = []
    for name in names:
        nan = BenchResult(f"crossvis-{arch}", f"network-{name}", *([float("nan")] * 4), 0, torch.get_num_threads())
        why = backend_unavailable(name, model.device)
        if why:
            rows.append((nan, float("nan"), float("nan"), why))
            continue
        start = time.perf_counter()
        try:
            backend = build_backend(name, model, batches[:2])
            backend(batches[0])
        except Exception as exc:  # noqa: BLE001 - report the failure, keep benchmarking the others
            rows.append((nan, float("nan"), float("nan"), f"failed: {type(exc).__name__}: {str(exc)[:80]}"))
            continue
        build_s = time.perf_counter() - start
        timing = _result(f"crossvis-{arch}", f"network-{name}", time_per_frame(backend, batches, warmup))
        rows.append((timing, mask_agreement(reference, detections(backend)), build_s, ""))
        backend.close()
    return rows


def bench_pipeline(arch: str, frames: Sequence[np.ndarray], fast: bool = False, warmup: int = 2,
                   num_detections: int = 100, backend: Optional[str] = None, settings: Any = None) -> BenchResult:
    """The full online pipeline: H×W×3 uint8 frame → ``Predictor.track`` → tracked instances.

    The float32 row (``fast=False``) is the predictor's default runner: float32 in the layout it
    measures fastest on the first frame (``pipeline-fp32:fp32-cl`` when channels-last won).

    ``fast=True`` runs the network through :class:`~crossvis.inference.autotune.TunedInference`
    (measured choice on the first frame, uncached; ``backend`` pins one); the tuning happens in the
    untimed warm-up frames.
    """
    pipeline = PipelineStep(arch, frames, fast, warmup, num_detections, backend, settings)
    return pipeline.result(time_per_frame(pipeline, frames, warmup=0))


class PipelineStep:
    """A started online pipeline (see :func:`bench_pipeline`): each call runs ``Predictor.track``
    on the next of ``frames`` (the argument is ignored: the stream reads its own frames) and returns
    the number of tracked instances. The ``warmup`` frames (first use: the runner's tuning) run in
    the constructor."""

    def __init__(self, arch: str, frames: Sequence[np.ndarray], fast: bool = False, warmup: int = 2,
                 num_detections: int = 100, backend: Optional[str] = None, settings: Any = None) -> None:
        from dataclasses import replace

        from crossvis.deploy.convert import official_recipe
        from crossvis.inference.autotune import AutotuneSettings, TunedInference
        from crossvis.inference.predictor import OnlinePredictor, build_tracker

        self.arch, self.backend = arch, backend
        model = crossvis_model(arch, num_detections)
        self.tuned = None
        if fast or backend:
            base = settings if settings is not None else AutotuneSettings(cache=False)
            self.tuned = TunedInference(model, replace(base, backend=backend or "auto"))
        # without a runner: the predictor's default (float32, the layout measured fastest here, uncached)
        self.predictor = OnlinePredictor(model, build_tracker(official_recipe(arch)), device="cpu", runner=self.tuned)
        if self.tuned is None and isinstance(self.predictor.runner, TunedInference):
            self.predictor.runner.settings = replace(self.predictor.runner.settings, cache=False)
        self.counts: list[int] = []
        self._stream = self.predictor.track(_repeat(frames, max(warmup, 1)))
        for _ in range(max(warmup, 1)):
            next(self._stream)

    def __call__(self, frame: Any = None) -> int:
        count = len(next(self._stream).track_ids)
        self.counts.append(count)
        return count

    @property
    def mode(self) -> str:
        """``pipeline-fp32[:layout]`` or ``pipe-[auto:]<backend>``: the runner it measured."""
        if self.tuned is None:
            layout = getattr(getattr(self.predictor.runner, "result", None), "name", "fp32")
            return "pipeline-fp32" + ("" if layout == "fp32" else f":{layout}")
        return f"pipe-{'auto:' if not self.backend else ''}{self.tuned.result.name}"

    def result(self, times: list[tuple[float, float]]) -> BenchResult:
        return _result(f"crossvis-{self.arch}", self.mode, times, float(np.mean(self.counts)))


def _repeat(frames: Sequence[np.ndarray], warmup: int) -> Iterable[np.ndarray]:
    yield from frames[:warmup]
    yield from frames


def bench_torchvision(name: str, frames: Sequence[np.ndarray], fast: bool = False, warmup: int = 2,
                      num_detections: int = 100) -> BenchResult:
    """torchvision FCOS / Mask R-CNN on the same frames: float tensor in → detections out.

    ``fast``: channels-last, and bf16 autocast where the CPU has native bf16 (mode ``fast``; without
    it, emulated bf16 made FCOS 10× slower than fp32 on a Zen 2 EPYC, so there the row is
    channels-last float32, mode ``fast-cl``).
    """
    detector = TorchvisionStep(name, fast, num_detections)
    times = time_per_frame(detector, frames, warmup)
    return detector.result(times, skip=warmup)


class TorchvisionStep:
    """torchvision detector ``name`` as a per-frame step (see :func:`bench_torchvision`): each call
    detects in one H×W×3 uint8 frame and returns the number of detections."""

    def __init__(self, name: str, fast: bool = False, num_detections: int = 100) -> None:
        from crossvis.inference.backends import backend_unavailable

        self.name = name
        self.model = torchvision_detector(name, num_detections)
        self.bf16 = fast and backend_unavailable("bf16", torch.device("cpu")) is None  # None: native bf16 here
        if fast:
            self.model.to(memory_format=torch.channels_last)
        self.mode = "fp32" if not fast else "fast" if self.bf16 else "fast-cl"
        self.counts: list[int] = []

    def __call__(self, frame: np.ndarray) -> int:
        image = _to_tensor(frame).float() / 255.0
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model([image])
        self.counts.append(len(out[0]["boxes"]))
        return self.counts[-1]

    def result(self, times: list[tuple[float, float]], skip: int = 0) -> BenchResult:
        """The row of ``times``; ``skip``: untimed calls at the start of :attr:`counts`."""
        return _result(f"torchvision-{self.name}", self.mode, times, float(np.mean(self.counts[skip:])))


def time_side_by_side(steps: Sequence[Callable[[Any], Any]], frames: Sequence[Any], warmup: int = 0,
                      pause: float = 0.05) -> list[list[tuple[float, float]]]:
    """(wall, process CPU) seconds per frame for each of ``steps``, which take turns on every frame.

    Frame by frame, every step runs once (the order rotated by one each frame, so that none is
    always first after another), after ``warmup`` untimed rounds. A change of the machine's speed
    during the run (other load, clock, memory) then falls on all of them alike, and the ratios of
    their medians hold where separate runs minutes apart can drift by several percent. ``pause``
    seconds of idle between steps let the worker threads of the previous one (OpenMP, OpenVINO's
    TBB pool) stop spinning, so that they take no cycles from the next one's timing.
    """
    for frame in frames[:warmup]:
        for step in steps:
            step(frame)
    times: list[list[tuple[float, float]]] = [[] for _ in steps]
    for k, frame in enumerate(frames):
        for j in range(len(steps)):
            i = (j + k) % len(steps)
            time.sleep(pause)
            wall, cpu = time.perf_counter(), time.process_time()
            steps[i](frame)
            times[i].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def bench_side_by_side(arch: str, frames: Sequence[np.ndarray], baseline: str = "fcos", warmup: int = 2,
                       num_detections: int = 100, settings: Any = None) -> list[BenchResult]:
    """torchvision ``baseline`` in float32 and CrossVIS ``arch``'s float32 and fast pipelines
    (:func:`bench_pipeline`), taking turns frame by frame (:func:`time_side_by_side`).

    Returns three rows: the baseline (mode ``fp32 beside <arch>``), the float32 pipeline and the
    fast one (``settings``: the fast path's ``AutotuneSettings``). Both pipelines tune in their
    own warm-up frames, before the timed rounds.
    """
    detector = TorchvisionStep(baseline, num_detections=num_detections)
    for frame in frames[:warmup]:
        detector(frame)
    detector.counts.clear()
    fp32 = PipelineStep(arch, frames, False, warmup, num_detections)
    fast = PipelineStep(arch, frames, True, warmup, num_detections, settings=settings)
    times = time_side_by_side([detector, fp32, fast], frames)
    row = detector.result(times[0])
    row.mode = f"fp32 beside {arch}"
    return [row, fp32.result(times[1]), fast.result(times[2])]


def head_flops(arch: str = "r50", height: int = 360, width: int = 640) -> dict[str, float]:
    """Multiply-accumulates (GMAC) of CrossVIS's network and torchvision FCOS, by module.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs = 1 MAC) for one
    ``height``×``width`` frame, which both models pad to multiples of 32. Keys:
    ``crossvis/<module>`` and ``fcos/<module>`` (modules up to two levels deep).
    """
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, float] = {}
    model = crossvis_model(arch)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.forward_network(torch.zeros(1, 3, -(-height // 32) * 32, -(-width // 32) * 32))
    for module, counts in counter.get_flop_counts().items():
        if module.count(".") <= 2:
            out[f"crossvis/{module}"] = sum(counts.values()) / 2e9
    fcos = torchvision_detector("fcos")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fcos([torch.zeros(3, height, width)])
    for module, counts in counter.get_flop_counts().items():
        if module.count(".") <= 2:
            out[f"fcos/{module}"] = sum(counts.values()) / 2e9
    return out


def format_rows(rows: Sequence[BenchResult], reference: Optional[BenchResult] = None) -> str:
    """A text table; with ``reference`` columns of wall- and CPU-time ratios against it."""
    header = f"{'model':<22}{'mode':<16}{'median ms':>10}{'p25':>9}{'p75':>9}{'cpu ms':>9}{'dets':>6}{'thr':>4}"
    if reference is not None:
        header += f"{'wall/ref':>10}{'cpu/ref':>9}"
    lines = [header]
    for r in rows:
        line = (f"{r.name:<22}{r.mode:<16}{r.median_ms:>10.1f}{r.p25_ms:>9.1f}{r.p75_ms:>9.1f}"
                f"{r.cpu_median_ms:>9.1f}{r.detections:>6.0f}{r.threads:>4}")
        if reference is not None:
            line += f"{r.median_ms / reference.median_ms:>10.2f}{r.cpu_median_ms / reference.cpu_median_ms:>9.2f}"
        lines.append(line)
    return "\n".join(lines)


def keep_freed_memory() -> str:
    """Make glibc keep freed memory for re-use, as the ``Predictor`` does
    (:mod:`crossvis.inference.allocator`), and say so for the benchmark's first line."""
    from crossvis.inference.allocator import keep_freed_memory as keep

    return "freed memory kept (crossvis.inference.allocator)" if keep() else "allocator as is"


def current_rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux ``/proc/self/status``; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def backend_accuracy(recipe: Any, names: Sequence[str], checkpoint: Optional[str] = None,
                     max_videos: Optional[int] = None) -> dict[str, dict[str, float]]:
    """Accuracy guard of each backend in ``names`` on ``recipe``'s ``data.test`` videos.

    Runs the fp32 :class:`~crossvis.inference.predictor.Predictor` and one per backend (pinned,
    through :class:`~crossvis.inference.autotune.TunedInference`) on the same frames. Per backend:
    ``mask_iou`` = :func:`~crossvis.inference.autotune.mask_agreement` of its tracked instances
    with the fp32 ones over all frames, ``AP`` (YouTube-VIS, a fraction like the official evaluator's) and ``dAP`` = AP − AP(fp32);
    a backend that cannot run here gets ``skipped``.

    The predictors run on the caller's torch thread count (``runtime.num_threads`` is set to it):
    a predictor otherwise sets the process's threads to the recipe's default, and the benchmark
    that called the guard would time everything after it at that count, not at its ``--threads``.
    """
    import json
    from pathlib import Path

    from PIL import Image

    from crossvis.eval import evaluate_ytvis
    from crossvis.inference.autotune import AutotuneSettings, TunedInference, mask_agreement
    from crossvis.inference.backends import backend_unavailable
    from crossvis.inference.predictor import Predictor
    from crossvis.recipes import load_recipe

    recipe = load_recipe(recipe, [f"runtime.num_threads={torch.get_num_threads()}"])
    test = recipe.get("data", {}).get("test") or {}
    if not test.get("annotations") or not test.get("images"):
        raise CrossVISError("the accuracy check needs data.test.annotations and data.test.images in the recipe")
    gt = json.loads(Path(test["annotations"]).read_text())
    videos = gt["videos"][:max_videos] if max_videos else gt["videos"]
    clips = [[np.array(Image.open(Path(test["images"]) / name).convert("RGB")) for name in v["file_names"]]
             for v in videos]
    subset = dict(gt, videos=videos, annotations=[a for a in gt["annotations"]
                                                  if a["video_id"] in {v["id"] for v in videos}])

    def run(backend: Optional[str]) -> tuple[list, list]:
        predictor = Predictor(recipe, checkpoint=checkpoint, device="cpu")
        if backend is not None:
            predictor.runner = TunedInference(predictor.model, AutotuneSettings(backend=backend, cache=False))
        tracked, results = [], []
        for video, frames in zip(videos, clips):
            tracked += list(predictor.track(frames))
            results += predictor.video_results(video["id"])
        return tracked, results

    reference, ref_results = run(None)
    ref_ap = evaluate_ytvis(subset, ref_results, allow_empty=True)["AP"]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        why = backend_unavailable(name, torch.device("cpu"))
        if why:
            out[name] = {"skipped": why}
            continue
        tracked, results = (reference, ref_results) if name == "fp32" else run(name)
        ap = evaluate_ytvis(subset, results, allow_empty=True)["AP"]
        out[name] = {"mask_iou": mask_agreement(reference, tracked), "AP": ap, "dAP": ap - ref_ap}
    return out
