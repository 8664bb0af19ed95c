"""CondInst mask branch: a shared, instance-agnostic mask feature map at stride 8."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from crossvis.heads.upsample import aligned_bilinear
from crossvis.structures import CrossVISError, ShapeSpec

__all__ = ["MaskBranch"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU())


class MaskBranch(nn.Module):
    """Fuses P3–P5 into ``out_channels`` mask features at the finest input stride.

    Each input level goes through ``refine[i]`` (3×3 conv, no bias, + BatchNorm + ReLU); coarser
    levels are aligned-bilinear upsampled to the finest one and summed; then ``tower`` applies
    ``num_convs`` × (3×3 conv + BN + ReLU) and a 1×1 conv with bias to ``out_channels``.
    The 3×3 convs use kaiming-uniform (a=1) init; the final 1×1 conv keeps PyTorch's default
    init, as the official code does.

    Args:
        input_shape: the neck's outputs (injected).
        in_features: levels to fuse, finest first (official p3, p4, p5).
        channels: width of the branch (official 128).
        out_channels: number of mask feature channels (official 8).
        num_convs: convolutions in the tower (official 4).

    Shapes: returns float [B, out_channels, H/s, W/s] for padded input [B, 3, H, W], s = the
    stride of ``in_features[0]``.
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: Sequence[str] = ("p3", "p4", "p5"),
                 channels: int = 128, out_channels: int = 8, num_convs: int = 4) -> None:
        super().__init__()
        self.in_features = list(in_features)
        missing = [f for f in self.in_features if f not in input_shape]
        if missing:
            raise CrossVISError(f"mask_branch.in_features {missing} are not produced by the neck "
                                f"(it gives {list(input_shape)}); fix mask_branch.in_features in the recipe")
        self.strides = [input_shape[f].stride for f in self.in_features]
        self.out_stride = self.strides[0]
        self.out_channels = out_channels
        self.refine = nn.ModuleList(_conv_bn_relu(input_shape[f].channels, channels) for f in self.in_features)
        tower: list[nn.Module] = [_conv_bn_relu(channels, channels) for _ in range(num_convs)]
        tower.append(nn.Conv2d(channels, out_channels, kernel_size=1))
        self.tower = nn.Sequential(*tower)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """``features``: the neck's outputs by name; returns mask features [B, out_channels, h, w]."""
        fused = None
        for name, refine in zip(self.in_features, self.refine):
            x = refine(features[name])
            if fused is None:
                fused = x
                continue
            factor = fused.shape[-2] // x.shape[-2]
            if factor * x.shape[-2] != fused.shape[-2] or factor * x.shape[-1] != fused.shape[-1]:
                raise ValueError(f"mask branch level {name} of size {tuple(x.shape[-2:])} does not divide "
                                 f"{tuple(fused.shape[-2:])}; pad inputs to a multiple of the largest stride")
            fused = fused + aligned_bilinear(x, factor)
        return self.tower(fused)
