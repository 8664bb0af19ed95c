"""RLE encoding of a frame's masks: ``crossvis.formats.encode_masks`` against ``pycocotools.mask.encode``.

    python benchmarks/bench_rle.py [--height 360 --width 640 --masks 85 --frames 20]

Each frame holds ``--masks`` masks, each a filled ellipse at a random place; the rows of the
table vary its width (a fraction of the frame width; 1.0: every mask spans the whole width,
where skipping empty columns cannot pay). The encoders take turns on every frame
(``benchlib.time_side_by_side``), so a noisy machine slows them alike; the strings are checked
equal on every frame first. ``crossvis`` encodes on 1 and 2 threads (the pipeline allows every
free core; :class:`crossvis.formats.rle_encode.ThreadChoice` then keeps the faster), and on 2
threads reading every column (``all columns``: the encoder before it skipped empty ones).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "crossvis" not in sys.modules:
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from pycocotools import mask as mask_utils  # noqa: E402

import benchlib as bench  # noqa: E402
from crossvis.formats import rle_encode  # noqa: E402


def frame_masks(height: int, width: int, count: int, span: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 0/1 [H, W, N] Fortran-ordered masks (the layout both encoders take): ellipses whose
    width is ``span`` of the frame's (×0.5–1.5, at most the frame)."""
    y, x = np.mgrid[:height, :width]
    masks = np.zeros((count, width, height), dtype=np.uint8)  # C order [N, W, H] = Fortran [H, W, N]
    for i in range(count):
        half_w = min(width, max(2, span * width * rng.uniform(0.5, 1.5))) / 2
        half_h = height * rng.uniform(0.1, 0.4)
        cx = rng.uniform(half_w, width - half_w) if span < 1 else width / 2
        cy = rng.uniform(0, height)
        masks[i] = (((x - cx) / half_w) ** 2 + ((y - cy) / half_h) ** 2 < 1).T
    return masks.transpose(2, 1, 0)


def every_column(step):
    """``step`` run with :func:`crossvis.formats.rle_encode.column_spans` giving every mask all columns."""
    def whole(columns: np.ndarray) -> np.ndarray:
        return np.tile(np.array([0, columns.shape[1]], dtype=np.int64), (columns.shape[0], 1))

    def run(masks):
        scan, rle_encode.column_spans = rle_encode.column_spans, whole
        try:
            return step(masks)
        finally:
            rle_encode.column_spans = scan
    return run


def main(argv: list[str] | None = None) -> int:
    from crossvis.inference.autotune import cpu_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--masks", type=int, default=85)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--spans", default="0.1,0.3,0.6,1.0", help="mask widths, fractions of the frame's")
    args = parser.parse_args(argv)
    print(f"cpu: {cpu_model()}; {args.masks} masks of {args.height}x{args.width} per frame, {args.frames} frames")
    print(f"{'mask width':>10} {'pycocotools ms':>15} {'crossvis 1 thr':>15} {'ratio':>6} {'crossvis 2 thr':>15} "
          f"{'ratio':>6} {'all columns 2 thr':>18} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for span in (float(s) for s in args.spans.split(",")):
        frames = [frame_masks(args.height, args.width, args.masks, span, rng) for _ in range(args.frames)]
        for masks in frames:
            expected = [r["counts"] for r in mask_utils.encode(masks)]
            if rle_encode.encode_counts(masks, 2) != expected:
                print(f"crossvis encoded other strings than pycocotools at mask width {span}")
                return 1
        steps = [lambda m: mask_utils.encode(m), lambda m: rle_encode.encode_counts(m, 1),
                 lambda m: rle_encode.encode_counts(m, 2), every_column(lambda m: rle_encode.encode_counts(m, 2))]
        times = bench.time_side_by_side(steps, frames, warmup=1, pause=0.0)
        coco, one, two, full = (statistics.median(wall for wall, _ in t) * 1000.0 for t in times)
        print(f"{span:>10.1f} {coco:>15.2f} {one:>15.2f} {one / coco:>6.2f} {two:>15.2f} {two / coco:>6.2f} "
              f"{full:>18.2f} {full / coco:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
