"""Helpers: a small hand-made YouTube-VIS dataset with known masks, and a synthetic dataset."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# video id -> (height, width, number of frames)
VIDEOS = {10: (24, 32, 6), 20: (32, 24, 4)}
# categories listed out of id order; contiguous labels follow the sorted ids 3, 7, 12
CATEGORIES = [{"id": 7, "name": "c7"}, {"id": 3, "name": "c3"}, {"id": 12, "name": "c12"}]
# annotation id -> (video id, category id, iscrowd, frames where present)
TRACKS = {
    55: (10, 7, 0, [0, 1, 2, 3]),
    8: (10, 12, 0, [2, 3, 5]),
    99: (10, 3, 1, [4]),        # crowd only: frame 4 of video 10 has no usable instance
    30: (20, 3, 0, [0, 1, 2, 3]),
}
KEPT_FRAMES = {10: [0, 1, 2, 3, 5], 20: [0, 1, 2, 3]}


def list_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed RLE written independently of the library: runs over the column-major pixels."""
    flat = mask.T.reshape(-1).tolist()
    counts = [] if flat[0] == 0 else [0]
    counts += [len(list(group)) for _, group in itertools.groupby(flat)]
    return {"counts": counts, "size": list(mask.shape)}


def _rect(h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    x0, y0 = int(rng.integers(0, w - 6)), int(rng.integers(0, h - 6))
    return x0, y0, int(rng.integers(x0 + 3, w + 1)), int(rng.integers(y0 + 3, h + 1))


def make_vis_dataset(root: Path, encoding: str = "list", seed: int = 0) -> tuple[Path, Path, dict]:
    """Write the hand-made dataset; returns (annotation path, images root, {(vid, frame, ann id): mask}).

    encoding: "list" (uncompressed RLE), "str" (compressed RLE) or "poly" (two rectangles each).
    """
    rng = np.random.default_rng(seed)
    images = root / "images"
    videos, truth = [], {}
    for vid, (h, w, n) in VIDEOS.items():
        names = [f"v{vid}/{i:05d}.png" for i in range(n)]
        (images / f"v{vid}").mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
        videos.append({"id": vid, "height": h, "width": w, "length": n, "file_names": names})
    anns = []
    for aid, (vid, cid, crowd, present) in TRACKS.items():
        h, w, n = VIDEOS[vid]
        segs: list[Any] = [None] * n
        for f in present:
            if encoding == "poly":
                polys, mask = [], np.zeros((h, w), np.uint8)
                for _ in range(2):
                    x0, y0, x1, y1 = _rect(h, w, rng)
                    polys.append([x0, y0, x1, y0, x1, y1, x0, y1])
                    mask[y0:y1, x0:x1] = 1
                segs[f] = polys
            else:
                x0, y0, x1, y1 = _rect(h, w, rng)
                mask = np.zeros((h, w), np.uint8)
                mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
                mask[y0, x0] = 1
                if encoding == "list":
                    segs[f] = list_rle(mask)
                else:
                    rle = mask_utils.encode(np.asfortranarray(mask))
                    segs[f] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            truth[(vid, f, aid)] = mask
        anns.append({"id": aid, "video_id": vid, "category_id": cid, "iscrowd": crowd, "segmentations": segs,
                     "bboxes": [None if s is None else [0, 0, 1, 1] for s in segs],
                     "areas": [None if s is None else 1 for s in segs]})
    path = root / "ann.json"
    path.write_text(json.dumps({"videos": videos, "annotations": anns, "categories": CATEGORIES}))
    return path, images, truth
