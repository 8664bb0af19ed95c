"""Random YouTube-VIS evaluation cases (ground truth dict + results list) for cross-checks.

Masks are rectangles so that areas span every size bin cheaply; predictions copy a ground-truth
rectangle with jitter often enough to produce matches at all IoU thresholds. Cases cover: video and
category ids out of order, unannotated videos, null and all-zero frames, crowd tracks, JSON
``areas`` that hit the bin bounds exactly, tied scores, more than 10 predictions per video, shorter
and longer prediction lists (truncation), and predictions in categories the ground truth lacks.
:func:`make_ovis_case` adds per-frame OVIS occlusion labels and gives every prediction its video's
length (the OVIS evaluator requires it).
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

# (height, width) choices: small frames, and frames big enough for medium/large mean areas.
FRAME_SIZES = [(5, 7), (6, 6), (140, 150), (300, 260)]
OCCLUSION_LABELS = [None, "no_occlusion", "slight_occlusion", "severe_occlusion"]
# JSON areas that hit below/at/above the 128² and 256² bounds.
AREA_CHOICES = [None, 0, 50, 16383, 16384, 16385, 30000, 65535, 65536, 65537, 90000]


def rle(mask: np.ndarray) -> dict:
    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(enc["size"][0]), int(enc["size"][1])], "counts": enc["counts"].decode("ascii")}


def rect_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, x0, y1, x1 = box
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def random_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    y0, y1 = sorted(rng.integers(0, h + 1, size=2))
    x0, x1 = sorted(rng.integers(0, w + 1, size=2))
    return int(y0), int(x0), int(max(y1, y0 + 1)), int(max(x1, x0 + 1))


def jitter(rng: np.random.Generator, box: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    d = max(1, min(h, w) // 8)
    y0, x0, y1, x1 = (int(v) + int(rng.integers(-d, d + 1)) for v in box)
    y0, y1 = int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 1, h))
    x0, x1 = int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 1, w))
    return y0, x0, max(y1, y0 + 1), max(x1, x0 + 1)


def make_case(seed: int, n_videos: int = 3, n_categories: int = 3, min_preds: int = 11,
              max_preds: int = 16) -> tuple[dict, list[dict]]:
    """One random (ground truth, results) pair; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    video_ids = [int(v) for v in rng.permutation(np.arange(1, n_videos + 2))[:n_videos] * 3]
    cat_ids = [int(c) for c in rng.permutation(np.arange(1, n_categories + 1))]
    videos, annotations, results = [], [], []
    track_id = 0
    boxes_of: dict[int, list] = {}
    for vid in video_ids:
        h, w = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
        length = int(rng.integers(1, 5))
        videos.append({"id": vid, "height": h, "width": w, "length": length,
                       "file_names": [f"v{vid}/{i:05d}.jpg" for i in range(length)]})
        boxes_of[vid] = []
        if rng.random() < 0.15:  # an unannotated video
            continue
        for _ in range(int(rng.integers(0, 5))):
            track_id += int(rng.integers(1, 4))
            cat = cat_ids[int(rng.integers(n_categories))]
            segs, areas, boxes = [], [], []
            for _f in range(length):
                r = rng.random()
                if r < 0.2:
                    segs.append(None), areas.append(None), boxes.append(None)
                    continue
                box = random_box(rng, h, w)
                mask = rect_mask(h, w, box) if r > 0.25 else np.zeros((h, w), bool)
                segs.append(rle(mask))
                areas.append(AREA_CHOICES[int(rng.integers(len(AREA_CHOICES)))])
                boxes.append(box)
            crowd = int(rng.random() < 0.15)
            annotations.append({"id": track_id, "video_id": vid, "category_id": cat, "iscrowd": crowd,
                                "segmentations": segs, "areas": areas, "bboxes": [None] * length,
                                "height": h, "width": w})
            boxes_of[vid].append((cat, boxes))
    video_size = {v["id"]: (v["height"], v["width"], v["length"]) for v in videos}
    scores = [0.1, 0.3, 0.5, 0.5, 0.7, 0.9]
    for vid in video_ids:
        h, w, length = video_size[vid]
        for _ in range(int(rng.integers(min_preds, max_preds + 1))):
            r = rng.random()
            if r < 0.05:
                n_frames = max(1, length - 1)          # shorter list: truncation
            elif r < 0.1:
                n_frames = length + 1                  # longer list: extra frames never count
            else:
                n_frames = length
            source = boxes_of[vid][int(rng.integers(len(boxes_of[vid])))] if boxes_of[vid] and rng.random() < 0.7 else None
            cat = source[0] if source and rng.random() < 0.8 else cat_ids[int(rng.integers(n_categories))]
            if rng.random() < 0.03:
                cat = max(cat_ids) + 1                 # unknown category: dropped
            segs = []
            for f in range(n_frames):
                if rng.random() < 0.15:
                    segs.append(None)
                    continue
                gt_box = source[1][f] if source and f < len(source[1]) else None
                box = jitter(rng, gt_box, h, w) if gt_box and rng.random() < 0.85 else random_box(rng, h, w)
                mask = rect_mask(h, w, box) if rng.random() > 0.05 else np.zeros((h, w), bool)
                segs.append(rle(mask))
            score = scores[int(rng.integers(len(scores)))] if rng.random() < 0.5 else float(rng.random())
            results.append({"video_id": vid, "category_id": cat, "score": score, "segmentations": segs})
    rng.shuffle(results)
    categories = [{"id": c, "name": f"cat{c}"} for c in cat_ids]
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


def make_ovis_case(seed: int, **kwargs) -> tuple[dict, list[dict]]:
    """:func:`make_case` with OVIS ``occlusion`` labels and predictions padded/cut to the video length.

    Each track draws its labels from its own random mix (some null, never all), so track occlusion
    scores spread over 0 … 0.75 and hit the bin bounds 0.25 and 0.5.
    """
    gt, results = make_case(seed, **kwargs)
    rng = np.random.default_rng([seed, 1])
    for ann in gt["annotations"]:
        n = len(ann["segmentations"])
        labels = [OCCLUSION_LABELS[i] for i in rng.choice(4, size=n, p=rng.dirichlet(np.ones(4)))]
        if all(label is None for label in labels):
            labels[int(rng.integers(n))] = OCCLUSION_LABELS[int(rng.integers(1, 4))]
        ann["occlusion"] = labels
    length = {v["id"]: v["length"] for v in gt["videos"]}
    for res in results:
        n = length[res["video_id"]]
        res["segmentations"] = (res["segmentations"] + [None] * n)[:n]
    return gt, results
