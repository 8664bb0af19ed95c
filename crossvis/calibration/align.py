"""Aligning one feature map to another: local correlation → offsets → deformable convolution.

The temporal feature calibration of the OVIS paper (Qi et al., 2021), the module the CrossVIS
paper adds for its OVIS results: the previous frame's features are warped onto the current frame
by a deformable convolution (:func:`torchvision.ops.deform_conv2d`) whose sampling offsets a small
conv net predicts from the correlation of the two frames' features, and the result is fused with
the current features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from crossvis.errors import CrossVISError

__all__ = ["local_correlation", "FeatureAlignment", "FUSIONS"]

#: ``sum``: current + aligned (OVIS); ``gated``: current + γ·aligned with a learnable per-channel
#: γ starting at 0 (the module starts as the identity, for fine-tuning a trained model).
FUSIONS = ("sum", "gated")


def local_correlation(current: Tensor, previous: Tensor, max_displacement: int) -> Tensor:
    """FlowNet-style cost volume: channel-mean of ``current · shifted(previous)`` per displacement.

    Args:
        current, previous: float [B, C, H, W].
        max_displacement: d; displacements (dy, dx) in ``[-d, d]²``, row-major (dy outer).

    Returns:
        float [B, (2d+1)², H, W]; channel ``(dy + d)(2d+1) + (dx + d)`` at (y, x) is
        ``mean_c current[c, y, x] · previous[c, y + dy, x + dx]`` (0 outside the map).
    """
    d = int(max_displacement)
    height, width = current.shape[-2:]
    padded = F.pad(previous, (d, d, d, d))
    costs = [(current * padded[:, :, dy:dy + height, dx:dx + width]).mean(dim=1)
             for dy in range(2 * d + 1) for dx in range(2 * d + 1)]
    return torch.stack(costs, dim=1)


class FeatureAlignment(nn.Module):
    """Warps ``previous`` onto ``current`` and fuses them (one feature level).

    ``offsets = offset_net(local_correlation(current, previous))`` (two 3×3 convs, the last one
    zero-initialised so training starts from a plain convolution),
    ``aligned = deform_conv2d(previous, offsets, W, b)`` with a k×k kernel (``W`` starts as the
    identity at the centre tap, so ``aligned = previous`` at initialisation), and
    ``out = current + aligned`` (``sum``) or ``current + γ ⊙ aligned`` (``gated``, γ starts at 0).

    Args:
        channels: C of both maps.
        max_displacement: correlation range d in feature pixels (4 → 81 correlation channels).
        kernel_size: k of the deformable convolution (3).
        hidden_channels: width of the offset net (64).
        fusion: one of :data:`FUSIONS`.
    """

    def __init__(self, channels: int, max_displacement: int = 4, kernel_size: int = 3,
                 hidden_channels: int = 64, fusion: str = "sum") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise CrossVISError(f"temporal_calibration: fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if int(max_displacement) < 0 or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise CrossVISError("temporal_calibration: max_displacement must be >= 0 and kernel_size odd and >= 1")
        self.channels, self.max_displacement, self.kernel_size = int(channels), int(max_displacement), int(kernel_size)
        self.fusion = fusion
        corr = (2 * self.max_displacement + 1) ** 2
        self.offset_net = nn.Sequential(
            nn.Conv2d(corr, hidden_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, 2 * self.kernel_size ** 2, 3, padding=1))
        nn.init.zeros_(self.offset_net[-1].weight)
        nn.init.zeros_(self.offset_net[-1].bias)
        weight = torch.zeros(self.channels, self.channels, self.kernel_size, self.kernel_size)
        weight[:, :, self.kernel_size // 2, self.kernel_size // 2] = torch.eye(self.channels)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(self.channels))
        self.gate = nn.Parameter(torch.zeros(1, self.channels, 1, 1)) if fusion == "gated" else None

    def offsets(self, current: Tensor, previous: Tensor) -> Tensor:
        """Sampling offsets float [B, 2k², H, W] ((dy, dx) per kernel tap, deform_conv2d's layout)."""
        return self.offset_net(local_correlation(current, previous, self.max_displacement))

    def align(self, previous: Tensor, offsets: Tensor) -> Tensor:
        """``deform_conv2d(previous, offsets)``: float [B, C, H, W] (computed in float32)."""
        return deform_conv2d(previous.float(), offsets.float(), self.weight.float(), self.bias.float(),
                             padding=self.kernel_size // 2).to(previous.dtype)

    def fuse(self, current: Tensor, aligned: Tensor) -> Tensor:
        return current + (aligned if self.gate is None else self.gate * aligned)

    def forward(self, current: Tensor, previous: Tensor) -> Tensor:
        """
        Args:
            current: float [B, C, H, W] features of the current frames.
            previous: float [B, C, H, W] features of each one's previous (or partner) frame.

        Returns:
            float [B, C, H, W] calibrated features.
        """
        if current.shape != previous.shape:
            raise CrossVISError(f"temporal_calibration: current {tuple(current.shape)} and previous "
                                f"{tuple(previous.shape)} feature maps differ in shape")
        return self.fuse(current, self.align(previous, self.offsets(current, previous)))
