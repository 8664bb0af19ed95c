"""The CondInst network: backbone + neck + FCOS head + controller + mask branch (no losses, no post-processing)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch
from crossvis.heads.sampled import conv2d_at_locations, gather_locations
from crossvis.models.outputs import NetworkOutputs

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

    def forward(self, images: Tensor, dense: bool = True) -> NetworkOutputs:
        """Raw outputs for a normalised, padded batch.

        Args:
            images: float32 [B, 3, H, W], H and W multiples of the coarsest stride.
            dense: compute the controller and embedding maps everywhere (training, export).
                ``False`` (inference) skips them and returns the tower outputs they are computed
                from, ``bbox_features`` and ``embed_features``; read them at the kept locations
                with :meth:`at_locations`.

        Returns:
            the per-level maps and the mask features, see :class:`NetworkOutputs` for shapes.
        """
        features = self.neck(self.backbone(images))
        g = self.backbone_grad_scale
        if self.training and g != 1.0:
            features = {k: v * g + v.detach() * (1.0 - g) for k, v in features.items()}
        head_out = self.head([features[f] for f in self.head.in_features], dense_embeddings=dense)
        out = NetworkOutputs(cls_logits=head_out.cls_logits, bbox_reg=head_out.bbox_reg, ctrness=head_out.ctrness,
                             mask_feats=self.mask_branch(features), embeddings=head_out.embeddings,
                             embed_features=head_out.embed_features)
        if dense:
            out.controller = [self.controller(f) for f in head_out.bbox_features]
        else:
            out.bbox_features = head_out.bbox_features
        return out

    def at_locations(self, outputs: NetworkOutputs, key: str, image: int, level: int, index: Tensor) -> Tensor:
        """Per-location outputs ``key`` (``controller`` or ``embeddings``) of one image and level.

        Works on dense outputs (reads the maps) and on ``forward(..., dense=False)`` outputs
        (computes the controller / embedding projection at ``index`` only).

        Args:
            outputs: this network's outputs.
            key: ``"controller"`` or ``"embeddings"``.
            image, level: batch item and FPN level.
            index: int64 [K] row-major locations of that level.

        Returns:
            [K, P] dynamic filters or [K, D] embeddings.
        """
        if key not in ("controller", "embeddings"):
            raise KeyError(f"the network outputs have no per-location {key!r}")
        maps = getattr(outputs, key)
        if maps is not None:
            return gather_locations(maps[level][image], index)
        if key == "controller":
            return conv2d_at_locations(self.controller, outputs.bbox_features[level][image], index)
        return self.head.embeddings_at(outputs.embed_features[level][image], index)
