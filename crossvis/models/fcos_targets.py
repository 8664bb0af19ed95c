"""FCOS target assignment with CondInst's mask-centre sampling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["FCOSTargets", "FCOSTargetAssigner", "level_size_ranges", "mask_centers"]

INF = 1e8


def level_size_ranges(sizes_of_interest: Sequence[float], num_levels: int) -> list[tuple[float, float]]:
    """[−1, s0], [s0, s1], …, [s_last, 1e8] — one (inclusive) range of max(l,t,r,b) per level."""
    if len(sizes_of_interest) != num_levels - 1:
        raise ValueError(f"{num_levels} levels need {num_levels - 1} sizes_of_interest, got {list(sizes_of_interest)}")
    bounds = [-1.0, *map(float, sizes_of_interest), INF]
    return [(bounds[i], bounds[i + 1]) for i in range(num_levels)]


def mask_centers(masks: Tensor) -> Tensor:
    """Centres of mass (x, y) of binary masks: uint8/bool/float [N, H, W] → float32 [N, 2].

    A pixel (i, j) contributes the coordinate (j, i); empty masks give (0, 0).
    """
    masks = masks.float()
    h, w = masks.shape[-2:]
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    m00 = masks.sum(dim=(1, 2)).clamp(min=1e-6)
    cx = (masks.sum(dim=1) * xs).sum(dim=1) / m00
    cy = (masks.sum(dim=2) * ys).sum(dim=1) / m00
    return torch.stack((cx, cy), dim=1)


@dataclass
class FCOSTargets:
    """Per-location targets of one image, locations concatenated over levels (fine → coarse).

    Attributes:
        labels: int64 [L] class index, ``num_classes`` for background.
        reg_targets: float32 [L, 4] (l, t, r, b) divided by the location's level stride.
        gt_inds: int64 [L] index of the assigned ground-truth instance in this image (−1 if none).
    """

    labels: Tensor
    reg_targets: Tensor
    gt_inds: Tensor


class FCOSTargetAssigner:
    """Assigns each location of each level to at most one ground-truth instance.

    A location is a candidate for a box when (a) max(l, t, r, b) lies in its level's size range
    (both ends inclusive) and (b) it lies strictly inside the square of half-side
    ``radius·stride`` around the instance's mask centre of mass, clipped to the box (without
    masks the box centre is used). Among candidates the box of smallest area wins (the first
    one on ties).

    Args:
        strides: stride of every level, fine → coarse.
        sizes_of_interest: the L − 1 boundaries between level size ranges.
        num_classes: C; background locations get label C.
        center_sampling_radius: the radius in strides (official 1.5).
    """

    def __init__(self, strides: Sequence[int], sizes_of_interest: Sequence[float], num_classes: int,
                 center_sampling_radius: float = 1.5) -> None:
        self.strides = [int(s) for s in strides]
        self.size_ranges = level_size_ranges(sizes_of_interest, len(self.strides))
        self.num_classes = int(num_classes)
        self.radius = float(center_sampling_radius)

    def __call__(self, locations_per_level: Sequence[Tensor], boxes: Tensor, labels: Tensor,
                 masks: Tensor | None = None) -> FCOSTargets:
        """Targets for one image.

        Args:
            locations_per_level: float [L_l, 2] (x, y) per level.
            boxes: float [G, 4] ground-truth xyxy boxes.
            labels: int64 [G] ground-truth classes.
            masks: optional [G, H, W] binary masks in input-image coordinates (for the centres).
        """
        locations = torch.cat(list(locations_per_level), dim=0)
        device = locations.device
        num_loc = locations.shape[0]
        level_of = torch.cat([torch.full((len(l),), i, dtype=torch.int64, device=device)
                              for i, l in enumerate(locations_per_level)])
        strides = torch.tensor(self.strides, dtype=torch.float32, device=device)[level_of]
        if boxes.shape[0] == 0:
            return FCOSTargets(
                labels=torch.full((num_loc,), self.num_classes, dtype=torch.int64, device=device),
                reg_targets=torch.zeros((num_loc, 4), device=device),
                gt_inds=torch.full((num_loc,), -1, dtype=torch.int64, device=device))

        xs, ys = locations[:, 0:1], locations[:, 1:2]  # [L, 1]
        ltrb = torch.stack((xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys), dim=2)

        if masks is not None:
            centers = mask_centers(masks)
        else:
            centers = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), dim=1)
        r = (strides * self.radius)[:, None]  # [L, 1]
        x0 = torch.maximum(centers[:, 0] - r, boxes[:, 0])
        y0 = torch.maximum(centers[:, 1] - r, boxes[:, 1])
        x1 = torch.minimum(centers[:, 0] + r, boxes[:, 2])
        y1 = torch.minimum(centers[:, 1] + r, boxes[:, 3])
        in_center = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=2).min(dim=2).values > 0

        ranges = torch.tensor(self.size_ranges, dtype=torch.float32, device=device)[level_of]
        max_reg = ltrb.max(dim=2).values
        in_range = (max_reg >= ranges[:, 0:1]) & (max_reg <= ranges[:, 1:2])

        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(num_loc, -1).clone()
        areas[~(in_center & in_range)] = INF
        min_area, gt_inds = areas.min(dim=1)
        background = min_area == INF

        loc_labels = labels[gt_inds].clone()
        loc_labels[background] = self.num_classes
        reg = ltrb[torch.arange(num_loc, device=device), gt_inds] / strides[:, None]
        gt_inds = torch.where(background, torch.full_like(gt_inds, -1), gt_inds)
        return FCOSTargets(labels=loc_labels, reg_targets=reg, gt_inds=gt_inds)
