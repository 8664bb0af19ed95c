"""Instance-embedding (association) losses for video instance segmentation.

Three losses train the per-location identity embedding of CrossVIS and its baselines:

* :class:`GlobalFocalEmbeddingLoss` — the "global balanced embedding" of CrossVIS (paper Eq. 13–14)
  as the official code computes it (``loss_reid``): one-vs-all sigmoid focal loss over ``M``
  learnable identity proxies.
* :class:`GlobalSoftmaxEmbeddingLoss` — the "global L_CE" ablation (paper Eq. 11–12): softmax
  cross-entropy over the same proxies.
* :class:`PairwiseEmbeddingLoss` — the MaskTrack R-CNN style pair-wise embedding (paper Eq. 9–10):
  every anchor-frame sample is classified among the reference frame's instances plus a
  "new identity" slot.

The proxies (an ``nn.Linear(D, M)`` with bias, the official ``cls`` layer) belong to the model, not
to the loss: the global losses take the proxy module as a ``forward`` argument, so the model keeps
ownership of its parameters (checkpoints, optimiser groups, DDP) and the losses have no state.
Each class tells whether it needs proxies through the class attribute ``requires_proxies``.

Every loss returns a scalar that is finite and still connected to its inputs (embeddings and, for
the global losses, the proxy parameters) when there are no samples, so a batch without positives
neither produces NaN nor leaves parameters unused under DDP.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from crossvis.errors import CrossVISError

__all__ = [
    "embedding_scale",
    "proxy_logits",
    "GlobalFocalEmbeddingLoss",
    "GlobalSoftmaxEmbeddingLoss",
    "PairwiseEmbeddingLoss",
]


def embedding_scale(num_identities: int) -> float:
    """The embedding scale ``s = sqrt(2) * ln(M - 1)`` of the official code (JDE/FairMOT rule).

    Args:
        num_identities: ``M``, the number of identity proxies; must be at least 3 (``s > 0``).

    Returns:
        ``s`` as a float, e.g. 11.6469 for ``M = 3774`` (YouTube-VIS 2019).
    """
    if num_identities < 3:
        raise CrossVISError(
            f"embedding loss: the default scale sqrt(2)*ln(M-1) needs M >= 3 identities, got M = "
            f"{num_identities}; set the loss's 'scale' explicitly or check the dataset's identities")
    return math.sqrt(2.0) * math.log(num_identities - 1)


def _check_embeddings(embeddings: Tensor, what: str) -> None:
    if embeddings.dim() != 2:
        raise CrossVISError(
            f"embedding loss: {what} must be a [N, D] float tensor, got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise CrossVISError(f"embedding loss: {what} must be floating point, got {embeddings.dtype}")


def _check_ids(ids: Tensor, length: int, what: str) -> None:
    if ids.dim() != 1 or ids.shape[0] != length:
        raise CrossVISError(
            f"embedding loss: {what} must be an int64 [N] tensor with one entry per embedding "
            f"(N = {length}), got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise CrossVISError(f"embedding loss: {what} must be an integer tensor, got {ids.dtype}")


def _check_labels(labels: Tensor, num_identities: int) -> None:
    """Range check done with reductions (no indexing), so bad labels never hit a device assert."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_identities:
        raise CrossVISError(
            f"embedding loss: identity labels must lie in 0..{num_identities - 1} (the model has "
            f"M = {num_identities} proxies), got values in {low}..{high}; set the model's "
            f"num_identities to the dataset's number of instance tracks (e.g. 3774 for "
            f"YouTube-VIS 2019, 6283 for 2021)")


def _zero_loss(*tensors: Tensor) -> Tensor:
    """A float32 zero that depends on every given tensor (keeps the autograd graph connected)."""
    return sum(t.sum() for t in tensors).float() * 0.0


def proxy_logits(embeddings: Tensor, proxies: nn.Linear, scale: Optional[float] = None) -> Tensor:
    """Identity logits ``z = W (s * e / ||e||) + b`` of the global embedding losses.

    Args:
        embeddings: float [N, D] raw embeddings ``e`` (one per positive location).
        proxies: ``nn.Linear(D, M)``; the rows of its weight are the identity proxies ``w_m``.
        scale: ``s``; ``None`` uses :func:`embedding_scale` of ``M``.

    Returns:
        float32 [N, M] logits.
    """
    if not isinstance(proxies, nn.Linear):
        raise CrossVISError(
            f"embedding loss: 'proxies' must be the model's nn.Linear(D, M) identity classifier, "
            f"got {type(proxies).__name__}")
    _check_embeddings(embeddings, "embeddings")
    if embeddings.shape[1] != proxies.in_features:
        raise CrossVISError(
            f"embedding loss: embeddings have D = {embeddings.shape[1]} channels but the proxies "
            f"expect {proxies.in_features}; make the embedding head's output size match")
    s = embedding_scale(proxies.out_features) if scale is None else float(scale)
    normalized = F.normalize(embeddings, dim=1) * s
    return proxies(normalized).float()


class GlobalFocalEmbeddingLoss(nn.Module):
    """Global balanced instance-embedding loss of CrossVIS (official ``loss_reid``).

    For ``N`` samples (all positive locations of both frames) with identity labels ``n_i``:
    ``z_i = W (s e_i / ||e_i||) + b`` over the ``M`` proxies, and

    ``L = (1 / N) * sum_i sum_m FL(z_im, [m == n_i]; alpha, gamma)``,

    the one-vs-all sigmoid focal loss of :func:`torchvision.ops.sigmoid_focal_loss` (paper Eq. 13–14;
    the paper writes ``e^T w`` without normalisation or bias, the official code uses both, and so do
    we). Unlike the official code, ``N = 0`` gives a connected zero instead of NaN.

    Args:
        alpha: focal-loss weight of positives (0.25 as in the official code).
        gamma: focal-loss focusing exponent (2.0).
        scale: embedding scale ``s``; ``None`` uses ``sqrt(2) * ln(M - 1)``.
    """

    requires_proxies = True

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, scale: Optional[float] = None) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.scale = scale

    def forward(self, embeddings: Tensor, labels: Tensor, proxies: nn.Linear) -> Tensor:
        """
        Args:
            embeddings: float [N, D] embeddings of the positive locations.
            labels: int64 [N] identity index of each sample, in ``0..M-1``.
            proxies: the model's ``nn.Linear(D, M)`` identity classifier.

        Returns:
            float32 scalar loss.
        """
        logits = proxy_logits(embeddings, proxies, self.scale)
        _check_ids(labels, embeddings.shape[0], "labels")
        _check_labels(labels, proxies.out_features)
        num_samples = embeddings.shape[0]
        if num_samples == 0:
            return _zero_loss(logits, *proxies.parameters())
        targets = F.one_hot(labels.long(), proxies.out_features).to(logits.dtype)
        loss = sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma, reduction="sum")
        return loss / num_samples


class GlobalSoftmaxEmbeddingLoss(nn.Module):
    """Global softmax cross-entropy embedding loss (paper Eq. 11–12, the "Global L_CE" ablation).

    ``p_i(n) = softmax_n(z_i)`` over the ``M`` proxy logits and ``L = mean_i -log p_i(n_i)``.

    Choice: ``z_i`` is computed exactly as in :class:`GlobalFocalEmbeddingLoss` (scaled,
    L2-normalised embedding and the same biased proxy layer), so that swapping the two losses
    changes only the objective, which is what the paper's Table 7 compares. The paper's Eq. 11
    writes a plain ``e_i^T w_n``; pass ``scale`` to pick another temperature.

    Args:
        scale: embedding scale ``s``; ``None`` uses ``sqrt(2) * ln(M - 1)``.
    """

    requires_proxies = True

    def __init__(self, scale: Optional[float] = None) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, embeddings: Tensor, labels: Tensor, proxies: nn.Linear) -> Tensor:
        """
        Args:
            embeddings: float [N, D] embeddings of the positive locations.
            labels: int64 [N] identity index of each sample, in ``0..M-1``.
            proxies: the model's ``nn.Linear(D, M)`` identity classifier.

        Returns:
            float32 scalar loss (mean over the ``N`` samples; connected zero when ``N = 0``).
        """
        logits = proxy_logits(embeddings, proxies, self.scale)
        _check_ids(labels, embeddings.shape[0], "labels")
        _check_labels(labels, proxies.out_features)
        if embeddings.shape[0] == 0:
            return _zero_loss(logits, *proxies.parameters())
        return F.cross_entropy(logits, labels.long())


class PairwiseEmbeddingLoss(nn.Module):
    """MaskTrack R-CNN style pair-wise embedding loss (paper Eq. 9–10, the "Pair-wise" ablation).

    For every anchor-frame sample ``i`` (a positive location, identity ``n_i``) the candidates are
    **all** ``K`` ground-truth instances of the reference frame of the same pair, as in MaskTrack
    R-CNN (one ROI feature per reference GT box). An instance with positive locations is
    represented by the **mean** embedding of those locations (the dense-head analogue of the ROI
    feature, without sampling noise); an instance without any positive location (tiny or cut-off
    objects) by its entry in ``reference_gt_embeddings`` (the model gives the embedding at the
    location nearest the GT box centre). ``candidates="positives"`` keeps only the instances with
    positive locations (the earlier crossvis variant). Logits are

    ``[0, sim(e_i, r_1), ..., sim(e_i, r_K)]``,

    where the fixed 0 is the "new identity" slot of Eq. 9 (``exp(0) = 1`` in the denominator) and
    ``sim`` is the dot product ``e^T r`` of Eq. 9 (``scale=None``) or ``scale * cos(e, r)``.
    The target is the slot of the reference instance with identity ``n_i``, or slot 0 when the
    reference frame does not contain it. The loss is ``-(1 - p)^gamma log p`` of the target
    probability ``p`` averaged over all anchor samples of the batch; ``gamma = 0`` is the
    cross-entropy of Eq. 10, ``gamma > 0`` the "pair-wise L_Focal" row of the paper's Table 7.
    Gradients flow into both the anchor embeddings and the reference means.

    Args:
        scale: ``None`` for raw dot products (Eq. 9), or a positive float ``s`` to use
            ``s * cosine similarity`` (bounded logits; matches the cosine used by the tracker).
        gamma: focusing exponent of the softmax focal variant (0 = plain cross-entropy).
        candidates: ``"all"`` (every reference GT, MaskTrack R-CNN) or ``"positives"`` (only the
            reference GTs with positive locations).
    """

    requires_proxies = False
    CANDIDATES = ("all", "positives")

    def __init__(self, scale: Optional[float] = None, gamma: float = 0.0, candidates: str = "all") -> None:
        super().__init__()
        if candidates not in self.CANDIDATES:
            raise CrossVISError(f"pairwise embedding loss: 'candidates' must be one of {', '.join(self.CANDIDATES)}, "
                                f"got {candidates!r}")
        self.candidates = candidates
        if scale is not None and scale <= 0:
            raise CrossVISError(f"pairwise embedding loss: 'scale' must be positive or null, got {scale}")
        if gamma < 0:
            raise CrossVISError(f"pairwise embedding loss: 'gamma' must be >= 0, got {gamma}")
        self.scale = scale
        self.gamma = gamma

    def forward(self, anchor_embeddings: Tensor, anchor_ids: Tensor, reference_embeddings: Tensor,
                reference_ids: Tensor, anchor_groups: Optional[Tensor] = None,
                reference_groups: Optional[Tensor] = None, reference_gt_embeddings: Optional[Tensor] = None,
                reference_gt_ids: Optional[Tensor] = None, reference_gt_groups: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            anchor_embeddings: float [P, D] embeddings of the anchor frames' positive locations.
            anchor_ids: int64 [P] identity of the GT each anchor location is assigned to.
            reference_embeddings: float [Q, D] embeddings of the reference frames' positives.
            reference_ids: int64 [Q] identity of the GT each reference location is assigned to.
            anchor_groups: int64 [P] index of the frame pair each anchor sample belongs to (a
                sample only competes among the reference instances of its own pair); ``None``
                means every sample comes from a single pair.
            reference_groups: int64 [Q], the same for the reference samples.
            reference_gt_embeddings: float [R, D], one embedding per reference GT instance (all of
                them, or at least those without positive locations); with ``candidates="all"`` the
                instances absent from the positives become candidates through it.
            reference_gt_ids: int64 [R] their identities.
            reference_gt_groups: int64 [R] their pair indices (``None``: a single pair).

        Returns:
            float32 scalar loss (connected zero when ``P = 0``).
        """
        _check_embeddings(anchor_embeddings, "anchor_embeddings")
        _check_embeddings(reference_embeddings, "reference_embeddings")
        if anchor_embeddings.shape[1] != reference_embeddings.shape[1]:
            raise CrossVISError(
                f"pairwise embedding loss: anchor and reference embeddings differ in size "
                f"({anchor_embeddings.shape[1]} vs {reference_embeddings.shape[1]})")
        num_anchor, num_ref = anchor_embeddings.shape[0], reference_embeddings.shape[0]
        _check_ids(anchor_ids, num_anchor, "anchor_ids")
        _check_ids(reference_ids, num_ref, "reference_ids")
        anchor_groups = self._groups(anchor_groups, anchor_ids, "anchor_groups")
        reference_groups = self._groups(reference_groups, reference_ids, "reference_groups")
        if num_anchor == 0:
            return _zero_loss(anchor_embeddings, reference_embeddings)
        if self.candidates == "all" and reference_gt_embeddings is not None:
            reference_embeddings, reference_ids, reference_groups = self._with_unseen_instances(
                reference_embeddings, reference_ids, reference_groups, reference_gt_embeddings,
                reference_gt_ids, reference_gt_groups)

        # One prototype per (pair, identity) of the reference frames: the mean embedding.
        keys = torch.stack([reference_groups, reference_ids.long()], dim=1)
        inst_keys, inst_of_loc = torch.unique(keys, dim=0, return_inverse=True)  # [K, 2], [Q]
        num_inst = inst_keys.shape[0]
        sums = reference_embeddings.new_zeros(num_inst, reference_embeddings.shape[1])
        sums = sums.index_add(0, inst_of_loc, reference_embeddings)
        counts = torch.bincount(inst_of_loc, minlength=num_inst).clamp(min=1)
        prototypes = sums / counts.unsqueeze(1).to(sums.dtype)                   # [K, D]

        anchors = anchor_embeddings
        if self.scale is not None:
            anchors = F.normalize(anchors, dim=1) * self.scale
            prototypes = F.normalize(prototypes, dim=1)
        similarity = (anchors @ prototypes.t()).float()                           # [P, K]
        same_pair = anchor_groups[:, None] == inst_keys[None, :, 0]
        similarity = similarity.masked_fill(~same_pair, float("-inf"))
        new_slot = similarity.new_zeros(num_anchor, 1)
        logits = torch.cat([new_slot, similarity], dim=1)                         # [P, 1 + K]

        match = same_pair & (anchor_ids.long()[:, None] == inst_keys[None, :, 1])  # <= 1 per row
        is_new = ~match.any(dim=1, keepdim=True)
        targets = torch.cat([is_new, match], dim=1).to(torch.int64).argmax(dim=1)  # [P] in 0..K
        log_p = torch.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        if self.gamma > 0:
            log_p = (1.0 - log_p.exp()).pow(self.gamma) * log_p                 # softmax focal
        loss = -log_p.mean()
        # reference_embeddings only reach the loss through the pairs' prototypes; keep it connected
        # when no anchor shares a pair with any reference sample.
        return loss + _zero_loss(reference_embeddings)

    def _with_unseen_instances(self, emb: Tensor, ids: Tensor, groups: Tensor, gt_emb: Tensor,
                               gt_ids: Optional[Tensor], gt_groups: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The reference samples plus one sample for every reference GT that has no positive location."""
        _check_embeddings(gt_emb, "reference_gt_embeddings")
        if gt_ids is None:
            raise CrossVISError("pairwise embedding loss: reference_gt_embeddings needs reference_gt_ids")
        _check_ids(gt_ids, gt_emb.shape[0], "reference_gt_ids")
        gt_groups = self._groups(gt_groups, gt_ids, "reference_gt_groups")
        seen = (gt_groups[:, None] == groups[None, :]) & (gt_ids.long()[:, None] == ids.long()[None, :])
        unseen = ~seen.any(dim=1)
        return (torch.cat([emb, gt_emb[unseen].to(emb.dtype)]), torch.cat([ids.long(), gt_ids.long()[unseen]]),
                torch.cat([groups, gt_groups[unseen]]))

    @staticmethod
    def _groups(groups: Optional[Tensor], ids: Tensor, what: str) -> Tensor:
        if groups is None:
            return torch.zeros_like(ids, dtype=torch.long)
        _check_ids(groups, ids.shape[0], what)
        return groups.long()
