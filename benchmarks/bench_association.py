"""Per-frame cost of the association / calibration components (issue 16), in CPU time on one thread.

* temporal calibration: the network forward (backbone → neck → heads) with the plain FPN and with
  ``temporal_calibration`` around it, R-50 at the official 360×640 test size (padded 384×640) and
  the quickstart model at 128×192, plus the calibration's multiply-accumulates counted from the
  layer shapes;
* trackers: ``memory_bank`` vs the official ``crossvis`` tracker, per frame (association only);
* losses (training only): forward + backward of ``contrastive_embedding`` vs the global balanced
  embedding for one batch of frame pairs.

CPU time (``time.process_time``) with one thread barely depends on other load on the machine.

    python benchmarks/bench_association.py [--frames 3] [--skip-r50]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from crossvis import load_recipe
from crossvis.association import ContrastiveEmbeddingLoss, MemoryBankTracker
from crossvis.losses import GlobalFocalEmbeddingLoss
from crossvis.models import build_model
from crossvis.structures import FrameDetections
from crossvis.trackers import CrossVISTracker

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"


def cpu_ms(fn, reps: int) -> float:
    """Median CPU milliseconds of ``fn()`` over ``reps`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append(1000 * (time.process_time() - start))
    return statistics.median(times)


def calibration_gmac(model: torch.nn.Module, image_hw: tuple[int, int]) -> float:
    """Multiply-accumulates of the calibration (correlation + offset net + deformable conv), GMAC per frame."""
    neck = model.network.neck
    total = 0
    for level in neck.levels:
        spec = neck.output_shape()[level]
        h, w = -(-image_hw[0] // spec.stride), -(-image_hw[1] // spec.stride)
        align = neck.calibrator(level)
        corr = (2 * align.max_displacement + 1) ** 2
        hidden = align.offset_net[0].out_channels
        k2 = align.kernel_size ** 2
        total += h * w * (corr * spec.channels + 9 * corr * hidden + 9 * hidden * 2 * k2
                          + spec.channels * spec.channels * k2)
    return total / 1e9


def network_costs(plain_recipe, calibrated_recipe, hw: tuple[int, int], reps: int, num_classes: int) -> dict:
    torch.manual_seed(0)
    out = {}
    image = torch.randn(1, 3, *hw)
    for name, recipe in (("fpn", plain_recipe), ("fpn + temporal_calibration", calibrated_recipe)):
        model = build_model(recipe, num_classes=num_classes, num_identities=10).eval()
        with torch.no_grad():
            out[name] = cpu_ms(lambda: model.network(image, dense=False), reps)
        if name != "fpn":
            out["calibration GMAC"] = calibration_gmac(model, hw)
    return out


def tracker_costs(num_objects: int = 20, frames: int = 200, dim: int = 256) -> dict:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(num_objects, dim, generator=g)
    xy = torch.rand(num_objects, 2, generator=g) * torch.tensor([560.0, 300.0])
    boxes = torch.cat([xy, xy + 40], 1)
    labels = torch.randint(0, 8, (num_objects,), generator=g)
    stream = [FrameDetections(boxes + 2 * torch.randn(num_objects, 4, generator=g),
                              torch.rand(num_objects, generator=g) * 0.5 + 0.5, labels, (360, 640),
                              embeddings=emb + 0.3 * torch.randn(num_objects, dim, generator=g))
              for _ in range(frames)]
    out = {}
    for name, tracker in (("crossvis", CrossVISTracker()), ("memory_bank", MemoryBankTracker())):
        tracker.reset()
        start = time.process_time()
        for det in stream:
            tracker.update(det)
        out[name] = 1000 * (time.process_time() - start) / frames
    return out


def loss_costs(pairs: int = 8, locations: int = 5115, dim: int = 256, objects: int = 4, reps: int = 5) -> dict:
    """Forward + backward of one batch; 5115 locations = P3-P7 of a 384x640 input."""
    g = torch.Generator().manual_seed(0)
    key = torch.randn(pairs, locations, dim, generator=g, requires_grad=True)
    ref = torch.randn(pairs, locations, dim, generator=g, requires_grad=True)
    ids = torch.full((pairs, locations), -1)
    ids[:, :objects * 40] = torch.arange(objects).repeat_interleave(40)
    proxies = torch.nn.Linear(dim, 3774)
    contrastive, gbe = ContrastiveEmbeddingLoss(), GlobalFocalEmbeddingLoss()
    pos = ids >= 0

    def run_contrastive():
        contrastive(key, ids, ref, ids).backward()

    def run_gbe():
        gbe(torch.cat([key[pos], ref[pos]]), torch.cat([ids[pos], ids[pos]]), proxies).backward()

    return {"contrastive_embedding": cpu_ms(run_contrastive, reps), "global_focal_embedding": cpu_ms(run_gbe, reps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3, help="timed network passes per configuration")
    parser.add_argument("--skip-r50", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    quick = load_recipe("crossvis:quickstart_synthetic")
    quick_cal = copy.deepcopy(load_recipe("crossvis:quickstart_synthetic"))
    quick_cal["model"]["neck"] = {"type": "temporal_calibration", "max_displacement": 4,
                                  "inner": dict(quick["model"]["neck"])}
    rows = [("quickstart DLA 128x192", network_costs(quick, quick_cal, (128, 192), args.frames, 4))]
    if not args.skip_r50:
        rows.append(("R-50 384x640", network_costs(load_recipe(RECIPES / "crossvis_R50_1x.yaml"),
                                                   load_recipe(RECIPES / "crossvis_R50_calibration.yaml"),
                                                   (384, 640), args.frames, 40)))
    print("network forward per frame, CPU ms on 1 thread (calibration GMAC counted from layer shapes)")
    for name, costs in rows:
        base, cal = costs["fpn"], costs["fpn + temporal_calibration"]
        print(f"  {name:<24} fpn {base:8.1f}  + calibration {cal:8.1f}  (+{cal - base:.1f} ms, "
              f"+{100 * (cal - base) / base:.0f} %)  calibration {costs['calibration GMAC']:.2f} GMAC")
    trackers = tracker_costs()
    print("tracker update per frame (20 objects, 256-d), CPU ms: "
          + ", ".join(f"{k} {v:.2f}" for k, v in trackers.items()))
    losses = loss_costs()
    print("embedding loss forward+backward per batch (8 pairs, P3-P7 of 384x640, 256-d), CPU ms: "
          + ", ".join(f"{k} {v:.1f}" for k, v in losses.items()))


if __name__ == "__main__":
    main()
