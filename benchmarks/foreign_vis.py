"""A YouTube-VIS-format test set written independently of ``crossvis.data.synthetic``.

It exists to measure whether a recipe learned *shapes that move* or *the look of crossvis's own
generator*: everything here is drawn differently. Backgrounds are value-noise textures (several
octaves of bicubically upsampled random grids, coloured through a random palette) or "photo-like"
blurred blob fields; objects are plain-coloured PIL polygons/ellipses (4 categories: ellipse,
rectangle, triangle, pentagon), larger than crossvis's shapes, 1-3 per video, moving along their
own paths so they cross and occlude each other, entering late and leaving early through the
frame border. Masks are the visible parts (the nearer object wins), stored as compressed RLE
(pycocotools), in the per-track YouTube-VIS 2019 layout.

    python benchmarks/foreign_vis.py OUT [--seed 7] [--style noise|photo|mixed] [--palette free|tied]

Writes ``OUT/train`` (60 videos) and ``OUT/test`` (12 videos) of 10 frames at 192x320 by default.
Train a recipe on it by pointing ``data.*`` there::

    crossvis train crossvis:quickstart_synthetic --output runs/foreign \\
        --set data.train.annotations=OUT/train/annotations.json data.train.images=OUT/train/JPEGImages \\
              data.test.annotations=OUT/test/annotations.json data.test.images=OUT/test/JPEGImages
"""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

CATEGORIES = ["ellipse", "rectangle", "triangle", "pentagon"]


def value_noise(rnd: np.random.Generator, height: int, width: int, octaves: int = 4) -> np.ndarray:
    """Fractal value noise in [0, 1], float32 [H, W]."""
    total = np.zeros((height, width), np.float32)
    weight_sum = 0.0
    cells = int(rnd.integers(2, 5))
    for octave in range(octaves):
        grid = (rnd.random((cells + 1, cells * width // height + 2)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32) / 255.0
        weight = 0.55 ** octave
        total += weight * layer
        weight_sum += weight
        cells *= 2
    total /= weight_sum
    return (total - total.min()) / max(float(total.max() - total.min()), 1e-6)


def noise_background(rnd: np.random.Generator, height: int, width: int) -> Image.Image:
    a, b = rnd.integers(0, 256, 3), rnd.integers(0, 256, 3)
    t = value_noise(rnd, height, width)[..., None]
    detail = value_noise(rnd, height, width, octaves=2)[..., None]
    rgb = a * (1 - t) + b * t + (detail - 0.5) * rnd.uniform(20, 80)
    rgb += rnd.normal(0, rnd.uniform(3, 14), rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def photo_background(rnd: np.random.Generator, height: int, width: int) -> Image.Image:
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rnd.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rnd.integers(15, 40))):
        x, y = rnd.uniform(-40, width), rnd.uniform(-40, height)
        w, h = rnd.uniform(10, width / 2), rnd.uniform(10, height / 2)
        colour = tuple(int(c) for c in rnd.integers(0, 256, 3))
        if rnd.random() < 0.5:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        else:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rnd.uniform(3, 9))))
    grain = rnd.normal(0, rnd.uniform(4, 12), (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8))


def polygon(category: str, cx: float, cy: float, size: float, angle: float, aspect: float) -> list:
    if category == "rectangle":
        corners = [(-1, -aspect), (1, -aspect), (1, aspect), (-1, aspect)]
    elif category == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:  # pentagon
        corners = [(math.cos(-math.pi / 2 + k * 2 * math.pi / 5), math.sin(-math.pi / 2 + k * 2 * math.pi / 5))
                   for k in range(5)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + size * (x * c - y * s), cy + size * (x * s + y * c)) for x, y in corners]


def draw_shape(draw: ImageDraw.ImageDraw, category: str, cx: float, cy: float, size: float, angle: float,
               aspect: float, fill) -> None:
    if category == "ellipse":
        draw.ellipse([cx - size, cy - size * aspect, cx + size, cy + size * aspect], fill=fill)
    else:
        draw.polygon(polygon(category, cx, cy, size, angle, aspect), fill=fill)


def make_video(rnd: np.random.Generator, frames: int, height: int, width: int, style: str, palette: str,
               tied_colours: np.ndarray, max_objects: int):
    kind = style if style != "mixed" else ("noise" if rnd.random() < 0.5 else "photo")
    background = noise_background(rnd, height, width) if kind == "noise" else photo_background(rnd, height, width)
    count = int(rnd.integers(1, max_objects + 1))
    objects = []
    for k in range(count):
        category = int(rnd.integers(len(CATEGORIES)))
        size = rnd.uniform(0.16, 0.32) * height
        # start and end points anywhere (also off-frame): paths cross, objects enter and leave
        p0 = np.array([rnd.uniform(-0.1, 1.1) * width, rnd.uniform(0, 1) * height])
        p1 = np.array([rnd.uniform(-0.1, 1.1) * width, rnd.uniform(0, 1) * height])
        first = int(rnd.integers(0, frames // 2)) if (k > 0 and rnd.random() < 0.4) else 0
        last = int(rnd.integers(frames // 2 + 1, frames + 1)) if (k > 0 and rnd.random() < 0.4) else frames
        if palette == "tied":
            colour = tied_colours[category] + rnd.integers(-20, 21, 3)
        else:
            colour = rnd.integers(0, 256, 3)
        objects.append(dict(category=category, size=size, p0=p0, p1=p1, first=first, last=last,
                            angle=rnd.uniform(0, 2 * math.pi), spin=rnd.uniform(-0.15, 0.15),
                            aspect=rnd.uniform(0.6, 1.0), grow=rnd.uniform(-0.25, 0.25),
                            colour=tuple(int(c) for c in np.clip(colour, 0, 255))))
    order = list(rnd.permutation(count))  # drawing order: last drawn is nearest
    shift = rnd.normal(0, 1.5, 2)  # camera pan per frame
    images, visible = [], [[None] * frames for _ in objects]
    for t in range(frames):
        offset = (shift * t).round().astype(int)
        frame = Image.fromarray(np.roll(np.asarray(background), tuple(offset[::-1]), axis=(0, 1)))
        draw = ImageDraw.Draw(frame)
        covered = np.zeros((height, width), bool)
        masks = {}
        for k in order:
            o = objects[k]
            if not o["first"] <= t < o["last"]:
                continue
            a = t / max(frames - 1, 1)
            cx, cy = o["p0"] * (1 - a) + o["p1"] * a
            size = o["size"] * (1 + o["grow"] * a)
            angle = o["angle"] + o["spin"] * t
            draw_shape(draw, CATEGORIES[o["category"]], cx, cy, size, angle, o["aspect"], o["colour"])
            layer = Image.new("L", (width, height), 0)
            draw_shape(ImageDraw.Draw(layer), CATEGORIES[o["category"]], cx, cy, size, angle, o["aspect"], 255)
            masks[k] = np.asarray(layer) > 127
        for k in reversed(order):  # nearest first
            if k not in masks:
                continue
            vis = masks[k] & ~covered
            covered |= masks[k]
            if vis.sum() >= 30:
                visible[k][t] = vis
        if rnd.random() < 0.3:
            frame = frame.filter(ImageFilter.GaussianBlur(float(rnd.uniform(0.5, 1.2))))
        images.append(frame)
    return images, visible, [o["category"] for o in objects]


def write_split(out: Path, split: str, videos: int, frames: int, height: int, width: int, seed: int, style: str,
                palette: str, max_objects: int) -> None:
    rnd = np.random.default_rng(seed)
    tied = np.random.default_rng(seed + 1000).integers(30, 226, (len(CATEGORIES), 3))
    images_root = out / split / "JPEGImages"
    video_entries, annotations = [], []
    for v in range(videos):
        images, visible, categories = make_video(rnd, frames, height, width, style, palette, tied, max_objects)
        name = f"vid{seed}_{split}_{v:03d}"
        (images_root / name).mkdir(parents=True, exist_ok=True)
        names = []
        for t, image in enumerate(images):
            names.append(f"{name}/img_{t:03d}.jpg")
            image.save(images_root / names[-1], quality=int(rnd.integers(75, 95)))
        video_entries.append({"id": v + 1, "width": width, "height": height, "length": frames, "file_names": names})
        for per_frame, category in zip(visible, categories):
            if all(m is None for m in per_frame):
                continue
            segs, boxes, areas = [], [], []
            for m in per_frame:
                if m is None:
                    segs.append(None), boxes.append(None), areas.append(None)
                    continue
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                segs.append({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
                boxes.append([float(x) for x in mask_utils.toBbox(rle)])
                areas.append(float(mask_utils.area(rle)))
            annotations.append({"id": len(annotations) + 1, "video_id": v + 1, "category_id": category + 1,
                                "iscrowd": 0, "width": width, "height": height, "segmentations": segs,
                                "bboxes": boxes, "areas": areas})
    data = {"info": {"description": f"foreign VIS set seed={seed} style={style} palette={palette}"},
            "videos": video_entries, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CATEGORIES)]}
    (out / split / "annotations.json").write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--style", choices=["noise", "photo", "mixed"], default="mixed")
    parser.add_argument("--palette", choices=["free", "tied"], default="free")
    parser.add_argument("--train-videos", type=int, default=60)
    parser.add_argument("--test-videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--max-objects", type=int, default=3)
    args = parser.parse_args()
    random.seed(args.seed)
    out = Path(args.out)
    for split, videos, offset in (("train", args.train_videos, 0), ("test", args.test_videos, 1)):
        write_split(out, split, videos, args.frames, args.height, args.width, args.seed * 10 + offset, args.style,
                    args.palette, args.max_objects)
    print(f"wrote {out}/train ({args.train_videos} videos) and {out}/test ({args.test_videos} videos)")


if __name__ == "__main__":
    main()
