"""Index bookkeeping for CrossVIS crossover learning (paper Eq. 6, 7 and 16).

Crossover learning applies the dynamic filter that a positive location of one frame predicts to
the mask features of the *other* frame of the pair and asks it to segment the same instance there.
Running the dynamic mask head is the model's job; this module provides the pieces around it:

1. :func:`match_identities` — which GT of the other frame is the same instance (by identity id).
2. :func:`sample_partner_locations` — for every source positive, a random positive location of
   its partner instance in the other frame (its position and FPN level give the relative
   coordinates of the crossover mask, exactly as the official code draws them).
3. :func:`crossover_dice_loss` — the symmetric crossover loss ``0.5 * (L_a→b + L_b→a)`` with
   each direction the dice loss averaged over its samples (:func:`combine_directions` is the
   combiner alone, for callers that compute each direction themselves).

Typical use for the direction a → b (``gt_ids_*``: identity ids of each frame's GTs; ``pos_gt_*``:
the GT index each FCOS-positive location of a frame is assigned to)::

    partner = match_identities(gt_ids_a, gt_ids_b)                 # [A], -1 where absent
    keep, chosen = sample_partner_locations(partner[pos_gt_a], pos_gt_b, generator)
    filters = filters_a[keep]                                      # dynamic filters of frame a
    rel_locations, rel_levels = locations_b[chosen[keep]], levels_b[chosen[keep]]
    targets = gt_masks_b[partner[pos_gt_a][keep]]                  # frame b's masks, stride 4
    probs_ab = mask_head(mask_feats_b, filters, rel_locations, rel_levels).sigmoid()

and the same for b → a, then ``loss_cross_over = crossover_dice_loss(probs_ab, targets_ab,
probs_ba, targets_ba)``.
For a batch of pairs, concatenate the GTs of all reference frames and shift each pair's partner
indices by that pair's offset (``torch.where(partner >= 0, partner + offset, partner)``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from crossvis.losses.dice import dice_loss
from crossvis.errors import CrossVISError

__all__ = ["match_identities", "sample_partner_locations", "combine_directions", "crossover_dice_loss"]


def _check_index_vector(t: Tensor, what: str) -> None:
    if not isinstance(t, Tensor) or t.dim() != 1:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise CrossVISError(f"crossover: {what} must be a 1-D int64 tensor, got {shape}")
    if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        raise CrossVISError(f"crossover: {what} must be an integer tensor, got {t.dtype}")


def match_identities(ids_a: Tensor, ids_b: Tensor) -> Tensor:
    """Index of the same identity in the other frame.

    Args:
        ids_a: int64 [A] identity ids of frame a's GT instances (unique within the frame).
        ids_b: int64 [B] identity ids of frame b's GT instances (unique within the frame).

    Returns:
        int64 [A]: for each GT of frame a, the index ``j`` with ``ids_b[j] == ids_a[i]``, or -1 when
        frame b does not contain that identity.

    Raises:
        CrossVISError: when a frame lists the same identity twice (ambiguous correspondence).
    """
    _check_index_vector(ids_a, "ids_a")
    _check_index_vector(ids_b, "ids_b")
    for ids, what in ((ids_a, "ids_a"), (ids_b, "ids_b")):
        if ids.numel() != torch.unique(ids).numel():
            raise CrossVISError(
                f"crossover: {what} contains a repeated identity id; every instance of a frame needs "
                f"its own track id (check the annotations' 'instances.ids')")
    same = ids_a[:, None] == ids_b.to(ids_a.device)[None, :]                 # [A, B], <= 1 per row
    absent = ~same.any(dim=1, keepdim=True)
    # Column 0 stands for "absent": argmax picks it only when no id matches, giving -1 after the shift.
    return torch.cat([absent, same], dim=1).to(torch.int64).argmax(dim=1) - 1


def sample_partner_locations(src_gt_partner: Tensor, dst_pos_gt: Tensor,
                             generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Draw, for each source positive, a destination positive of its partner instance.

    A source positive location is usable only if its GT has a partner in the destination frame
    (``src_gt_partner >= 0``) and that partner owns at least one positive location there. For each
    usable source positive one destination positive of the partner is drawn uniformly at random,
    independently per source positive (official behaviour). Vectorised: one ``rand`` of size ``P``.

    Args:
        src_gt_partner: int64 [P], for each source positive location, the index of its partner GT
            in the destination frame (the same index space as ``dst_pos_gt``), or -1 (any negative)
            when the instance is absent there.
        dst_pos_gt: int64 [Q], the GT index each destination positive location is assigned to
            (negative entries are ignored).
        generator: optional ``torch.Generator`` on the tensors' device, for reproducible draws.

    Returns:
        keep: bool [P], which source positives have a usable partner.
        chosen: int64 [P], index into the ``Q`` destination positives of the drawn location
        (``dst_pos_gt[chosen[i]] == src_gt_partner[i]`` where ``keep``), -1 where not kept.
    """
    _check_index_vector(src_gt_partner, "src_gt_partner")
    _check_index_vector(dst_pos_gt, "dst_pos_gt")
    device = src_gt_partner.device
    src = src_gt_partner.long()
    dst = dst_pos_gt.long().to(device)
    num_src = src.numel()
    # Draw first, so the generator advances by the same amount whatever the data.
    uniform = torch.rand(num_src, generator=generator, device=device, dtype=torch.float64)
    keep = torch.zeros(num_src, dtype=torch.bool, device=device)
    chosen = torch.full((num_src,), -1, dtype=torch.int64, device=device)

    dst_valid = torch.nonzero(dst >= 0).squeeze(1)
    if num_src == 0 or dst_valid.numel() == 0:
        return keep, chosen
    num_gt = int(torch.maximum(src.max(), dst.max())) + 1
    gt_sorted, perm = torch.sort(dst[dst_valid], stable=True)
    order = dst_valid[perm]                       # destination positives grouped by GT
    counts = torch.bincount(gt_sorted, minlength=num_gt)                     # [G]
    starts = torch.cumsum(counts, dim=0) - counts                             # [G]

    partner = src.clamp(min=0)
    count = torch.where(src >= 0, counts[partner], torch.zeros_like(partner))
    keep = count > 0
    offset = torch.minimum((uniform * count).floor().long(), (count - 1).clamp(min=0))
    pick = (starts[partner] + offset).clamp(max=order.numel() - 1)
    chosen = torch.where(keep, order[pick], chosen)
    return keep, chosen


def combine_directions(loss_ab: Tensor, loss_ba: Tensor) -> Tensor:
    """Symmetric crossover loss ``0.5 * (loss_ab + loss_ba)`` (official ``loss_cross_over``).

    The paper's Eq. 16 sums the two directions; the official code averages them (weight 1.0), which
    this follows. A direction without usable samples must be given as a zero that is connected to
    the graph (what a dice loss averaged over zero samples should return); it still counts as one
    of the two halves, as in the official code.

    Args:
        loss_ab: scalar tensor, crossover dice of frame a's filters on frame b (mean over samples).
        loss_ba: scalar tensor, the reverse direction.

    Returns:
        scalar tensor.
    """
    for loss, what in ((loss_ab, "loss_ab"), (loss_ba, "loss_ba")):
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise CrossVISError(f"crossover: {what} must be a scalar tensor (one direction's mean loss)")
    return 0.5 * (loss_ab.reshape(()) + loss_ba.reshape(()))


def _mean_dice(probs: Tensor, targets: Tensor, what: str) -> Tensor:
    if probs.shape != targets.shape:
        raise CrossVISError(
            f"crossover: {what} predictions {tuple(probs.shape)} and target masks "
            f"{tuple(targets.shape)} must have the same [S, H, W] shape")
    if probs.shape[0] == 0:
        return probs.sum().float() * 0.0
    return dice_loss(probs, targets).mean()


def crossover_dice_loss(probs_ab: Tensor, targets_ab: Tensor, probs_ba: Tensor,
                        targets_ba: Tensor) -> Tensor:
    """Crossover loss of a batch of frame pairs (official ``loss_cross_over``).

    Each direction is the dice loss ``1 - 2 sum(p g) / (sum p^2 + sum g^2 + 1e-5)`` averaged over its
    samples (a connected zero when it has none); the two directions are combined by
    :func:`combine_directions`.

    Args:
        probs_ab: float [S, H, W] sigmoid mask probabilities predicted on frame b by frame a's
            dynamic filters (stride 4), one per kept source positive.
        targets_ab: [S, H, W] 0/1 GT masks of the partner instances in frame b.
        probs_ba: float [T, H', W'] the reverse direction's predictions.
        targets_ba: [T, H', W'] the reverse direction's targets.

    Returns:
        float scalar loss.
    """
    return combine_directions(_mean_dice(probs_ab, targets_ab, "a->b"),
                              _mean_dice(probs_ba, targets_ba, "b->a"))
