"""Where the online pipeline spends its time beyond the network, per frame, at a fixed detection count.

    python benchmarks/profile_pipeline.py [--arch r50] [--threads 1,2] [--frames 3] [--detections 100]
        [--backend fp32-fused]

Stages (medians over ``--frames`` frames after one warm-up, random-weight model held at
``--detections`` per frame, 360×640 frames, fp32):

* ``network``: ``model.network(batch, dense=False)`` run by ``--backend``
  (:mod:`crossvis.inference.backends`; default ``fp32-fused`` where it is available, else
  ``fp32``), whose output layout the post-processing then reads, as in the pipeline;
* ``candidates+nms``: thresholding, per-level top-k, box decoding, ``batched_nms``;
* ``gather``: controller parameters and embeddings computed at the kept locations;
* ``tracker``: ``tracker.update`` (embedding similarity, assignment);
* ``mask head``: the dynamic 3-layer mask head on the detections the tracker kept (low resolution);
* ``instances``: selecting the tracked detections into ``TrackedInstances``;
* ``rle``: ``accumulator.add`` (RLE-encoding the masks of tracked detections), less one mask head
  run: as in the pipeline, the run lengths are read from the mask head's low-resolution maps
  (``DeferredMasks.encode``) and no mask is made at frame size;
* with ``--paste``, instead: ``paste``: aligned upsampling ×4, crop, resize to the frame and
  threshold into bool [N, H, W] (what reading ``instances.masks`` costs, e.g. for overlays), and
  ``rle``: encoding those masks.

The sum of the stages after ``network`` is the pipeline overhead the issue asks to keep ≤ 5% of
the network. The stage code is the library's own (the post-processor's ``_candidates`` and
``_masks`` are called directly so that their parts can be timed separately).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "crossvis" not in sys.modules:
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from crossvis.threads import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # before torch loads OpenMP, as the crossvis command does
import torch  # noqa: E402

import benchlib as bench  # noqa: E402


def profile(arch: str, frames: list, detections: int, backend: str, paste: bool = False) -> dict[str, float]:
    """Median milliseconds per stage (see the module docstring)."""
    from crossvis.models.nms import batched_nms

    from crossvis.deploy.convert import official_recipe
    from crossvis.inference.backends import build_backend
    from crossvis.inference.predictor import OnlinePredictor, build_tracker
    from crossvis.models.postprocess import DeferredMasks, _gather_by_level
    from crossvis.structures import FrameDetections, TrackedInstances

    torch.manual_seed(0)  # the same random model at every thread count
    model = bench.crossvis_model(arch, detections)
    predictor = OnlinePredictor(model, build_tracker(official_recipe(arch)), device="cpu")
    pp, net = model.postprocessor, model.network
    samples: dict[str, list[float]] = {}
    predictor.reset()

    def timed(stage: str, fn):
        start = time.perf_counter()
        value = fn()
        samples.setdefault(stage, []).append((time.perf_counter() - start) * 1000.0)
        return value

    runner = None
    for index, frame in enumerate(frames):
        image = torch.from_numpy(frame).permute(2, 0, 1).contiguous()
        with torch.inference_mode():
            batch, sizes = model.preprocessor.batch([model.preprocessor.resize_for_test(image)])
        if runner is None:
            runner = build_backend(backend, model, [batch])
        with torch.inference_mode():
            out = timed("network", lambda: runner(batch))
            (h, w), (oh, ow) = sizes[0], tuple(image.shape[-2:])

            def candidates():
                c = pp._candidates(out, 0)
                c = c._asdict() if hasattr(c, "_asdict") else c  # a Candidates named tuple
                keep = batched_nms(c["boxes"], c["scores"], c["labels"], pp.nms_threshold, pp.max_detections,
                                  stable=not runner.float32)   # as the pipeline does (autotune.backend_detections)
                return {k: v[keep] for k, v in c.items()}
            c = timed("candidates+nms", candidates)
            gathered = timed("gather", lambda: (
                _gather_by_level(out, "controller", 0, c["levels"], c["index"], net.at_locations),
                _gather_by_level(out, "embeddings", 0, c["levels"], c["index"], net.at_locations)))
            params, embeddings = gathered
            boxes = c["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h])
            det = FrameDetections(boxes=boxes, scores=c["scores"], labels=c["labels"].long(), image_size=(oh, ow),
                                  embeddings=embeddings.float())
            ids = timed("tracker", lambda: predictor.tracker.update(det))
            # as the pipeline does: masks only for the detections the tracker kept
            kept = (ids >= 0).nonzero().flatten()
            p, loc, lev = params[kept], c["locations"][kept], c["levels"][kept]
            zeros = torch.zeros(kept.numel(), dtype=torch.int64)
            timed("mask head", lambda: pp.mask_head(_mask_feats(out), pp.mask_feat_stride, p, loc, lev, zeros))
            instances = timed("instances", lambda: TrackedInstances.from_detections(
                det.select(kept), ids[kept]))
            if paste:
                masks = timed("paste", lambda: pp._masks(_mask_feats(out), p, loc, lev, (h, w), (oh, ow)))
                samples["paste"][-1] -= samples["mask head"][-1]  # _masks runs the mask head again
                instances.masks = masks
            else:
                instances.pending_masks = DeferredMasks(pp, _mask_feats(out), p, loc, lev, (h, w), (oh, ow))
            timed("rle", lambda: predictor.accumulator.add(instances, instances.track_ids))
            if not paste:
                samples["rle"][-1] -= samples["mask head"][-1]  # encoding runs the mask head again
            samples.setdefault("kept", []).append(kept.numel())
        if index == 0:  # warm-up frame
            samples = {}
    return {k: statistics.median(v) for k, v in samples.items()}


def _mask_feats(out) -> torch.Tensor:
    return out["mask_feats"] if isinstance(out, dict) else out.mask_feats


def main(argv: list[str] | None = None) -> int:
    from crossvis.inference.autotune import cpu_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="r50")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--backend", default=None, help="network backend (default: fp32-fused, else fp32)")
    parser.add_argument("--paste", action="store_true", help="paste the masks at frame size and encode those")
    parser.add_argument("--frame-size", default="360x640", metavar="HxW",
                        help="frames of this size, resized to the model's test size (default 360x640: not resized)")
    args = parser.parse_args(argv)
    from crossvis.inference.backends import backend_unavailable

    backend = args.backend or ("fp32" if backend_unavailable("fp32-fused", torch.device("cpu")) else "fp32-fused")
    import os

    allocator = bench.keep_freed_memory()
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {allocator}; load average {os.getloadavg()[0]:.2f}")
    try:
        height, width = (int(v) for v in args.frame_size.lower().split("x"))
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        parser.error(f"--frame-size {args.frame_size!r}: give HxW, e.g. 720x1280")
    frames = bench.synthetic_frames(args.frames + 1, height, width)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        stages = profile(args.arch, frames, args.detections, backend, args.paste)
        network = stages.pop("network")
        kept = stages.pop("kept")
        overhead = sum(stages.values())
        print(f"\n{args.arch}, {threads} thread(s), {args.detections} detections: "
              f"network ({backend}) {network:.1f} ms, "
              f"overhead {overhead:.1f} ms = {100 * overhead / network:.1f}% of the network "
              f"({kept:.0f} detections kept by the tracker)")
        for stage, ms in stages.items():
            print(f"  {stage:<16}{ms:>9.1f} ms{100 * ms / network:>7.1f}%")
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
