"""Clip-consistent geometric transforms for frame samples.

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

import sys
from typing import Any, Callable, Optional, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.ops import masks_to_boxes
from torchvision.transforms import InterpolationMode

__all__ = ["ClipTransform", "Compose", "ResizeShortestEdge", "RandomHorizontalFlip", "mask_boxes",
           "finalize_instances"]

FrameSample = dict[str, Any]
ClipTransform = Callable[[list[FrameSample], Optional[torch.Generator]], list[FrameSample]]


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks: uint8/bool [N,H,W] -> float32 [N,4] xyxy, exclusive ends.

    Every mask must be non-empty.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = masks_to_boxes(masks.bool()).float()
    boxes[:, 2:] += 1.0
    return boxes


def finalize_instances(instances: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop instances whose mask is empty and recompute every box as its mask's tight box."""
    masks = instances["masks"]
    keep = masks.flatten(1).bool().any(dim=1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
    out = {k: v[keep] for k, v in instances.items()}
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
