"""Hand-made detections for the tracker tests."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from crossvis.structures import FrameDetections


def frame(boxes: Sequence[Sequence[float]], scores: Sequence[float], labels: Sequence[int],
          embeddings: Optional[Sequence[Sequence[float]]] = None, size: tuple[int, int] = (64, 96),
          masks: Optional[torch.Tensor] = None) -> FrameDetections:
    """FrameDetections from plain lists; masks default to the box rectangles."""
    n = len(scores)
    h, w = size
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(n, 4)
    if masks is None:
        masks = torch.zeros((n, h, w), dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(boxes_t.round().long().tolist()):
            masks[i, max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return FrameDetections(
        boxes=boxes_t,
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
        image_size=(h, w),
        masks=masks,
        embeddings=None if embeddings is None else torch.tensor(embeddings, dtype=torch.float32).reshape(n, -1),
    )


def empty(size: tuple[int, int] = (64, 96), dim: int = 2) -> FrameDetections:
    return FrameDetections.empty(size, embed_dim=dim)
