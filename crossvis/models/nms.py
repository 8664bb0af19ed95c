"""Class-wise non-maximum suppression: torchvision's ``batched_nms``, with fewer small ops per class.

For many boxes on the CPU, ``torchvision.ops.batched_nms`` runs ``nms`` class by class
(``_batched_nms_vanilla``: per class a comparison over all boxes, a ``where`` and two gathers
before the ``nms`` call). :func:`batched_nms` sorts the boxes by class once (stably, so each class
keeps its boxes in their original order) and calls ``nms`` on contiguous slices: every ``nms``
call sees exactly the boxes and scores, in the same order, that torchvision's loop gives it, and
the kept indices are ordered by the same final sort, so the result is identical. Where torchvision
uses its coordinate-offset trick instead (few boxes, or not on the CPU), it is called as is.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms as _torchvision_batched_nms
from torchvision.ops import nms

__all__ = ["batched_nms"]

#: torchvision runs NMS class by class above this many box coordinates on the CPU (``boxes.numel()``).
VANILLA_ABOVE = 4000


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)`` (see the module docstring).

    Args:
        boxes: float [N, 4] ``(x1, y1, x2, y2)``; scores: float [N]; idxs: int [N] class of each box.

    Returns:
        int64 [K], the kept boxes in decreasing order of score.
    """
    if boxes.device.type != "cpu" or boxes.numel() <= VANILLA_ABOVE or torch.jit.is_tracing():
        return _torchvision_batched_nms(boxes, scores, idxs, iou_threshold)
    order = torch.argsort(idxs, stable=True)
    counts = torch.unique_consecutive(idxs[order], return_counts=True)[1].tolist()
    sorted_boxes, sorted_scores = boxes[order], scores[order]
    kept, start = [], 0
    for count in counts:
        kept.append(nms(sorted_boxes[start:start + count], sorted_scores[start:start + count], iou_threshold) + start)
        start += count
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    keep_mask[order[torch.cat(kept)]] = True
    keep_indices = torch.where(keep_mask)[0]
    return keep_indices[scores[keep_indices].sort(descending=True)[1]]
