"""Dice loss on mask probabilities (CondInst / CrossVIS)."""
from __future__ import annotations

from torch import Tensor

__all__ = ["dice_loss"]


def dice_loss(probs: Tensor, targets: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-instance dice loss ``1 − 2Σpg / (Σp² + Σg² + eps)``.

    Args:
        probs: float [N, ...] predicted probabilities in [0, 1].
        targets: float or 0/1 [N, ...] ground truth of the same shape.

    Returns:
        float [N] losses (not reduced).
    """
    p = probs.flatten(1)
    g = targets.flatten(1).to(p.dtype)
    inter = (p * g).sum(dim=1)
    union = (p * p).sum(dim=1) + (g * g).sum(dim=1) + eps
    return 1.0 - 2.0 * inter / union
