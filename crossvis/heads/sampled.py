"""Evaluating per-location predictors only at chosen locations of a feature map.

Inference keeps at most ``max_detections`` locations, so predictors that are read only at the kept
locations (the CondInst controller, the embedding projection) need not run over the whole map.
The results equal the dense convolution read at those locations up to float summation order.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["gather_locations", "conv2d_at_locations"]


def gather_locations(feature: Tensor, index: Tensor) -> Tensor:
    """Values of a map at flat locations.

    Args:
        feature: [C, h, w] one image's map.
        index: int64 [K] row-major location indices (``y·w + x``).

    Returns:
        [K, C], same dtype as ``feature``.
    """
    return feature.reshape(feature.shape[0], -1)[:, index].t()


def conv2d_at_locations(conv: nn.Conv2d, feature: Tensor, index: Tensor) -> Tensor:
    """``conv(feature)`` read at flat locations, computing only those outputs.

    Supports the "same" convolutions of the FCOS head: odd square kernel, stride 1, dilation 1,
    zero padding ``k // 2``, one group.

    Args:
        conv: the convolution (its weight [O, C, k, k] and optional bias [O] are used).
        feature: [C, h, w] one image's input map.
        index: int64 [K] row-major output locations (``y·w + x``).

    Returns:
        [K, O] equal to ``conv(feature[None])[0].reshape(O, -1)[:, index].t()`` up to float rounding.
    """
    k = conv.kernel_size[0]
    if (conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.groups != 1 or conv.padding != (k // 2, k // 2) or conv.padding_mode != "zeros"):
        raise ValueError(f"conv2d_at_locations supports odd square 'same' convolutions with stride 1, "
                         f"got {conv}")
    weight = conv.weight.reshape(conv.out_channels, -1)
    if k == 1:
        patches = gather_locations(feature, index)
    else:
        # the k×k neighbourhood of each location, read in place (no padded copy of the map) with
        # one index_select over the flat pixels: taps outside the map read a clamped pixel and are
        # zeroed after
        channels, height, width = feature.shape
        n = index.numel()
        offsets = torch.arange(k, device=index.device) - k // 2
        rows = (index // width)[:, None] + offsets          # [K, k]
        cols = (index % width)[:, None] + offsets
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        taps = (rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]).reshape(-1)
        if feature.stride(0) == 1 and channels > 1:  # channels-last: a pixel's channels are contiguous
            patches = feature.permute(1, 2, 0).reshape(height * width, channels).index_select(0, taps)
            patches = (patches.view(n, k * k, channels) * inside.reshape(n, k * k, 1)).transpose(1, 2)
        else:
            patches = feature.reshape(channels, height * width).index_select(1, taps)   # [C, K·k·k]
            patches = (patches.view(channels, n, k * k) * inside.reshape(1, n, k * k)).transpose(0, 1)
        patches = patches.reshape(n, weight.shape[1])       # [K, C·k·k] in the weight's (c, dy, dx) order
    if conv.bias is None:
        return patches @ weight.t()
    return torch.addmm(conv.bias, patches, weight.t())
