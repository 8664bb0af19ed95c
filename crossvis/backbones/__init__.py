"""Backbones and necks: ResNet (torchvision-based), DLA-34 and FPN with P6/P7.

Every component exposes ``output_shape() -> dict[str, ShapeSpec]`` (fine to coarse) and maps a
float [B, C, H, W] input (or the previous stage's dict) to ``dict[str, Tensor]``. Input
normalisation is the model's job, not the backbone's.

    >>> from crossvis.backbones import ResNet, FPN
    >>> body = ResNet(depth=50, norm="FrozenBN", freeze_at=2, stride_in_1x1=True)
    >>> neck = FPN(body.output_shape())            # p3..p7, 256 channels
"""
from crossvis.backbones.base import Backbone
from crossvis.backbones.dla import DLA, DLA_LEVELS, dla34
from crossvis.backbones.fpn import FPN, c2_xavier_fill
from crossvis.backbones.norm import NORMS, freeze_module, get_norm
from crossvis.backbones.resnet import RESNET_STAGES, ResNet

__all__ = ["Backbone", "ResNet", "RESNET_STAGES", "DLA", "dla34", "DLA_LEVELS", "FPN", "c2_xavier_fill",
           "NORMS", "get_norm", "freeze_module"]
