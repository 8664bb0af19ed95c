"""Small data structures shared by every crossvis package.

Only the standard library and torch are imported here, so any component package may depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional, Protocol

import torch
from torch import Tensor

from crossvis.errors import CrossVISError

__all__ = ["ShapeSpec", "FrameDetections", "PendingMasks", "TrackedInstances", "CrossVISError"]


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one feature map produced by a backbone or neck.

    Args:
        channels: number of channels C of the map.
        stride: the map's stride relative to the network input (a power of two).
    """

    channels: int
    stride: int


class PendingMasks(Protocol):
    """Masks of N detections that are computed only when they are read (see :class:`FrameDetections`).

    A model's post-processor returns them so that masks the tracker drops are never pasted at
    frame size (the largest per-frame cost after the network).
    """

    def __len__(self) -> int: ...

    def select(self, index: Tensor) -> "PendingMasks":
        """The pending masks of the detections at ``index`` (bool mask or int64 indices)."""

    def to(self, device: torch.device | str) -> "PendingMasks":
        """The same pending masks computed on ``device``."""

    def render(self) -> Tensor:
        """bool [N, H, W] masks at the frame size."""

    def encode(self) -> Optional[list[dict]]:
        """COCO RLE dicts ``{"size": [H, W], "counts": str}`` of the masks, made without rendering
        them, or None where this implementation cannot (callers then render and encode). Optional:
        callers look it up with ``getattr``."""


@dataclass
class FrameDetections:
    """Detections of one frame at the frame's original resolution.

    Attributes:
        boxes: float32 [N, 4], (x1, y1, x2, y2) in original-frame pixels.
        scores: float32 [N], detection confidence in (0, 1].
        labels: int64 [N], 0-based contiguous category index.
        masks: bool [N, H, W] binary masks at the original frame size, or None. With
            ``pending_masks`` set they are computed on first access (and kept): ``select`` and
            ``to`` carry the pending masks along, so ``det.select(kept).masks`` computes the
            masks of the kept detections only.
        embeddings: float32 [N, D] instance embeddings for association, or None.
        image_size: (H, W) of the original frame.
        mask_logits: optional float32 [N, h, w] low-resolution mask probabilities (model specific).
        pending_masks: a :class:`PendingMasks` that computes ``masks`` when they are first read,
            or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    image_size: tuple[int, int]
    masks: Optional[Tensor] = None
    embeddings: Optional[Tensor] = None
    mask_logits: Optional[Tensor] = None
    pending_masks: Optional[PendingMasks] = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def _raw_values(self) -> dict[str, Any]:
        """The field values without computing pending masks."""
        return {f.name: self.__dict__.get("_masks") if f.name == "masks" else getattr(self, f.name)
                for f in fields(self)}

    def select(self, index: Tensor) -> "FrameDetections":
        """Return the detections picked by ``index`` (bool mask or int64 indices)."""
        values = {}
        for name, v in self._raw_values().items():
            if isinstance(v, Tensor):
                v = v[index]
            elif name == "pending_masks" and v is not None:
                v = v.select(index)
            values[name] = v
        return type(self)(**values)

    def to(self, device: torch.device | str) -> "FrameDetections":
        values = {name: v.to(device) if isinstance(v, Tensor) or (name == "pending_masks" and v is not None) else v
                  for name, v in self._raw_values().items()}
        return type(self)(**values)

    @classmethod
    def empty(cls, image_size: tuple[int, int], embed_dim: int | None = None,
              with_masks: bool = True) -> "FrameDetections":
        """An empty detection set for a frame of size ``image_size``."""
        h, w = image_size
        return cls(
            boxes=torch.zeros((0, 4)),
            scores=torch.zeros((0,)),
            labels=torch.zeros((0,), dtype=torch.int64),
            image_size=(int(h), int(w)),
            masks=torch.zeros((0, h, w), dtype=torch.bool) if with_masks else None,
            embeddings=torch.zeros((0, embed_dim)) if embed_dim else None,
        )


def _read_masks(self: FrameDetections) -> Optional[Tensor]:
    masks = self.__dict__.get("_masks")
    pending = self.__dict__.get("pending_masks")
    if masks is None and pending is not None:
        with torch.inference_mode():
            masks = pending.render()
        self.__dict__["_masks"], self.__dict__["pending_masks"] = masks, None
    return masks


def _write_masks(self: FrameDetections, masks: Optional[Tensor]) -> None:
    # an assigned value (None included) replaces pending masks; the constructor assigns
    # ``masks`` before ``pending_masks``, so constructing with both keeps the pending ones
    self.__dict__["_masks"] = masks
    self.__dict__["pending_masks"] = None


# ``masks`` is a dataclass field (constructor argument, ``fields()``) read through a property
# that computes pending masks on first access.
FrameDetections.masks = property(  # type: ignore[assignment]
    _read_masks, _write_masks, doc="bool [N, H, W] masks, or None")


@dataclass
class TrackedInstances(FrameDetections):
    """`FrameDetections` of one frame plus the track id of every detection.

    Attributes:
        track_ids: int64 [N], the id of the track each detection was assigned to.
    """

    track_ids: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.int64))

    @classmethod
    def from_detections(cls, det: FrameDetections, track_ids: Tensor) -> "TrackedInstances":
        values = {name: v for name, v in det._raw_values().items() if name in _DETECTION_FIELDS}
        return cls(**values, track_ids=track_ids)


_DETECTION_FIELDS = frozenset(f.name for f in fields(FrameDetections))
