"""Choosing the locations a contrastive embedding loss compares (QDTrack's sampler, for dense heads).

QDTrack samples 256 RoIs per image with at most half positives (instance balanced) and at most
3 negatives per positive (``CombinedSampler(num=256, pos_fraction=0.5, neg_pos_ub=3)`` with an
``InstanceBalancedPosSampler``). A dense one-stage head has locations instead of RoIs: a positive
is a location FCOS assigns to an instance, a negative a background location.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from crossvis.errors import CrossVISError

__all__ = ["LocationSampler", "instance_balanced_choice"]


def instance_balanced_choice(identities: Tensor, count: int) -> Tensor:
    """Pick ``count`` entries of ``identities`` spread evenly over the distinct identities.

    Every identity first gets one random entry, then a second one, and so on (an instance with
    few locations runs out and the others fill in), ties broken at random.

    Args:
        identities: int64 [P] identity of each candidate.
        count: how many to pick; all ``P`` when ``count >= P``.

    Returns:
        int64 [min(count, P)] indices into ``identities``.
    """
    num = identities.numel()
    if count >= num:
        return torch.arange(num, device=identities.device)
    order = torch.randperm(num, device=identities.device)
    shuffled = identities[order]
    # rank of each candidate within its identity, in the shuffled order
    sorted_ids, by_id = torch.sort(shuffled, stable=True)
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    starts = torch.cummax(torch.where(first, torch.arange(num, device=identities.device), 0), dim=0).values
    rank_sorted = torch.arange(num, device=identities.device) - starts
    rank = torch.empty_like(rank_sorted)
    rank[by_id] = rank_sorted
    pick = torch.argsort(rank, stable=True)[:count]  # lowest ranks first, shuffled order within a rank
    return order[pick]


@dataclass(frozen=True)
class LocationSampler:
    """Samples positive and background locations of one frame.

    Args:
        num_samples: samples per frame (QDTrack 256); ``-1`` keeps every location.
        positive_fraction: at most this fraction of ``num_samples`` are positives (QDTrack 0.5).
        neg_pos_ub: at most this many negatives per positive, counting at least one positive as
            QDTrack does (QDTrack 3); ``-1`` for no bound.
    """

    num_samples: int = 256
    positive_fraction: float = 0.5
    neg_pos_ub: int = 3

    def __post_init__(self) -> None:
        if self.num_samples != -1 and self.num_samples < 1:
            raise CrossVISError(f"contrastive_embedding: num_samples must be >= 1 or -1, got {self.num_samples}")
        if not 0.0 < self.positive_fraction <= 1.0:
            raise CrossVISError(
                f"contrastive_embedding: positive_fraction must be in (0, 1], got {self.positive_fraction}")
        if self.neg_pos_ub != -1 and self.neg_pos_ub < 0:
            raise CrossVISError(f"contrastive_embedding: neg_pos_ub must be >= 0 or -1, got {self.neg_pos_ub}")

    def positives(self, identities: Tensor) -> Tensor:
        """Instance-balanced positives of one frame: int64 indices of locations with identity ≥ 0."""
        pos = torch.nonzero(identities >= 0).squeeze(1)
        if self.num_samples == -1:
            return pos
        limit = int(self.num_samples * self.positive_fraction)
        return pos[instance_balanced_choice(identities[pos], limit)]

    def negatives(self, identities: Tensor, num_positives: int) -> Tensor:
        """Random background locations (identity −1) of one frame: int64 indices."""
        neg = torch.nonzero(identities == -1).squeeze(1)
        if self.num_samples == -1:
            return neg
        limit = self.num_samples - num_positives
        if self.neg_pos_ub != -1:
            limit = min(limit, self.neg_pos_ub * max(1, num_positives))
        if limit >= neg.numel():
            return neg
        return neg[torch.randperm(neg.numel(), device=neg.device)[:max(limit, 0)]]
