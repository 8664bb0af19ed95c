"""The CondInst network: backbone + neck + FCOS head + controller + mask branch (no losses, no post-processing)."""
from __future__ import annotations


import torch
from torch import Tensor, nn

from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch

__all__ = ["CondInstNetwork", "flatten_levels"]


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """Per-level maps [B, C, h_l, w_l] → [B, Σ h_l·w_l, C], locations row-major, levels fine → coarse."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)


class CondInstNetwork(nn.Module):
    """Everything with weights, from the normalised image to raw per-level predictions.

    Args:
        backbone: module mapping [B, 3, H, W] to a dict of feature maps.
        neck: module mapping the backbone's dict to the FPN levels ``{"p3": ..., ...}``.
        head: the FCOS head (its ``in_features`` select the levels).
        mask_branch: the CondInst mask branch.
        num_dynamic_params: output channels of the controller (169 for the official mask head).
        backbone_grad_scale: in training, every neck output f becomes
            ``g·f + (1 − g)·f.detach()`` so the backbone and neck see gradients scaled by g
            (official CrossVIS: 0.1); 1.0 disables it. Inference is unaffected.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: FCOSHead, mask_branch: MaskBranch,
                 num_dynamic_params: int, backbone_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.backbone, self.neck, self.head, self.mask_branch = backbone, neck, head, mask_branch
        self.controller = nn.Conv2d(head.out_channels, num_dynamic_params, kernel_size=3, padding=1)
        nn.init.normal_(self.controller.weight, std=0.01)
        nn.init.constant_(self.controller.bias, 0.0)
        self.backbone_grad_scale = float(backbone_grad_scale)

    @property
    def strides(self) -> list[int]:
        return list(self.head.strides)

    def forward(self, images: Tensor) -> dict[str, object]:
        """Raw outputs for a normalised, padded batch.

        Args:
            images: float32 [B, 3, H, W], H and W multiples of the coarsest stride.

        Returns:
            dict with per-level lists ``cls_logits`` [B, C, h, w], ``bbox_reg`` [B, 4, h, w]
            (stride units), ``ctrness`` [B, 1, h, w], ``controller`` [B, P, h, w], optionally
            ``embeddings`` [B, D, h, w]; and ``mask_feats`` [B, 8, H/8, W/8].
        """
        features = self.neck(self.backbone(images))
        g = self.backbone_grad_scale
        if self.training and g != 1.0:
            features = {k: v * g + v.detach() * (1.0 - g) for k, v in features.items()}
        head_out = self.head([features[f] for f in self.head.in_features])
        out: dict[str, object] = {
            "cls_logits": head_out["cls_logits"],
            "bbox_reg": head_out["bbox_reg"],
            "ctrness": head_out["ctrness"],
            "controller": [self.controller(f) for f in head_out["bbox_features"]],
            "mask_feats": self.mask_branch(features),
        }
        if "embeddings" in head_out:
            out["embeddings"] = head_out["embeddings"]
        return out
