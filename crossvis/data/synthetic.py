"""A synthetic video instance segmentation dataset in the YouTube-VIS format.

Each category is a distinct shape (the shape is the only cue that always holds). With the default
``appearance="varied"`` the rest varies as in real footage: backgrounds are coloured noise
textures, soft blobs, stripe/checker patterns or gradients with grain; objects take their
category's colour or any other, with a stripe, plain or shaded fill, in a wide range of sizes;
they move linearly with jitter, some towards the frame centre (paths cross and nearer objects hide
farther ones: a mask is the object's *visible* part), some bouncing off the border and some leaving
through it, grow or shrink, enter late or leave early; the camera may pan and frames may be
blurred. ``appearance="simple"`` keeps the old, easy look (category colours and stripes over a
grey gradient, bouncing objects).

Output (per split)::

    OUT/JPEGImages/<video>/<frame>.jpg
    OUT/annotations.json    per-track layout, uncompressed RLE masks (as in YTVIS 2019 train),
                            areas, [x, y, w, h] bboxes, null where the object is absent

Generation is deterministic: the same arguments give a byte-identical JSON (and identical JPEGs
with the same Pillow build). A 10-video × 12-frame × 128×192 split takes well under a second.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from crossvis.errors import CrossVISError

__all__ = ["SHAPES", "SyntheticPaths", "OcclusionSetting", "generate_synthetic_dataset", "generate_synthetic_splits",
           "rle_from_mask"]

#: Category names in id order (category id = position + 1).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring", "star", "bar")
_COLOURS = np.array([(225, 45, 45), (40, 120, 235), (245, 205, 30), (50, 190, 70),
                     (200, 60, 210), (250, 135, 20), (40, 215, 215), (245, 245, 245)], dtype=np.float32)
# stripe (angle in radians, period in object radii) per category
_STRIPES = ((0.0, 0.5), (np.pi / 4, 0.7), (np.pi / 2, 0.4), (3 * np.pi / 4, 0.6),
            (np.pi / 6, 0.45), (np.pi / 3, 0.8), (2 * np.pi / 3, 0.55), (5 * np.pi / 6, 0.35))
_MIN_VISIBLE = 16  # a visible part smaller than this many pixels counts as absent (null)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    angle = np.arctan2(v, u)
    return np.hypot(u, v) <= 0.6 + 0.4 * np.cos(5 * angle + np.pi / 2)


_SHAPE_FN: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
    "triangle": lambda u, v: (v <= 0.8) & (v >= 2.0 * np.abs(u) - 1.0),
    "cross": lambda u, v: (np.minimum(np.abs(u), np.abs(v)) <= 0.33) & (np.maximum(np.abs(u), np.abs(v)) <= 1.0),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3),
    "star": _star,
    "bar": lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.45),
}


@dataclass(frozen=True)
class SyntheticPaths:
    """Where a generated split lives: ``annotations`` JSON and the ``images`` root it refers to."""

    root: Path
    annotations: Path
    images: Path


@dataclass
class _Object:
    category: int
    radius: float
    growth: float
    center: np.ndarray
    velocity: np.ndarray
    start: int
    end: int  # exclusive
    colour: np.ndarray  # float32 [3] RGB
    fill: str  # "stripes", "plain" or "shaded"
    bounce: bool  # reflect at the frame border (False: may leave the frame)


def rle_from_mask(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed (list-counts) COCO RLE of a 2-D 0/1 mask, column-major, starting with a 0-run."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _bbox(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue and brightness (float32 [3] RGB)."""
    hue = rng.uniform(0, 6)
    ramp = np.clip(np.abs((hue + np.array([0.0, 4.0, 2.0])) % 6 - 3) - 1, 0, 1)  # HSV hue -> RGB with S=V=1
    value, saturation = rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0)
    return (255 * value * (1 - saturation + saturation * ramp)).astype(np.float32)


def _sample_objects(rng: np.random.Generator, num_frames: int, height: int, width: int,
                    num_categories: int, max_objects: int, varied: bool) -> list[_Object]:
    side = min(height, width)
    objects = []
    for i in range(int(rng.integers(1, max_objects + 1))):
        low, high = (0.08, 0.26) if varied else (0.10, 0.20)
        radius = float(rng.uniform(low, high)) * side
        start, end = 0, num_frames
        if i > 0 and num_frames >= 4 and rng.random() < 0.35:
            start = int(rng.integers(1, num_frames // 2))
        if i > 0 and num_frames >= 4 and rng.random() < 0.35:
            end = int(rng.integers(num_frames // 2 + 1, num_frames))
        category = int(rng.integers(num_categories))
        center = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
        speed = rng.uniform(0.01, 0.04) * width
        if varied and rng.random() < 0.5:
            # head for a point near the frame centre: paths cross, nearer objects hide farther ones
            target = np.array([width, height]) * (0.5 + rng.uniform(-0.15, 0.15, size=2))
            direction = (target - center) / max(float(np.hypot(*(target - center))), 1e-6)
            speed = rng.uniform(0.02, 0.05) * width
        else:
            angle = rng.uniform(0, 2 * np.pi)
            direction = np.array([np.cos(angle), np.sin(angle)])
        if varied:
            colour = _COLOURS[category] if rng.random() < 0.35 else _random_colour(rng)
            fill = str(rng.choice(["stripes", "plain", "shaded"]))
        else:
            colour, fill = _COLOURS[category], "stripes"
        objects.append(_Object(
            category=category, radius=radius, growth=float(rng.uniform(-0.3, 0.3)), center=center,
            velocity=direction * speed, start=start, end=end, colour=colour, fill=fill,
            bounce=not varied or rng.random() < 0.6))
    return objects  # list order is depth order: objects[0] is nearest the camera


def _trajectory(obj: _Object, rng: np.random.Generator, num_frames: int, height: int,
                width: int) -> list[tuple[float, float, float]]:
    """Per-frame (cx, cy, radius): linear motion + jitter, reflected at the frame border unless
    the object may leave it."""
    out = []
    center, velocity = obj.center.copy(), obj.velocity.copy()
    limits = np.array([width, height], dtype=np.float64)
    for t in range(num_frames):
        radius = obj.radius * (1.0 + obj.growth * t / max(num_frames - 1, 1))
        out.append((float(center[0]), float(center[1]), radius))
        center = center + velocity + rng.normal(0.0, 0.4, size=2)
        for axis in range(2):
            lo, hi = radius * 0.5, limits[axis] - radius * 0.5
            if obj.bounce and (center[axis] < lo or center[axis] > hi):
                velocity[axis] = -velocity[axis]
                center[axis] = np.clip(center[axis], lo, hi)
    return out


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, octaves: int) -> np.ndarray:
    """Fractal value noise in [0, 1]: float32 [H, W], octaves of bilinearly upsampled random grids."""
    total = np.zeros((height, width), dtype=np.float32)
    for octave in range(octaves):
        n = cells * 2 ** octave
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        ys = np.linspace(0, n, height, dtype=np.float32)
        xs = np.linspace(0, n, width, dtype=np.float32)
        y0, x0 = np.minimum(ys.astype(int), n - 1), np.minimum(xs.astype(int), n - 1)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        total += (top * (1 - fy) + bottom * fy) * 0.5 ** octave
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _background(rng: np.random.Generator, height: int, width: int, varied: bool) -> np.ndarray:
    """An H×W×3 float32 background: a gentle gradient, or (varied) a coloured noise texture,
    soft colour blobs or a stripe/checker pattern, over the gradient."""
    base = rng.uniform(70, 150, size=3)
    tilt = rng.uniform(-40, 40, size=(2, 1)) + rng.uniform(-8, 8, size=(2, 3))
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    if not varied:
        base = 0.8 * base.mean() + 0.2 * base  # low saturation so the coloured objects stand out
        return (base + ys * tilt[0] + xs * tilt[1]).astype(np.float32)
    image = (rng.uniform(30, 220, size=3) + ys * tilt[0] + xs * tilt[1]).astype(np.float32)
    kind = rng.choice(["gradient", "texture", "blobs", "pattern"], p=[0.15, 0.4, 0.25, 0.2])
    if kind == "texture":
        t = _smooth_noise(rng, height, width, int(rng.integers(2, 6)), 4)[..., None]
        image = image * (1 - t) + rng.uniform(20, 235, size=3).astype(np.float32) * t
    elif kind == "blobs":
        for _ in range(int(rng.integers(4, 12))):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            sy, sx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
            weight = np.exp(-0.5 * (((ys[..., 0] + 0.5) * height - cy) / sy) ** 2
                            - 0.5 * (((xs[..., 0] + 0.5) * width - cx) / sx) ** 2)[..., None]
            image = image * (1 - weight) + _random_colour(rng) * 0.8 * weight
    elif kind == "pattern":
        period = rng.uniform(0.04, 0.15) * min(height, width)
        angle = rng.uniform(0, np.pi)
        u = ((xs[..., 0] + 0.5) * width * np.cos(angle) + (ys[..., 0] + 0.5) * height * np.sin(angle)) / period
        v = ((ys[..., 0] + 0.5) * height * np.cos(angle) - (xs[..., 0] + 0.5) * width * np.sin(angle)) / period
        on = (np.floor(u) % 2 == 0) if rng.random() < 0.5 else ((np.floor(u) + np.floor(v)) % 2 == 0)
        image = image + (on[..., None] * 2.0 - 1.0) * rng.uniform(10, 35)
    detail = _smooth_noise(rng, height, width, 16, 2)[..., None] - 0.5
    return (image + detail * rng.uniform(0, 50)).astype(np.float32)


def _fill(obj: _Object, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The object's colour at object coordinates (u, v): float32 [h, w, 3]."""
    if obj.fill == "plain":
        return np.broadcast_to(obj.colour, (*u.shape, 3))
    if obj.fill == "shaded":
        shade = 1.0 - 0.25 * np.clip(u + v, -1.5, 1.5) / 1.5
    else:
        angle, period = _STRIPES[obj.category]
        phase = (np.cos(angle) * u + np.sin(angle) * v) * (2 * np.pi / period)
        shade = 0.72 + 0.28 * (np.sin(phase) > 0)
    return obj.colour * shade[..., None]


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """A (2r+1)-tap box blur along both axes of an H×W×3 float32 image (edges repeated)."""
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        cumulative = np.cumsum(padded, axis=axis, dtype=np.float64)
        cumulative = np.concatenate([np.zeros_like(np.take(cumulative, [0], axis=axis)), cumulative], axis=axis)
        n = out.shape[axis]
        out = ((np.take(cumulative, np.arange(2 * radius + 1, n + 2 * radius + 1), axis=axis)
                - np.take(cumulative, np.arange(n), axis=axis)) / (2 * radius + 1)).astype(np.float32)
    return out


@dataclass(frozen=True)
class OcclusionSetting:
    """An occlusion-heavy variant of the videos (for comparing association methods).

    Args:
        min_objects: every video has at least this many objects (more are drawn until it does).
        absence_probability: chance that an object leaves for a while and returns (it is not drawn,
            and annotated null, for ``absence_frames`` frames in the middle of its life, while it
            keeps moving, so it comes back elsewhere).
        absence_frames: (min, max) length of such an absence, in frames.
        occluders: untracked grey slabs in front of every object, sweeping slowly across the frame
            (long partial or full occlusions).
        occluder_width: slab width as a fraction of the frame width.
    """

    min_objects: int = 4
    absence_probability: float = 0.5
    absence_frames: tuple[int, int] = (3, 6)
    occluders: int = 1
    occluder_width: float = 0.25


def _absences(rng: np.random.Generator, objects: list[_Object], setting: OcclusionSetting) -> list[range]:
    """Per object the frames it is away (an empty range when it stays)."""
    out = []
    lo, hi = setting.absence_frames
    for obj in objects:
        length = int(rng.integers(lo, hi + 1))
        life = obj.end - obj.start
        if rng.random() >= setting.absence_probability or life < length + 2:
            out.append(range(0))
            continue
        first = obj.start + 1 + int(rng.integers(0, life - length - 1))
        out.append(range(first, first + length))
    return out


def _occluder_masks(rng: np.random.Generator, num_frames: int, height: int, width: int,
                    setting: OcclusionSetting) -> list[np.ndarray]:
    """Per frame the pixels covered by the occluders (bool H×W)."""
    half = 0.5 * setting.occluder_width * width
    slabs = [(rng.uniform(0, width), rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * width / max(num_frames, 1))
             for _ in range(setting.occluders)]
    xs = np.arange(width)[None, :]
    masks = []
    for t in range(num_frames):
        covered = np.zeros((height, width), dtype=bool)
        for x0, speed in slabs:
            centre = (x0 + speed * t) % (width + 2 * half) - half
            covered |= np.broadcast_to(np.abs(xs - centre) <= half, (height, width))
        masks.append(covered)
    return masks


_Rendered = tuple[list[np.ndarray], list[list[Optional[np.ndarray]]], list[int]]


def _render_video(rng: np.random.Generator, num_frames: int, height: int, width: int,
                  num_categories: int, max_objects: int, varied: bool = False,
                  occlusion: Optional[OcclusionSetting] = None) -> _Rendered:
    """Frames (H×W×3 uint8), per object the visible mask of each frame (None when absent), categories.

    ``varied`` adds textured backgrounds, free colours and fills, crossings, objects leaving the
    frame, a panning camera and motion blur; ``occlusion`` (an :class:`OcclusionSetting`) adds
    objects that leave and return and occluding slabs."""
    objects = _sample_objects(rng, num_frames, height, width, num_categories, max_objects, varied)
    if occlusion is not None:
        while len(objects) < occlusion.min_objects:
            objects += _sample_objects(rng, num_frames, height, width, num_categories, max_objects, varied)
        objects = objects[:max(occlusion.min_objects, max_objects)]
    paths = [_trajectory(o, rng, num_frames, height, width) for o in objects]
    margin = int(0.1 * min(height, width)) if varied else 0
    world = _background(rng, height + 2 * margin, width + 2 * margin, varied)
    pan = rng.uniform(-1, 1, size=2) * margin / max(num_frames - 1, 1) if varied and rng.random() < 0.5 else np.zeros(2)
    blur = int(rng.integers(1, 3)) if varied and rng.random() < 0.25 else 0
    noise_level = int(rng.integers(4, 20)) if varied else 12
    away = [range(0)] * len(objects) if occlusion is None else _absences(rng, objects, occlusion)
    covered = None if occlusion is None else _occluder_masks(rng, num_frames, height, width, occlusion)
    frames: list[np.ndarray] = []
    masks: list[list[Optional[np.ndarray]]] = [[None] * num_frames for _ in objects]
    for t in range(num_frames):
        # the camera pans over the background; objects move with the scene
        shift = np.clip(np.round(pan * t), -margin, margin).astype(int)
        image = world[margin + shift[1]:margin + shift[1] + height, margin + shift[0]:margin + shift[0] + width].copy()
        occupied = np.zeros((height, width), dtype=bool)
        if covered is not None:  # occluders are nearest of all
            shade = np.broadcast_to(55.0 + 25.0 * (np.arange(height)[:, None] // 6 % 2), (height, width))
            image[covered[t]] = shade[covered[t]][:, None]
            occupied |= covered[t]
        for k, obj in enumerate(objects):  # nearest first; nearer objects hide farther ones
            if not obj.start <= t < obj.end or t in away[k]:
                continue
            cx, cy, r = paths[k][t]
            cx, cy = cx - shift[0], cy - shift[1]
            y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, height)
            x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, width)
            if y0 >= y1 or x0 >= x1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            u, v = (xx - cx) / r, (yy - cy) / r
            inside = _SHAPE_FN[SHAPES[obj.category]](u, v)
            visible = inside & ~occupied[y0:y1, x0:x1]
            if visible.sum() < _MIN_VISIBLE:
                continue
            patch = image[y0:y1, x0:x1]
            patch[visible] = _fill(obj, u, v)[visible]
            occupied[y0:y1, x0:x1] |= visible
            full = np.zeros((height, width), dtype=np.uint8)
            full[y0:y1, x0:x1] = visible
            masks[k][t] = full
        if blur:
            image = _box_blur(image, blur)
        noise = rng.integers(-noise_level, noise_level + 1, size=(height, width, 3), dtype=np.int16)
        frames.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return frames, masks, [o.category for o in objects]


def _split_seed(seed: int, split_name: str) -> list[int]:
    return [int(seed), zlib.crc32(split_name.encode("utf-8"))]


def generate_synthetic_dataset(out_dir: str | Path, num_videos: int = 10, num_frames: int = 12,
                               height: int = 128, width: int = 192, num_categories: int = 4,
                               max_objects: int = 3, seed: int = 0, split_name: str = "train",
                               jpeg_quality: int = 90, appearance: str = "varied",
                               progress: bool = False,
                               occlusion: Optional[OcclusionSetting] = None) -> SyntheticPaths:
    """Write one synthetic YouTube-VIS-format split to ``out_dir``.

    Args:
        out_dir: output folder; gets ``JPEGImages/`` and ``annotations.json``.
        num_videos, num_frames, height, width: dataset size and frame size.
        num_categories: number of shape categories (1..8, names from :data:`SHAPES`).
        max_objects: the most objects in one video (each video has 1..max_objects).
        seed: random seed; together with ``split_name`` it fixes every video.
        split_name: name of the split; different names give different videos for the same seed.
        jpeg_quality: JPEG quality of the frames.
        appearance: ``"varied"`` (default): textured/noisy/blob/pattern backgrounds, objects of free
            colour with stripe, plain or shaded fill and wider size range, paths that cross, objects
            that leave through the border, a panning camera and blur; ``"simple"``: the old look
            (grey gradient backgrounds, category colours, stripes, bouncing objects).
        progress: show a progress bar over the videos (tqdm).
        occlusion: an :class:`OcclusionSetting` for occlusion-heavy videos (many objects, long
            occlusions, objects that leave and return); None (default) leaves the videos unchanged.

    Returns:
        SyntheticPaths with the annotation file and the images root its ``file_names`` use.
    """
    if not 1 <= num_categories <= len(SHAPES):
        raise CrossVISError(f"num_categories must be between 1 and {len(SHAPES)}, got {num_categories}")
    if num_videos < 1 or num_frames < 1 or max_objects < 1:
        raise CrossVISError("num_videos, num_frames and max_objects must be at least 1")
    if min(height, width) < 16:
        raise CrossVISError(f"frames must be at least 16x16 pixels, got {height}x{width}")
    if appearance not in ("varied", "simple"):
        raise CrossVISError(f"appearance must be 'varied' or 'simple', got {appearance!r}")
    from tqdm import tqdm

    root = Path(out_dir)
    images = root / "JPEGImages"
    videos, tracks = [], []
    for index in tqdm(range(num_videos), desc=f"synthetic {split_name}", unit="video", disable=not progress,
                      dynamic_ncols=True):
        rng = np.random.default_rng([*_split_seed(seed, split_name), index])
        frames, masks, categories = _render_video(rng, num_frames, height, width, num_categories, max_objects,
                                                  varied=appearance == "varied", occlusion=occlusion)
        name = f"{split_name}_{index:04d}"
        (images / name).mkdir(parents=True, exist_ok=True)
        file_names = [f"{name}/{5 * t:05d}.jpg" for t in range(num_frames)]
        for frame, file_name in zip(frames, file_names):
            Image.fromarray(frame).save(images / file_name, quality=jpeg_quality)
        video_id = index + 1
        videos.append({"id": video_id, "width": width, "height": height, "length": num_frames,
                       "file_names": file_names})
        for per_frame, category in zip(masks, categories):
            if all(m is None for m in per_frame):
                continue
            tracks.append({
                "id": len(tracks) + 1, "video_id": video_id, "category_id": category + 1, "iscrowd": 0,
                "height": height, "width": width,
                "segmentations": [None if m is None else rle_from_mask(m) for m in per_frame],
                "areas": [None if m is None else int(m.sum()) for m in per_frame],
                "bboxes": [None if m is None else _bbox(m) for m in per_frame],
            })
    data = {
        "info": {"description": "crossvis synthetic VIS dataset", "split": split_name, "seed": int(seed),
                 "appearance": appearance},
        "categories": [{"id": k + 1, "name": SHAPES[k], "supercategory": "shape"} for k in range(num_categories)],
        "videos": videos,
        "annotations": tracks,
    }
    annotations = root / "annotations.json"
    annotations.write_text(json.dumps(data, separators=(",", ":")))
    return SyntheticPaths(root=root, annotations=annotations, images=images)


def generate_synthetic_splits(out_dir: str | Path, train_videos: int = 10, test_videos: int = 4,
                              **kwargs: Any) -> dict[str, SyntheticPaths]:
    """Write a ``train`` and a held-out ``test`` split to ``out_dir/train`` and ``out_dir/test``.

    The splits share every argument in ``kwargs`` (see :func:`generate_synthetic_dataset`) but use
    different random streams, so no test video repeats a training video.

    Returns:
        ``{"train": SyntheticPaths, "test": SyntheticPaths}``.
    """
    root = Path(out_dir)
    return {"train": generate_synthetic_dataset(root / "train", num_videos=train_videos, split_name="train", **kwargs),
            "test": generate_synthetic_dataset(root / "test", num_videos=test_videos, split_name="test", **kwargs)}
