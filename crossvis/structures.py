"""Small data structures shared by every crossvis package.

Only the standard library and torch are imported here, so any component package may depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import torch
from torch import Tensor

from crossvis.errors import CrossVISError

__all__ = ["ShapeSpec", "FrameDetections", "TrackedInstances", "CrossVISError"]


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one feature map produced by a backbone or neck.

    Args:
        channels: number of channels C of the map.
        stride: the map's stride relative to the network input (a power of two).
    """

    channels: int
    stride: int


@dataclass
class FrameDetections:
    """Detections of one frame at the frame's original resolution.

    Attributes:
        boxes: float32 [N, 4], (x1, y1, x2, y2) in original-frame pixels.
        scores: float32 [N], detection confidence in (0, 1].
        labels: int64 [N], 0-based contiguous category index.
        masks: bool [N, H, W] binary masks at the original frame size, or None.
        embeddings: float32 [N, D] instance embeddings for association, or None.
        image_size: (H, W) of the original frame.
        mask_logits: optional float32 [N, h, w] low-resolution mask probabilities (model specific).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    image_size: tuple[int, int]
    masks: Optional[Tensor] = None
    embeddings: Optional[Tensor] = None
    mask_logits: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: Tensor) -> "FrameDetections":
        """Return the detections picked by ``index`` (bool mask or int64 indices)."""
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v[index] if isinstance(v, Tensor) else v
        return type(self)(**values)

    def to(self, device: torch.device | str) -> "FrameDetections":
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.to(device) if isinstance(v, Tensor) else v
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


@dataclass
class TrackedInstances(FrameDetections):
    """`FrameDetections` of one frame plus the track id of every detection.

    Attributes:
        track_ids: int64 [N], the id of the track each detection was assigned to.
    """

    track_ids: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.int64))

    @classmethod
    def from_detections(cls, det: FrameDetections, track_ids: Tensor) -> "TrackedInstances":
        values = {f.name: getattr(det, f.name) for f in fields(FrameDetections)}
        return cls(**values, track_ids=track_ids)
