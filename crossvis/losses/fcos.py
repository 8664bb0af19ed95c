"""FCOS detection losses: sigmoid focal classification, +1-smoothed GIoU box loss, centerness BCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from crossvis.distributed import mean_over_processes

__all__ = ["ltrb_giou_loss", "centerness_targets", "FCOSLoss"]


def ltrb_giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """GIoU loss between boxes given as distances (l, t, r, b) from a shared location.

    Uses FCOS's +1 smoothing of the IoU: ``IoU = (I + 1) / (U + 1)``, ``GIoU = IoU − (C − U) / C``
    with C the area of the smallest enclosing box.

    Args:
        pred: float [N, 4] predicted (l, t, r, b), non-negative.
        target: float [N, 4] target (l, t, r, b), positive.

    Returns:
        float [N] values of ``1 − GIoU``.
    """
    pl, pt, pr, pb = pred.unbind(dim=1)
    tl, tt, tr, tb = target.unbind(dim=1)
    pred_area = (pl + pr) * (pt + pb)
    target_area = (tl + tr) * (tt + tb)
    inter = (torch.min(pl, tl) + torch.min(pr, tr)) * (torch.min(pt, tt) + torch.min(pb, tb))
    enclose = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pt, tt) + torch.max(pb, tb))
    union = pred_area + target_area - inter
    iou = (inter + 1.0) / (union + 1.0)
    giou = iou - (enclose - union) / enclose
    return 1.0 - giou


def centerness_targets(reg_targets: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))``; float [N, 4] → float [N]."""
    lr = reg_targets[:, [0, 2]]
    tb = reg_targets[:, [1, 3]]
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values)
    return torch.sqrt(ratio)


class FCOSLoss(nn.Module):
    """The three FCOS losses over all locations of a batch.

    * ``loss_fcos_cls``: sigmoid focal loss (α, γ) summed over locations × classes / max(N_pos, 1);
    * ``loss_fcos_loc``: Σ (1 − GIoU)·ctr_target / max(Σ ctr_target, 1e-6);
    * ``loss_fcos_ctr``: Σ BCE-with-logits(ctrness, ctr_target) / max(N_pos, 1),
    where N_pos and Σ ctr_target are averaged over processes when torch.distributed is initialised.
    With no positive location the box and centerness losses are exactly 0 and still connected to
    the graph.
    """

    def __init__(self, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def forward(self, cls_logits: Tensor, bbox_reg: Tensor, ctrness: Tensor, labels: Tensor,
                reg_targets: Tensor) -> dict[str, Tensor]:
        """Args:
            cls_logits: float [L, C] classification logits of all locations.
            bbox_reg: float [L, 4] predicted (l, t, r, b) in stride units.
            ctrness: float [L] centerness logits.
            labels: int64 [L] class index, C for background.
            reg_targets: float [L, 4] target (l, t, r, b) in stride units (used at positives).

        Returns:
            dict with scalar ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``.
        """
        num_classes = cls_logits.shape[1]
        pos = torch.nonzero(labels != num_classes).squeeze(1)
        num_pos = mean_over_processes(torch.tensor(float(pos.numel()), device=cls_logits.device))
        num_pos = torch.clamp(num_pos, min=1.0)

        cls_targets = torch.zeros_like(cls_logits)
        cls_targets[pos, labels[pos]] = 1.0
        loss_cls = sigmoid_focal_loss(cls_logits, cls_targets, alpha=self.focal_alpha,
                                      gamma=self.focal_gamma, reduction="sum") / num_pos

        pos_reg, pos_ctr = bbox_reg[pos], ctrness[pos]
        ctr_targets = centerness_targets(reg_targets[pos])
        # Every process takes part in the reduction, also one without positives.
        ctr_sum = torch.clamp(mean_over_processes(ctr_targets.sum().detach()), min=1e-6)
        if pos.numel() == 0:
            return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": bbox_reg.sum() * 0.0,
                    "loss_fcos_ctr": ctrness.sum() * 0.0}
        loss_loc = (ltrb_giou_loss(pos_reg, reg_targets[pos]) * ctr_targets).sum() / ctr_sum
        loss_ctr = F.binary_cross_entropy_with_logits(pos_ctr, ctr_targets, reduction="sum") / num_pos
        return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": loss_loc, "loss_fcos_ctr": loss_ctr}
