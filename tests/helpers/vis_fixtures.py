"""A small hand-made YouTube-VIS-format dataset unlike the synthetic generator's output.

Video ids 101/205, category ids with gaps (3, 7, 12), track ids starting at 5001, one landscape
(64x96) and one portrait (96x64) video, uncompressed-RLE segmentations, a track that leaves the
video (null entries), PNG frames in nested folders.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_handmade_vis(root: Path, split: str, num_frames: int = 4) -> tuple[Path, Path]:
    """Write ``root/<split>.json`` and ``root/<split>_frames/``; return (annotations, images)."""
    images = root / f"{split}_frames"
    videos, annotations = [], []
    specs = [(101, 64, 96, [(3, 5001, (10, 12, 22, 30)), (12, 5003, (30, 50, 26, 18))]),
             (205, 96, 64, [(7, 9000, (20, 10, 30, 24))])]
    for vid, h, w, objects in specs:
        names = [f"clip{vid}/sub/f{t:03d}.png" for t in range(num_frames)]
        frames = np.full((num_frames, h, w, 3), 40, np.uint8)
        frames[..., 2] = np.linspace(30, 90, w, dtype=np.uint8)[None, None, :]
        for cat, tid, (y, x, bh, bw) in objects:
            segs, boxes, areas = [], [], []
            for t in range(num_frames):
                if tid == 5003 and t == num_frames - 1:  # this track leaves the video
                    segs.append(None), boxes.append(None), areas.append(None)
                    continue
                mask = np.zeros((h, w), np.uint8)
                yy, xx = y + t, x + 2 * t
                mask[yy:yy + bh, xx:xx + bw] = 1
                frames[t][mask.astype(bool)] = (60 * (cat % 4) + 40, 200 - 10 * cat, 90)
                segs.append(_uncompressed_rle(mask))
                ys, xs = np.nonzero(mask)
                boxes.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                              float(ys.max() - ys.min() + 1)])
                areas.append(float(mask.sum()))
            annotations.append({"id": tid + (0 if split == "train" else 100), "video_id": vid, "category_id": cat,
                                "iscrowd": 0, "height": h, "width": w, "segmentations": segs,
                                "bboxes": boxes, "areas": areas})
        for name, frame in zip(names, frames):
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(images / name)
        videos.append({"id": vid, "height": h, "width": w, "length": num_frames, "file_names": names})
    data = {"videos": videos, "annotations": annotations,
            "categories": [{"id": 3, "name": "box"}, {"id": 7, "name": "tall"}, {"id": 12, "name": "wide"}]}
    path = root / f"{split}.json"
    path.write_text(json.dumps(data))
    return path, images
