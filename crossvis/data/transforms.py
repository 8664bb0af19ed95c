"""Clip-consistent geometric and photometric transforms for frame samples.

A *clip* is a list of frame samples of one video (a training pair is a clip of 2). Every transform
draws its random parameters **once per clip** from the ``torch.Generator`` it is given and applies
them to every frame, so the frames of a pair share one scale and one flip decision.

Frame samples follow ``docs/contracts.md``::

    {"image": uint8 [3,H,W], "instances": {"boxes": float32 [N,4], "labels": int64 [N],
     "masks": uint8 [N,H,W], "ids": int64 [N]}, "orig_size": (h, w), "video_id", "frame_index",
     "file_name"}

After every transform the instances whose mask became empty are dropped (from boxes, labels,
masks and ids alike) and the boxes are recomputed as the tight box of each mask.
Box convention: ``(x1, y1, x2, y2)`` with exclusive ends, i.e. a mask whose pixels span columns
``a..b`` has ``x1 = a`` and ``x2 = b + 1`` (the COCO ``[x, y, w, h]`` box, converted to xyxy).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Optional, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

__all__ = ["ClipTransform", "Compose", "ResizeShortestEdge", "RandomHorizontalFlip", "RandomRotation", "RandomCrop",
           "ColorJitter", "rotate_hue", "mask_boxes", "finalize_instances"]

FrameSample = dict[str, Any]
ClipTransform = Callable[[list[FrameSample], Optional[torch.Generator]], list[FrameSample]]


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks: uint8/bool [N,H,W] -> float32 [N,4] xyxy, exclusive ends.

    Every mask must be non-empty.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    # the first/last occupied row and column of each mask, all masks at once (torchvision's
    # masks_to_boxes loops over the masks in Python, which dominated data loading)
    rows = masks.bool().any(dim=2).to(torch.uint8)  # [N, H]
    cols = masks.bool().any(dim=1).to(torch.uint8)  # [N, W]
    height, width = rows.shape[1], cols.shape[1]
    x0, y0 = cols.argmax(dim=1), rows.argmax(dim=1)  # argmax returns the first maximal index
    x1, y1 = width - cols.flip(1).argmax(dim=1), height - rows.flip(1).argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def finalize_instances(instances: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop instances whose mask is empty and recompute every box as its mask's tight box."""
    masks = instances["masks"]
    keep = masks.flatten(1).bool().any(dim=1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
    out = dict(instances) if bool(keep.all()) else {k: v[keep] for k, v in instances.items()}
    out["boxes"] = mask_boxes(out["masks"])
    return out


def _with(sample: FrameSample, image: Tensor, masks: Tensor) -> FrameSample:
    instances = dict(sample["instances"], masks=masks)
    return dict(sample, image=image, instances=finalize_instances(instances))


class Compose:
    """Apply clip transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[ClipTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        for t in self.transforms:
            clip = t(clip, generator)
        return clip

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ResizeShortestEdge:
    """Resize so the short side equals ``min_size`` and the long side is at most ``max_size``.

    Args:
        min_size: the target short side, or a sequence from which one is chosen uniformly per clip
            (detectron2's "choice" sampling; the official CrossVIS recipe uses ``(360,)``).
        max_size: cap on the long side after resizing (640 in the official recipe).

    Images are resized bilinearly (antialiased) and stay uint8 [3,H',W']; masks use nearest
    neighbour. The new size is ``round(h * s), round(w * s)`` with one scale ``s`` per frame.
    """

    def __init__(self, min_size: int | Sequence[int], max_size: int = sys.maxsize) -> None:
        sizes = [min_size] if isinstance(min_size, int) else list(min_size)
        if not sizes or any(int(s) <= 0 for s in sizes) or max_size <= 0:
            raise ValueError(f"ResizeShortestEdge needs positive sizes, got min_size={min_size!r}, "
                             f"max_size={max_size!r}")
        self.min_sizes = [int(s) for s in sizes]
        self.max_size = int(max_size)

    def output_size(self, height: int, width: int, short: int) -> tuple[int, int]:
        """The (H', W') a (height, width) frame is resized to for short side ``short``."""
        scale = short / min(height, width)
        if max(height, width) * scale > self.max_size:
            scale = self.max_size / max(height, width)
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        pick = int(torch.randint(len(self.min_sizes), (1,), generator=generator)) if len(self.min_sizes) > 1 else 0
        short = self.min_sizes[pick]
        out = []
        for sample in clip:
            image = sample["image"]
            size = list(self.output_size(image.shape[-2], image.shape[-1], short))
            image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            masks = sample["instances"]["masks"]
            if masks.shape[0]:
                masks = TF.resize(masks, size, interpolation=InterpolationMode.NEAREST_EXACT)
            else:
                masks = masks.new_zeros((0, *size))
            out.append(_with(sample, image, masks))
        return out

    def __repr__(self) -> str:
        return f"ResizeShortestEdge(min_size={self.min_sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror every frame of a clip left-right with probability ``p`` (one decision per clip)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip needs 0 <= p <= 1, got {p}")
        self.p = float(p)

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return clip
        return [_with(s, s["image"].flip(-1), s["instances"]["masks"].flip(-1)) for s in clip]

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomRotation:
    """Rotate every frame of a clip by one random angle (one draw per clip).

    Args:
        turns: how many right-angle orientations to draw from uniformly: 1 = none, 2 = 0° or
            180° (the frame keeps its shape), 4 = 0°, 90°, 180° or 270° (height and width swap
            for a quarter turn, so a batch of mixed orientations pads to a square). Exact.
        degrees: then rotate by an angle drawn uniformly from ``[-degrees, degrees]`` about the
            centre, keeping the frame size: bilinear for the image, nearest for the masks, the
            uncovered corners filled with the frame's mean colour. 0 = no free rotation.
        p: probability of rotating at all.

    For categories that do not depend on orientation (shapes, most objects seen from above);
    instances rotated out of the frame are dropped (see the module docstring).
    """

    def __init__(self, turns: int = 2, degrees: float = 0.0, p: float = 0.5) -> None:
        if turns not in (1, 2, 4) or not 0.0 <= p <= 1.0 or not 0.0 <= degrees <= 180.0:
            raise ValueError(f"RandomRotation needs turns in (1, 2, 4), 0 <= p <= 1 and 0 <= degrees <= 180, "
                             f"got turns={turns!r}, p={p}, degrees={degrees}")
        self.turns, self.degrees, self.p = int(turns), float(degrees), float(p)

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return clip
        quarter = (4 // self.turns) * int(torch.randint(self.turns, (1,), generator=generator)) if self.turns > 1 else 0
        angle = _uniform(generator, -self.degrees, self.degrees) if self.degrees > 0 else 0.0
        out = []
        for sample in clip:
            image, masks = sample["image"], sample["instances"]["masks"]
            if quarter:
                image, masks = image.rot90(quarter, (-2, -1)), masks.rot90(quarter, (-2, -1))
            if angle:
                fill = [float(v) for v in image.float().mean(dim=(-2, -1))]
                image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=fill)
                if masks.shape[0]:
                    masks = TF.rotate(masks, angle, interpolation=InterpolationMode.NEAREST, fill=[0.0])
            out.append(_with(sample, image.contiguous(), masks.contiguous()))
        return out

    def __repr__(self) -> str:
        return f"RandomRotation(turns={self.turns}, degrees={self.degrees}, p={self.p})"


def _uniform(generator: Optional[torch.Generator], low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class RandomCrop:
    """Crop one random window, the same for every frame of a clip (detectron2's "relative_range").

    Args:
        min_scale: the window's height and width are each drawn uniformly from
            ``[min_scale, 1]`` times the frame's (independently, so the aspect ratio varies too).
        p: probability of cropping at all (one decision per clip).
        min_keep: a window is redrawn (up to 10 tries, then the frame is left uncropped) unless
            at least this fraction of the anchor frame's instance pixels stay inside it, so a crop
            rarely deletes every object.

    Instances cut out of the window are dropped (see the module docstring); the window's offset
    is drawn in the frame's own pixels, so frames of one size get the identical window.
    """

    def __init__(self, min_scale: float = 0.6, p: float = 0.5, min_keep: float = 0.3) -> None:
        if not 0.0 < min_scale <= 1.0 or not 0.0 <= p <= 1.0 or not 0.0 <= min_keep <= 1.0:
            raise ValueError(f"RandomCrop needs 0 < min_scale <= 1, 0 <= p <= 1, 0 <= min_keep <= 1; got "
                             f"min_scale={min_scale}, p={p}, min_keep={min_keep}")
        self.min_scale, self.p, self.min_keep = float(min_scale), float(p), float(min_keep)

    def window(self, height: int, width: int, generator: Optional[torch.Generator]) -> tuple[int, int, int, int]:
        """A random ``(top, left, crop_height, crop_width)`` inside a ``height``×``width`` frame."""
        ch = max(1, int(round(height * _uniform(generator, self.min_scale, 1.0))))
        cw = max(1, int(round(width * _uniform(generator, self.min_scale, 1.0))))
        top = int(torch.randint(height - ch + 1, (1,), generator=generator))
        left = int(torch.randint(width - cw + 1, (1,), generator=generator))
        return top, left, ch, cw

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return clip
        height, width = clip[0]["image"].shape[-2:]
        masks = clip[0]["instances"]["masks"]
        total = float(masks.sum()) if masks.shape[0] else 0.0
        for _ in range(10):
            top, left, ch, cw = self.window(height, width, generator)
            kept = float(masks[:, top:top + ch, left:left + cw].sum()) if masks.shape[0] else 0.0
            if total == 0.0 or kept >= self.min_keep * total:
                break
        else:
            return clip
        out = []
        for sample in clip:
            h, w = sample["image"].shape[-2:]
            t, l = min(top, max(h - ch, 0)), min(left, max(w - cw, 0))
            out.append(_with(sample, sample["image"][:, t:t + ch, l:l + cw].contiguous(),
                             sample["instances"]["masks"][:, t:t + ch, l:l + cw].contiguous()))
        return out

    def __repr__(self) -> str:
        return f"RandomCrop(min_scale={self.min_scale}, p={self.p}, min_keep={self.min_keep})"


# RGB -> YIQ (NTSC 1953 coefficients) and its inverse
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rotate_hue(image: Tensor, shift: float) -> Tensor:
    """Shift the hue of a uint8 [3, H, W] RGB image by ``shift`` turns of the colour circle.

    The chroma plane (I, Q) of YIQ is rotated by ``-2 * pi * shift`` (the direction of
    torchvision's ``adjust_hue``: red turns towards yellow for a positive shift); luma is kept.
    Returns uint8 [3, H, W]. An approximation of an HSV hue shift, but linear, hence cheap.
    """
    if shift == 0.0:
        return image
    angle = -2.0 * math.pi * shift
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    matrix = _YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ
    flat = matrix @ image.reshape(3, -1).float()
    return flat.round_().clamp_(0, 255).to(torch.uint8).reshape(image.shape)


class ColorJitter:
    """Photometric jitter with one set of factors per clip (masks and boxes are untouched).

    Args:
        brightness, contrast, saturation: each factor is drawn from ``[1 - x, 1 + x]``.
        hue: the hue shift is drawn from ``[-hue, hue]`` (a fraction of the colour circle, <= 0.5).
        p: probability of jittering at all (one decision per clip).

    The four adjustments run in a random order drawn once per clip, as in torchvision's
    ``ColorJitter``; images stay uint8 [3, H, W]. The hue shift is :func:`rotate_hue` (a rotation
    in YIQ space, about 30x faster than torchvision's HSV round trip on CPU).
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.05, p: float = 0.8) -> None:
        if min(brightness, contrast, saturation, hue) < 0 or max(brightness, contrast, saturation) >= 1 \
                or hue > 0.5 or not 0.0 <= p <= 1.0:
            raise ValueError(f"ColorJitter needs 0 <= brightness/contrast/saturation < 1, 0 <= hue <= 0.5 and "
                             f"0 <= p <= 1; got {brightness}, {contrast}, {saturation}, {hue}, p={p}")
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.hue, self.p = float(hue), float(p)

    def draw(self, generator: Optional[torch.Generator]) -> list[tuple[Callable[[Tensor, float], Tensor], float]]:
        """The clip's adjustments: ``[(function, factor), ...]`` in the order they apply."""
        steps = [(TF.adjust_brightness, _uniform(generator, 1 - self.brightness, 1 + self.brightness)),
                 (TF.adjust_contrast, _uniform(generator, 1 - self.contrast, 1 + self.contrast)),
                 (TF.adjust_saturation, _uniform(generator, 1 - self.saturation, 1 + self.saturation)),
                 (rotate_hue, _uniform(generator, -self.hue, self.hue))]
        order = torch.randperm(4, generator=generator).tolist()
        return [steps[i] for i in order]

    def __call__(self, clip: list[FrameSample], generator: Optional[torch.Generator] = None) -> list[FrameSample]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return clip
        steps = self.draw(generator)
        out = []
        for sample in clip:
            image = sample["image"]
            for fn, factor in steps:
                image = fn(image, factor)
            out.append(dict(sample, image=image))
        return out

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, "
                f"hue={self.hue}, p={self.p})")
