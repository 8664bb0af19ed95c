"""Drawing tracked instances: mask blend, outline, box and a "name #id score" label per track."""
from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crossvis.structures import TrackedInstances

__all__ = ["track_color", "draw_tracked_instances", "save_instance_masks"]

_GOLDEN = 0.618033988749895


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour for a track id: hues step by the golden ratio, so
    consecutive ids are far apart on the colour wheel and every id keeps its colour."""
    hue = (0.1 + track_id * _GOLDEN) % 1.0
    saturation = 0.85 if track_id % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` (bool [H, W]) with a 4-neighbour outside the mask."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def draw_tracked_instances(frame: np.ndarray, instances: TrackedInstances, name_of: Callable[[int], str],
                           score_threshold: float = 0.0, alpha: float = 0.45) -> np.ndarray:
    """Overlay one frame's tracked instances.

    Args:
        frame: H×W×3 uint8 RGB.
        instances: the frame's instances (``masks`` bool [N, H, W] or None, ``boxes`` float32 [N, 4],
            ``scores``, ``labels``, ``track_ids``).
        name_of: label (0-based) -> category name.
        score_threshold: instances scoring below it are not drawn.
        alpha: mask opacity.

    Returns:
        A new H×W×3 uint8 RGB image.
    """
    keep = (instances.scores >= score_threshold).nonzero().flatten()
    # Draw low scores first so the most confident instances end up on top.
    keep = keep[instances.scores[keep].argsort()]
    out = frame.astype(np.float32)
    masks = instances.masks[keep].numpy() if instances.masks is not None else None
    colors = [np.array(track_color(int(t)), np.float32) for t in instances.track_ids[keep].tolist()]
    if masks is not None:
        for mask, color in zip(masks, colors):
            out[mask] = out[mask] * (1.0 - alpha) + color * alpha
        for mask, color in zip(masks, colors):
            out[_outline(mask)] = color
    image = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    font = _font(max(11, min(h, w) // 30))
    line = max(1, min(h, w) // 240 + 1)
    for j, color in zip(keep.tolist(), colors):
        rgb = tuple(int(c) for c in color)
        x1, y1, x2, y2 = instances.boxes[j].tolist()
        draw.rectangle([x1, y1, x2, y2], outline=rgb, width=line)
        text = f"{name_of(int(instances.labels[j]))} #{int(instances.track_ids[j])} {float(instances.scores[j]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        tx = min(max(0.0, x1), max(0.0, w - tw - 4))
        ty = y1 - th - 4 if y1 - th - 4 >= 0 else min(y1 + line, h - th - 4)
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=rgb)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
                  font=font)
    return np.asarray(image)


def save_instance_masks(folder: Union[str, Path], frame_index: int, instances: TrackedInstances,
                        score_threshold: float = 0.0) -> int:
    """Write each instance's mask as ``folder/<track id>/<frame index:06d>.png`` (0/255, mode L).

    Returns:
        The number of PNGs written.
    """
    if instances.masks is None:
        return 0
    written = 0
    for j in (instances.scores >= score_threshold).nonzero().flatten().tolist():
        track_dir = Path(folder) / str(int(instances.track_ids[j]))
        track_dir.mkdir(parents=True, exist_ok=True)
        mask = instances.masks[j].numpy().astype(np.uint8) * 255
        Image.fromarray(mask, mode="L").save(track_dir / f"{frame_index:06d}.png")
        written += 1
    return written
