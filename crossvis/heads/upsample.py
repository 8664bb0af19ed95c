"""Pixel-centre-aligned bilinear upsampling used by CondInst's mask branch and mask head."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["aligned_bilinear", "aligned_bilinear_unshifted"]


def aligned_bilinear(x: Tensor, factor: int) -> Tensor:
    """Upsample ``x`` by an integer ``factor`` so that output pixel centres stay aligned.

    The map is replicate-padded by one pixel on the right and bottom, resized with
    ``align_corners=True`` to ``(factor·h + 1, factor·w + 1)``, replicate-padded by
    ``factor // 2`` on the left and top, and cropped to ``(factor·h, factor·w)``. This is the
    CondInst/AdelaiDet definition; input sample ``(i, j)`` of a stride-``s`` map lands on output
    sample ``(i·f + f//2, j·f + f//2)`` of the stride-``s/f`` map.

    Args:
        x: float tensor [N, C, h, w].
        factor: integer upsampling factor ≥ 1.

    Returns:
        float tensor [N, C, factor·h, factor·w].
    """
    if x.dim() != 4:
        raise ValueError(f"aligned_bilinear expects a 4-d tensor [N, C, h, w], got shape {tuple(x.shape)}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"aligned_bilinear needs an integer factor ≥ 1, got {factor}")
    factor = int(factor)
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    x = F.pad(aligned_bilinear_unshifted(x, factor), (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def aligned_bilinear_unshifted(x: Tensor, factor: int) -> Tensor:
    """The interpolation step of :func:`aligned_bilinear`, before its shift by ``factor // 2``.

    ``aligned_bilinear(x, f)[..., r, c] == aligned_bilinear_unshifted(x, f)[..., max(r - f//2, 0),
    max(c - f//2, 0)]`` exactly; callers that crop or threshold the result can read this map with
    that offset instead of materialising the padded copy.

    Args:
        x: float tensor [N, C, h, w]; factor: integer ≥ 1.

    Returns:
        float tensor [N, C, factor·h + 1, factor·w + 1].
    """
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    return F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
