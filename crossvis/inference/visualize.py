"""Drawing tracked instances: mask blend, outline, box and a "name #id  score" label per track,
placed so labels do not cover each other; and a contact sheet (frames × time, one stable colour
and id per track, with a track timeline) of a whole clip."""
from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crossvis.structures import TrackedInstances

__all__ = ["track_color", "draw_tracked_instances", "save_instance_masks", "label_text", "place_labels",
           "ContactSheet"]

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
    boxes = [instances.boxes[j].tolist() for j in keep.tolist()]
    texts = [label_text(name_of(int(instances.labels[j])), int(instances.track_ids[j]), float(instances.scores[j]))
             for j in keep.tolist()]
    for box, color in zip(boxes, colors):
        draw.rectangle(box, outline=tuple(int(c) for c in color), width=line)
    # most confident first, so they get the best spots
    sizes = [_text_size(draw, t, font) for t in texts]
    order = list(range(len(texts)))[::-1]
    spots = place_labels([boxes[i] for i in order], [sizes[i] for i in order], (h, w))
    for i, (tx, ty) in zip(order, spots):
        rgb = tuple(int(c) for c in colors[i])
        tw, th = sizes[i]
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=rgb)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        _draw_label(draw, (tx, ty), texts[i], font, (0, 0, 0) if luminance > 140 else (255, 255, 255))
    return np.asarray(image)


_PAD = 2  # pixels around a label's text


def label_text(name: str, track_id: int, score: float) -> tuple[str, str, str]:
    """The label pieces of one instance: ``(name, "#id", "0.89")``; drawn with a clear gap between
    them (see :func:`draw_tracked_instances`), they read ``name  #0  0.89``."""
    return name, f"#{track_id}", f"{score:.2f}"


def _gap(font: ImageFont.ImageFont) -> int:
    return max(4, int(round(getattr(font, "size", 11) * 0.45)))


def _text_size(draw: ImageDraw.ImageDraw, pieces: tuple[str, ...], font: ImageFont.ImageFont) -> tuple[int, int]:
    """(width, height) of a label box: the pieces, a gap between them and the padding."""
    widths, heights = [], []
    for piece in pieces:
        left, top, right, bottom = draw.textbbox((0, 0), piece, font=font)
        widths.append(right - left)
        heights.append(bottom - top)
    _, top, _, bottom = draw.textbbox((0, 0), "#0.9Ag", font=font)
    return sum(widths) + _gap(font) * (len(pieces) - 1) + 2 * _PAD, max(bottom - top, *heights) + 2 * _PAD


def _draw_label(draw: ImageDraw.ImageDraw, origin: tuple[float, float], pieces: tuple[str, ...],
                font: ImageFont.ImageFont, fill: tuple[int, int, int]) -> None:
    _, top, _, _ = draw.textbbox((0, 0), "#0.9Ag", font=font)
    x, y = origin[0] + _PAD, origin[1] + _PAD - top
    for piece in pieces:
        left, _, right, _ = draw.textbbox((0, 0), piece, font=font)
        draw.text((x - left, y), piece, fill=fill, font=font)
        x += right - left + _gap(font)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: list[list[float]], sizes: list[tuple[int, int]],
                 image_size: tuple[int, int]) -> list[tuple[float, float]]:
    """Top-left corners for labels of ``sizes`` (w, h) attached to ``boxes`` (x1, y1, x2, y2), in order.

    Each label tries, in turn: above its box's top-left corner, inside the box's top-left corner,
    below the box, above the top-right corner; every spot is clamped into the image. It takes the
    first spot that overlaps no label placed before it; when all collide, it slides down (then
    up) from the first spot in steps of its own height to the nearest free row, and in a frame
    too crowded for that it takes the spot covering the least label area. Labels therefore never
    pile up on each other as long as the image has room.
    """
    height, width = image_size
    placed: list[tuple[float, float, float, float]] = []
    spots = []
    for (x1, y1, x2, y2), (tw, th) in zip(boxes, sizes):
        def clamp(x: float, y: float) -> tuple[float, float]:
            return min(max(0.0, x), max(0.0, width - tw)), min(max(0.0, y), max(0.0, height - th))

        candidates = [clamp(x1, y1 - th), clamp(x1, y1), clamp(x1, y2), clamp(x2 - tw, y1 - th)]
        first = candidates[0]
        for step in range(1, 2 * (height // max(th, 1)) + 2):
            offset = (step // 2) * th * (1 if step % 2 else -1)
            candidates.append(clamp(first[0], first[1] + offset))
        def covered(c: tuple[float, float]) -> float:
            return sum(max(0.0, min(c[0] + tw, p[2]) - max(c[0], p[0])) * max(0.0, min(c[1] + th, p[3]) - max(c[1], p[1]))
                       for p in placed)

        # the first free spot; in a crowded frame, the spot that hides the least of the others
        spot = next((c for c in candidates if covered(c) == 0.0), None) or min(candidates, key=covered)
        placed.append((spot[0], spot[1], spot[0] + tw, spot[1] + th))
        spots.append(spot)
    return spots


class ContactSheet:
    """A one-image summary of a tracked clip: up to ``max_frames`` overlay thumbnails in time order
    (a grid, left to right, top to bottom, each captioned with its frame index), above a track
    timeline (one row per track, in the track's colour, labelled ``#id name``, filled where the
    track is shown).

    Feed it every frame with :meth:`add` (any length: it keeps an evenly spaced subset of the
    thumbnails and only the track ids of the others), then :meth:`save`.

    Args:
        name_of: label (0-based) -> category name.
        max_frames: the most thumbnails on the sheet.
        thumb_width: thumbnail width in pixels (frames are never enlarged).
        columns: thumbnails per row.
    """

    def __init__(self, name_of: Callable[[int], str], max_frames: int = 12, thumb_width: int = 320,
                 columns: int = 4) -> None:
        if max_frames < 1 or thumb_width < 16 or columns < 1:
            raise ValueError("ContactSheet needs max_frames >= 1, thumb_width >= 16 and columns >= 1")
        self.name_of, self.max_frames, self.thumb_width, self.columns = name_of, max_frames, thumb_width, columns
        self.stride = 1
        self.thumbs: dict[int, Image.Image] = {}
        self.tracks: dict[int, set[int]] = {}  # track id -> frame indices where it is shown
        self.labels: dict[int, int] = {}  # track id -> its latest label
        self.num_frames = 0

    def add(self, index: int, overlay: np.ndarray, instances: TrackedInstances, score_threshold: float = 0.0) -> None:
        """Record frame ``index`` (frames in increasing order): its overlay H×W×3 uint8 and instances."""
        self.num_frames = max(self.num_frames, index + 1)
        for j in (instances.scores >= score_threshold).nonzero().flatten().tolist():
            track = int(instances.track_ids[j])
            self.tracks.setdefault(track, set()).add(index)
            self.labels[track] = int(instances.labels[j])
        if index % self.stride:
            return
        image = Image.fromarray(overlay)
        if image.width > self.thumb_width:
            image = image.resize((self.thumb_width, max(1, round(image.height * self.thumb_width / image.width))),
                                 Image.BILINEAR)
        self.thumbs[index] = image
        while len(self.thumbs) > self.max_frames:  # keep every other one: the subset stays evenly spaced
            self.stride *= 2
            self.thumbs = {i: t for i, t in self.thumbs.items() if i % self.stride == 0}

    def render(self, title: str = "") -> Image.Image:
        """The sheet as an RGB image."""
        if not self.thumbs:
            raise ValueError("ContactSheet.render: no frames were added")
        frames = sorted(self.thumbs)
        tw, th = self.thumbs[frames[0]].size
        font = _font(12)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        caption = _text_size(probe, ("t=0",), font)[1]
        columns = min(self.columns, len(frames))
        rows = -(-len(frames) // columns)
        margin = 6
        header = caption + margin if title else 0
        row_h = caption + 4
        tracks = sorted(self.tracks)
        timeline_top = header + margin + rows * (th + caption + margin)
        width = margin + columns * (tw + margin)
        height = timeline_top + caption + margin + len(tracks) * row_h + margin
        sheet = Image.new("RGB", (width, height), (24, 24, 24))
        draw = ImageDraw.Draw(sheet)
        if title:
            _draw_label(draw, (margin, margin // 2), (title,), font, (235, 235, 235))
        for k, index in enumerate(frames):
            x = margin + (k % columns) * (tw + margin)
            y = header + margin + (k // columns) * (th + caption + margin)
            _draw_label(draw, (x, y), (f"t={index}",), font, (235, 235, 235))
            sheet.paste(self.thumbs[index], (x, y + caption))
        # timeline: one row per track, one cell per frame
        _draw_label(draw, (margin, timeline_top), (f"tracks over {self.num_frames} frames",), font, (235, 235, 235))
        label_w = max([_text_size(probe, (f"#{t}", self.name_of(self.labels[t])), font)[0] for t in tracks] + [0])
        left, right = margin + label_w + margin, width - margin
        cell = (right - left) / max(self.num_frames, 1)
        for r, track in enumerate(tracks):
            y = timeline_top + caption + margin + r * row_h
            rgb = track_color(track)
            _draw_label(draw, (margin, y), (f"#{track}", self.name_of(self.labels[track])), font, rgb)
            draw.rectangle([left, y + 1, right, y + row_h - 2], outline=(70, 70, 70))
            for f in self.tracks[track]:
                draw.rectangle([left + f * cell, y + 2, left + (f + 1) * cell - 1, y + row_h - 3], fill=rgb)
        return sheet

    def save(self, path: Union[str, Path], title: str = "") -> Path:
        """Write the sheet as a PNG; returns the path."""
        from crossvis.atomic import atomic_write_bytes
        import io

        buffer = io.BytesIO()
        self.render(title).save(buffer, format="PNG")
        atomic_write_bytes(Path(path), buffer.getvalue())
        return Path(path)


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
