"""Time per frame of the online trackers (association only: no model, no masks).

Each measurement keeps K live tracks and feeds frames of N detections that are noisy copies of the
tracks (256-d embeddings, boxes jittered by a few pixels, 8 classes), so every frame goes through
the full score matrix and the greedy resolution. Target: <= 1 ms per frame at 50 tracks x 50
detections for the official tracker.

Usage::

    python benchmarks/bench_tracker.py                      # table vs number of tracks
    python benchmarks/bench_tracker.py --tracks 50 --detections 50 --frames 500 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from crossvis.structures import FrameDetections
from crossvis.trackers import CrossVISTracker, MaskTrackScoringTracker


def make_world(num_tracks: int, dim: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Track embeddings [K, D], boxes [K, 4] and labels [K] of K objects in a 640x360 frame."""
    emb = torch.randn(num_tracks, dim, generator=generator)
    xy = torch.rand(num_tracks, 2, generator=generator) * torch.tensor([560.0, 300.0])
    wh = 20 + torch.rand(num_tracks, 2, generator=generator) * 60
    labels = torch.randint(0, 8, (num_tracks,), generator=generator)
    return emb, torch.cat([xy, xy + wh], 1), labels


def frame_of(world, num_dets: int, generator: torch.Generator) -> FrameDetections:
    emb, boxes, labels = world
    pick = torch.randperm(emb.shape[0], generator=generator)[:num_dets]
    if num_dets > emb.shape[0]:  # more detections than objects: repeat some
        pick = torch.randint(0, emb.shape[0], (num_dets,), generator=generator)
    noise = 0.3 * torch.randn(num_dets, emb.shape[1], generator=generator)
    jitter = 3 * torch.randn(num_dets, 4, generator=generator)
    scores = torch.rand(num_dets, generator=generator).sort(descending=True).values
    return FrameDetections(boxes=boxes[pick] + jitter, scores=scores, labels=labels[pick], image_size=(360, 640),
                           embeddings=emb[pick] + noise)


def time_tracker(tracker, num_tracks: int, num_dets: int, frames: int, dim: int = 256, seed: int = 0) -> list[float]:
    """Per-frame update times in seconds once ``num_tracks`` tracks exist."""
    g = torch.Generator().manual_seed(seed)
    world = make_world(num_tracks, dim, g)
    tracker.reset()
    tracker.update(frame_of(world, num_tracks, g))  # creates the K tracks
    feed = [frame_of(world, num_dets, g) for _ in range(frames)]
    for det in feed[:10]:  # warm-up
        tracker.update(det)
    times = []
    for det in feed:
        start = time.perf_counter()
        tracker.update(det)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[10, 50, 100, 200, 500])
    parser.add_argument("--detections", type=int, default=50)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.detections} detections/frame, "
          f"{args.frames} frames, 256-d embeddings")
    print(f"{'tracker':<28} {'tracks':>6} {'median ms':>10} {'p90 ms':>8} {'tracks after':>12}")
    trackers = [("crossvis (official)", CrossVISTracker), ("crossvis momentum=0.9", lambda: CrossVISTracker(
        embedding_momentum=0.9)), ("masktrack hungarian", MaskTrackScoringTracker),
        ("masktrack greedy", lambda: MaskTrackScoringTracker(assignment="greedy"))]
    for name, factory in trackers:
        for k in args.tracks:
            tracker = factory()
            times = sorted(time_tracker(tracker, k, args.detections, args.frames))
            median = statistics.median(times) * 1e3
            p90 = times[int(0.9 * (len(times) - 1))] * 1e3
            print(f"{name:<28} {k:>6} {median:>10.3f} {p90:>8.3f} {tracker.num_tracks:>12}")


if __name__ == "__main__":
    main()
