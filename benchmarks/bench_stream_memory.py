"""Peak memory of online tracking vs video length: it must not grow with the number of frames.

Two pipelines, each run for a short and a long stream, each run in fresh subprocesses (so that the
RSS peak belongs to that run alone; RSS is measured in a run without tracemalloc, whose own
bookkeeping grows with the number of allocations):

* ``tracker``: fake detections (5 moving discs, masks at 360x640, 256-d embeddings) through
  ``CrossVISTracker`` + ``VideoAccumulator``;
* ``predictor``: random frames through ``Predictor`` with a tiny random-weight CrossVIS model
  (ResNet-18, 64-channel FPN, score threshold 0 so that every frame has detections).

Reported per run: the tracemalloc peak (Python/numpy allocations; torch's own tensor memory is
not traced), the process RSS peak (``ru_maxrss``), and the bytes of the results the accumulator
stores (the only state that legitimately grows with the video: the per-frame RLE, a few hundred
bytes per instance-frame vs 230 kB for a decoded 360x640 mask), measured as the traced bytes freed
when the accumulator is reset at the end. The check: RSS peaks within 10%, and for the tracker
pipeline (masks are numpy arrays, visible to tracemalloc) the tracemalloc peaks minus the stored
results within 10%. For the predictor the traced heap is sub-MB (torch tensors are not traced) and
is printed for information.

Usage::

    python benchmarks/bench_stream_memory.py                       # both pipelines, 100 vs 1000 frames
    python benchmarks/bench_stream_memory.py --pipeline tracker --frames 100 1000
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc


class _Tracing:
    """tracemalloc around a block when ``enabled``: ``peak`` of the block and ``stored``, the traced
    bytes freed by :meth:`release` (the accumulated results); both 0 when not enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.peak, self.stored = enabled, 0, 0

    def __enter__(self) -> "_Tracing":
        if self.enabled:
            tracemalloc.start()
        return self

    def release(self, accumulator) -> None:
        """Measure what the accumulator holds by dropping it (call at the end of the block)."""
        if self.enabled:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            accumulator.reset()
            gc.collect()
            self.stored = before - tracemalloc.get_traced_memory()[0]

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


def fake_detections(frames: int):
    """5 discs moving across a 360x640 frame: FrameDetections with masks and 256-d embeddings."""
    import numpy as np
    import torch

    from crossvis.structures import FrameDetections

    h, w, n = 360, 640, 5
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, 256, generator=g)
    yy, xx = np.mgrid[0:h, 0:w]
    r = 30 + 10 * np.arange(n) / n
    for t in range(frames):
        cx = (np.arange(n) * 120 + 60 + 2 * t) % w
        cy = np.full(n, h / 2) + 80 * np.sin(t / 20 + np.arange(n))
        masks = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 < (r ** 2)[:, None, None]
        boxes = torch.tensor(np.stack([cx - r, cy - r, cx + r, cy + r], 1), dtype=torch.float32)
        yield FrameDetections(boxes=boxes, scores=torch.linspace(0.9, 0.5, n), labels=torch.zeros(n, dtype=torch.int64),
                              image_size=(h, w), masks=torch.from_numpy(masks),
                              embeddings=emb + 0.1 * torch.randn(n, 256, generator=g))


def run_tracker(frames: int, trace: bool) -> dict:
    from crossvis.trackers import CrossVISTracker, VideoAccumulator

    tracker, acc = CrossVISTracker(), VideoAccumulator()
    with _Tracing(trace) as tracing:
        for det in fake_detections(frames):
            acc.add(det, tracker.update(det))
        tracks = len(acc.results(1))
        tracing.release(acc)
    return {"tracks": tracks, "stored_bytes": tracing.stored, "tracemalloc_peak": tracing.peak}


TINY_RECIPE = {
    "model": {"type": "crossvis", "num_classes": 3, "min_size_test": 64, "max_size_test": 96,
              "score_threshold": 0.0, "max_detections": 5,
              "backbone": {"type": "resnet", "depth": 18, "norm": "FrozenBN"},
              "neck": {"type": "fpn", "in_features": ["res3", "res4", "res5"], "out_channels": 64},
              "head": {"type": "fcos", "num_convs": 1, "embed_dim": 16},
              "mask_branch": {"type": "condinst_mask_branch", "channels": 16, "num_convs": 1}},
    "runtime": {"device": "cpu"},
}


def run_predictor(frames: int, trace: bool) -> dict:
    import numpy as np
    import torch

    from crossvis.inference.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(TINY_RECIPE)
    base = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    stream = (np.roll(base, t, axis=1) for t in range(frames))
    with _Tracing(trace) as tracing:
        instances = sum(len(inst) for inst in predictor.track(stream))
        tracks = len(predictor.video_results(1))
        tracing.release(predictor.accumulator)
    return {"tracks": tracks, "instances": instances, "stored_bytes": tracing.stored,
            "tracemalloc_peak": tracing.peak}


def child(pipeline: str, frames: int, trace: bool) -> None:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    out = (run_tracker if pipeline == "tracker" else run_predictor)(frames, trace)
    out.update(pipeline=pipeline, frames=frames, seconds=time.perf_counter() - start,
               rss_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps(out))


def measure(pipeline: str, frames: int) -> dict:
    """Run the pipeline twice in subprocesses: traced (tracemalloc peak) and untraced (RSS peak)."""
    rows = []
    for trace in ("1", "0"):
        proc = subprocess.run([sys.executable, __file__, "--child", pipeline, str(frames), trace],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    traced, plain = rows
    return {**traced, "rss_peak": plain["rss_peak"], "seconds": plain["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=["tracker", "predictor", "both"], default="both")
    parser.add_argument("--frames", type=int, nargs=2, default=None, metavar=("SHORT", "LONG"),
                        help="stream lengths (default: 100 1000)")
    parser.add_argument("--child", nargs=3, metavar=("PIPELINE", "FRAMES", "TRACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "1")
        return
    pipelines = ["tracker", "predictor"] if args.pipeline == "both" else [args.pipeline]
    mib = 1 / 2 ** 20
    print(f"{'pipeline':<10} {'frames':>6} {'tracks':>6} {'tracemalloc peak MiB':>21} {'peak - stored MiB':>18} "
          f"{'stored MiB':>11} {'RSS peak MiB':>13} {'s':>6}")
    for pipeline in pipelines:
        lengths = args.frames or (100, 1000)
        rows = []
        for frames in lengths:
            row = measure(pipeline, frames)
            rows.append(row)
            print(f"{pipeline:<10} {frames:>6} {row['tracks']:>6} {row['tracemalloc_peak'] * mib:>21.2f} "
                  f"{(row['tracemalloc_peak'] - row['stored_bytes']) * mib:>18.2f} {row['stored_bytes'] * mib:>11.2f} "
                  f"{row['rss_peak'] * mib:>13.1f} {row['seconds']:>6.1f}")
        short, long = rows
        rss = long["rss_peak"] / short["rss_peak"] - 1
        work = (long["tracemalloc_peak"] - long["stored_bytes"]) / (short["tracemalloc_peak"] - short["stored_bytes"]) - 1
        # The fake-detection pipeline keeps its masks in numpy (traced); the predictor's tensors live
        # in torch's allocator, which tracemalloc does not see, so RSS is its criterion.
        ok = abs(rss) <= 0.10 and (pipeline == "predictor" or abs(work) <= 0.10)
        print(f"{pipeline}: {long['frames']} vs {short['frames']} frames: RSS peak {100 * rss:+.1f}%, "
              f"tracemalloc peak without the stored results {100 * work:+.1f}% ({'OK' if ok else 'OVER 10%'})")


if __name__ == "__main__":
    main()
