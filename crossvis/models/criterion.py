"""CondInst training losses: FCOS targets + detection losses + the dynamic-mask dice loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.heads.dynamic_mask_head import DynamicMaskHead, grid_locations
from crossvis.losses.dice import dice_loss
from crossvis.losses.fcos import FCOSLoss
from crossvis.models.fcos_targets import FCOSTargetAssigner
from crossvis.models.network import flatten_levels
from crossvis.models.outputs import NetworkOutputs

__all__ = ["FrameTargets", "Assignment", "CondInstCriterion", "gt_masks_at_stride"]


@dataclass
class FrameTargets:
    """Ground truth of a batch of frames in the padded input frame.

    Attributes:
        boxes: per image float32 [G_i, 4] xyxy.
        labels: per image int64 [G_i].
        masks: per image uint8 [G_i, Hp, Wp] (zero-padded bottom/right).
        ids: per image int64 [G_i] identity index, or None.
    """

    boxes: list[Tensor]
    labels: list[Tensor]
    masks: list[Tensor]
    ids: Optional[list[Tensor]] = None

    def offsets(self) -> list[int]:
        """Start of each image's instances in the batch-concatenated instance list."""
        starts, total = [], 0
        for b in self.boxes:
            starts.append(total)
            total += int(b.shape[0])
        return starts


@dataclass
class Assignment:
    """FCOS targets of a batch, flattened image-major over all B·L locations.

    Attributes:
        labels: int64 [B·L], ``num_classes`` for background.
        reg_targets: float32 [B·L, 4] (l, t, r, b) / stride.
        gt_inds: int64 [B·L] index into the batch-concatenated instances, −1 for background.
        im_inds: int64 [B·L] batch item of each location.
        levels: int64 [B·L] FPN level of each location.
        locations: float32 [B·L, 2] (x, y) of each location in input pixels.
        positives: int64 [P] indices of the foreground locations.
    """

    labels: Tensor
    reg_targets: Tensor
    gt_inds: Tensor
    im_inds: Tensor
    levels: Tensor
    locations: Tensor
    positives: Tensor


def gt_masks_at_stride(masks: Tensor, stride: int = 4) -> Tensor:
    """Sample padded full-resolution masks at rows/cols ``stride//2, stride//2 + stride, …``.

    uint8 [G, Hp, Wp] → float32 [G, Hp/stride, Wp/stride] (no interpolation, as CondInst).
    """
    start = stride // 2
    return masks[:, start::stride, start::stride].float()


class CondInstCriterion(nn.Module):
    """Computes the detection losses (``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr`` with
    the default loss) and ``loss_mask``.

    Args:
        num_classes: C.
        strides: stride of each FPN level used by the head.
        sizes_of_interest: L − 1 level size boundaries (official [64, 128, 256, 512]).
        mask_head: the dynamic mask head (shared with the post-processor).
        fcos_loss: the detection loss, called as ``fcos_loss(cls_logits [L, C], bbox_reg [L, 4],
            ctrness [L], labels int64 [L] (C = background), reg_targets [L, 4]) -> dict`` of
            scalar ``loss_*`` tensors over all L locations of the batch; default
            :class:`~crossvis.losses.fcos.FCOSLoss` (focal α 0.25, γ 2).
        mask_feat_stride: stride of the mask-branch features (8).
        center_sampling_radius: FCOS centre-sampling radius in strides (1.5).
        max_proposals: at most this many random positive locations of the batch train the mask
            head (official 500 per forward batch); −1 uses all.
    """

    def __init__(self, num_classes: int, strides: Sequence[int], sizes_of_interest: Sequence[float],
                 mask_head: DynamicMaskHead, *, fcos_loss: Optional[nn.Module] = None, mask_feat_stride: int = 8,
                 center_sampling_radius: float = 1.5, max_proposals: int = 500) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.strides = [int(s) for s in strides]
        self.assigner = FCOSTargetAssigner(self.strides, sizes_of_interest, num_classes, center_sampling_radius)
        self.fcos_loss = fcos_loss if fcos_loss is not None else FCOSLoss()
        self.mask_head = mask_head
        self.mask_feat_stride = int(mask_feat_stride)
        self.max_proposals = int(max_proposals)

    # -- targets ------------------------------------------------------------------------------
    def assign(self, outputs: NetworkOutputs, targets: FrameTargets) -> Assignment:
        """FCOS targets of every location of the batch (see :class:`Assignment`)."""
        maps = outputs.cls_logits
        batch = maps[0].shape[0]
        device = maps[0].device
        locs = [grid_locations(m.shape[-2], m.shape[-1], s, device) for m, s in zip(maps, self.strides)]
        levels = torch.cat([torch.full((len(l),), i, dtype=torch.int64, device=device) for i, l in enumerate(locs)])
        per_image = [self.assigner(locs, targets.boxes[i], targets.labels[i], targets.masks[i]) for i in range(batch)]
        offsets = targets.offsets()
        gt_inds = torch.cat([torch.where(t.gt_inds >= 0, t.gt_inds + off, t.gt_inds)
                             for t, off in zip(per_image, offsets)])
        labels = torch.cat([t.labels for t in per_image])
        num_loc = levels.numel()
        return Assignment(
            labels=labels,
            reg_targets=torch.cat([t.reg_targets for t in per_image]),
            gt_inds=gt_inds,
            im_inds=torch.arange(batch, device=device).repeat_interleave(num_loc),
            levels=levels.repeat(batch),
            locations=torch.cat(locs).repeat(batch, 1),
            positives=torch.nonzero(labels != self.num_classes).squeeze(1),
        )

    def subsample(self, positives: Tensor) -> Tensor:
        """A random subset of at most ``max_proposals`` of ``positives`` (int64 [P] → [≤P])."""
        if 0 <= self.max_proposals < positives.numel():
            keep = torch.randperm(positives.numel(), device=positives.device)[: self.max_proposals]
            return positives[keep]
        return positives

    # -- losses -------------------------------------------------------------------------------
    def detection_losses(self, outputs: NetworkOutputs, assignment: Assignment) -> dict[str, Tensor]:
        """``fcos_loss`` on every location of the batch (levels flattened image-major)."""
        cls_logits = flatten_levels(outputs.cls_logits).reshape(-1, self.num_classes)
        bbox_reg = flatten_levels(outputs.bbox_reg).reshape(-1, 4)
        ctrness = flatten_levels(outputs.ctrness).reshape(-1)
        return self.fcos_loss(cls_logits, bbox_reg, ctrness, assignment.labels, assignment.reg_targets)

    def dynamic_mask_loss(self, params: Tensor, mask_feats: Tensor, im_inds: Tensor, locations: Tensor,
                          levels: Tensor, gt_masks: Tensor) -> Tensor:
        """Mean dice loss of the masks that ``params`` [N, P] draw on ``mask_feats[im_inds]``.

        ``gt_masks``: float [N, Hp/4, Wp/4] the target of each sample. With N = 0 the result is an
        exact zero connected to ``mask_feats`` and ``params``.
        """
        if params.shape[0] == 0:
            return mask_feats.sum() * 0.0 + params.sum() * 0.0
        logits = self.mask_head(mask_feats, self.mask_feat_stride, params, locations, levels, im_inds)
        return dice_loss(logits.sigmoid(), gt_masks).mean()

    def mask_loss(self, outputs: NetworkOutputs, assignment: Assignment, gt_masks: Tensor,
                  samples: Optional[Tensor] = None) -> Tensor:
        """Static CondInst mask loss on ``samples`` (default: a fresh ≤ max_proposals subsample).

        ``gt_masks``: float [G, Hp/4, Wp/4], the batch-concatenated targets at stride 4.
        """
        if samples is None:
            samples = self.subsample(assignment.positives)
        params = flatten_levels(outputs.controller).reshape(-1, self.mask_head.num_params)
        return self.dynamic_mask_loss(params[samples], outputs.mask_feats, assignment.im_inds[samples],
                                      assignment.locations[samples], assignment.levels[samples],
                                      gt_masks[assignment.gt_inds[samples]])

    def forward(self, outputs: NetworkOutputs, targets: FrameTargets) -> dict[str, Tensor]:
        """All CondInst losses of one batch of frames; see the class docstring for the keys."""
        assignment = self.assign(outputs, targets)
        losses = self.detection_losses(outputs, assignment)
        losses["loss_mask"] = self.mask_loss(outputs, assignment, self.stride4_masks(targets, outputs))
        return losses

    def stride4_masks(self, targets: FrameTargets, outputs: NetworkOutputs) -> Tensor:
        """Batch-concatenated GT masks at the mask head's output stride: float [G, Hp/4, Wp/4]."""
        mask_feats = outputs.mask_feats
        h = mask_feats.shape[-2] * self.mask_feat_stride
        w = mask_feats.shape[-1] * self.mask_feat_stride
        stride = self.mask_head.out_stride
        if not targets.masks:
            return mask_feats.new_zeros((0, h // stride, w // stride))
        return torch.cat([gt_masks_at_stride(m, stride) for m in targets.masks]).to(mask_feats.dtype)
