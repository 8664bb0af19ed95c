"""Quasi-dense contrastive embedding loss (QDTrack, CVPR 2021) with STC's bi-directional form.

For a frame pair (key, reference): the sampled positive locations of the key frame are the
queries ``v``; the sampled positive and background locations of the reference frame are the keys
``k``. A key with the query's identity is a positive ``k⁺``; every other key (another identity or
background) is a negative ``k⁻``. With similarities ``s = v·k / τ`` (dot products):

* multi-positive contrastive term (QDTrack Eq. 3):
  ``L_embed(v) = log(1 + Σ_{k⁺} Σ_{k⁻} exp(s(v, k⁻) − s(v, k⁺)))``, averaged over the queries that
  have at least one positive key;
* auxiliary term (QDTrack Eq. 4): ``L_aux = (c(v, k) − 1[k is positive])²`` on the cosine
  ``c``, after QDTrack's margins (``pos_margin`` 0, ``neg_margin`` 0.1, clamped to [0, 1]) and
  hard-negative mining (the ``neg_pos_ub = 3`` highest-loss negatives per positive pair),
  averaged over the pairs kept;
* ``L = w_embed · L_embed + w_aux · L_aux`` (QDTrack weights 0.25 and 1.0), per frame pair, then
  averaged over the pairs; ``bidirectional`` (STC) averages the key→reference and
  reference→key directions.

The loss reads every location (``dense_inputs = True``): the model passes the flattened embedding
maps and the identity of each location (−1 background).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.association.sampling import LocationSampler
from crossvis.errors import CrossVISError

__all__ = ["ContrastiveEmbeddingLoss", "multi_positive_loss", "auxiliary_cosine_loss"]


def multi_positive_loss(similarity: Tensor, positive: Tensor) -> Tensor:
    """``log(1 + Σ_{j∈P_i} Σ_{k∈N_i} exp(s_ik − s_ij))`` per row.

    Computed as ``softplus(logsumexp_{k∈N_i} s_ik + logsumexp_{j∈P_i} −s_ij)`` (the double sum
    factorises), which is stable; a row without negatives gives 0.

    Args:
        similarity: float [Q, K] query–key similarities.
        positive: bool [Q, K] positive keys of each query; every other key is a negative.

    Returns:
        float [Q]; rows without a positive key give 0 (exclude them when averaging).
    """
    neg_inf = torch.finfo(similarity.dtype).min
    neg = torch.logsumexp(similarity.masked_fill(positive, neg_inf), dim=1)
    pos = torch.logsumexp((-similarity).masked_fill(~positive, neg_inf), dim=1)
    has_both = positive.any(dim=1) & (~positive).any(dim=1)
    return torch.where(has_both, F.softplus(neg + pos), similarity.new_zeros(()))


def auxiliary_cosine_loss(cosine: Tensor, positive: Tensor, pos_margin: float = 0.0, neg_margin: float = 0.1,
                          neg_pos_ub: int = 3, hard_mining: bool = True) -> Tensor:
    """QDTrack's auxiliary L2 loss on cosine similarities: mean of ``(c' − target)²`` over kept pairs.

    ``c' = clamp(c − margin, 0, 1)`` with ``pos_margin`` for positive pairs and ``neg_margin``
    for negative ones. When there are more than ``neg_pos_ub`` negatives per positive, only
    ``neg_pos_ub · #positives`` negatives are kept: the highest-loss ones (``hard_mining``) or
    random ones; ``neg_pos_ub = -1`` keeps all.

    Args:
        cosine: float [Q, K] cosine similarities.
        positive: bool [Q, K].

    Returns:
        float scalar; 0 (connected to ``cosine``) when nothing is kept.
    """
    target = positive.to(cosine.dtype)
    margin = torch.where(positive, cosine.new_tensor(pos_margin), cosine.new_tensor(neg_margin))
    cost = ((cosine - margin).clamp(0.0, 1.0) - target).pow(2).flatten()
    keep = torch.ones_like(cost, dtype=torch.bool)
    num_pos = int(positive.sum())
    neg_index = torch.nonzero(~positive.flatten()).squeeze(1)
    if neg_pos_ub != -1 and neg_index.numel() > neg_pos_ub * num_pos:
        limit = neg_pos_ub * num_pos
        if hard_mining:
            chosen = neg_index[torch.topk(cost[neg_index].detach(), limit).indices]
        else:
            chosen = neg_index[torch.randperm(neg_index.numel(), device=cost.device)[:limit]]
        keep[neg_index] = False
        keep[chosen] = True
    if not keep.any():
        return cosine.sum() * 0.0
    return cost[keep].mean()


class ContrastiveEmbeddingLoss(nn.Module):
    """Quasi-dense contrastive identity-embedding loss (see the module docstring).

    Args:
        temperature: ``τ`` of ``s = v·k / τ`` (QDTrack and STC: 1, plain dot products).
        embed_weight: ``w_embed`` of the multi-positive term (QDTrack 0.25).
        aux_weight: ``w_aux`` of the auxiliary cosine term (QDTrack 1.0); 0 disables it.
        pos_margin, neg_margin, aux_neg_pos_ub, hard_mining: the auxiliary term's settings
            (QDTrack 0, 0.1, 3, True).
        num_samples, positive_fraction, neg_pos_ub: location sampling per frame (QDTrack's RoI
            sampler: 256, 0.5, 3); ``num_samples: -1`` uses every location.
        bidirectional: also compute reference→key and average both directions (STC); False is
            QDTrack's key→reference only.
    """

    requires_proxies = False
    dense_inputs = True

    def __init__(self, temperature: float = 1.0, embed_weight: float = 0.25, aux_weight: float = 1.0,
                 pos_margin: float = 0.0, neg_margin: float = 0.1, aux_neg_pos_ub: int = 3,
                 hard_mining: bool = True, num_samples: int = 256, positive_fraction: float = 0.5,
                 neg_pos_ub: int = 3, bidirectional: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise CrossVISError(f"contrastive_embedding: temperature must be positive, got {temperature}")
        if embed_weight < 0 or aux_weight < 0:
            raise CrossVISError("contrastive_embedding: embed_weight and aux_weight must be >= 0")
        self.temperature = float(temperature)
        self.embed_weight = float(embed_weight)
        self.aux_weight = float(aux_weight)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)
        self.aux_neg_pos_ub, self.hard_mining = int(aux_neg_pos_ub), bool(hard_mining)
        self.sampler = LocationSampler(int(num_samples), float(positive_fraction), int(neg_pos_ub))
        self.bidirectional = bool(bidirectional)

    def forward(self, anchor_embeddings: Tensor, anchor_identities: Tensor, reference_embeddings: Tensor,
                reference_identities: Tensor, proxies: Optional[nn.Module] = None) -> Tensor:
        """
        Args:
            anchor_embeddings: float [B, L, D] embeddings of every location of the key frames.
            anchor_identities: int64 [B, L] identity at each location, −1 for background
                (values < −1 are ignored).
            reference_embeddings: float [B, L', D], the reference frame of each pair.
            reference_identities: int64 [B, L'].
            proxies: unused (accepted so the model can call every dense loss alike).

        Returns:
            float32 scalar; a connected zero when no pair has a query with a positive key.
        """
        _check_dense(anchor_embeddings, anchor_identities, "anchor")
        _check_dense(reference_embeddings, reference_identities, "reference")
        if anchor_embeddings.shape[0] != reference_embeddings.shape[0]:
            raise CrossVISError(
                f"contrastive_embedding: {anchor_embeddings.shape[0]} key frames but "
                f"{reference_embeddings.shape[0]} reference frames; pass one reference per key frame")
        directions = [(anchor_embeddings, anchor_identities, reference_embeddings, reference_identities)]
        if self.bidirectional:
            directions.append((reference_embeddings, reference_identities, anchor_embeddings, anchor_identities))
        zero = (anchor_embeddings.sum() + reference_embeddings.sum()).float() * 0.0
        total = zero
        for key_emb, key_ids, ref_emb, ref_ids in directions:
            per_pair = [self.pair_loss(key_emb[b], key_ids[b], ref_emb[b], ref_ids[b])
                        for b in range(key_emb.shape[0])]
            per_pair = [p for p in per_pair if p is not None]
            if per_pair:
                total = total + torch.stack(per_pair).mean()
        return total / len(directions)

    def pair_loss(self, key_emb: Tensor, key_ids: Tensor, ref_emb: Tensor, ref_ids: Tensor) -> Optional[Tensor]:
        """The loss of one direction of one pair (float32 scalar), or None without a usable query.

        Args:
            key_emb: float [L, D]; key_ids: int64 [L]; ref_emb: float [L', D]; ref_ids: int64 [L'].
        """
        queries = self.sampler.positives(key_ids)
        ref_pos = self.sampler.positives(ref_ids)
        ref_neg = self.sampler.negatives(ref_ids, ref_pos.numel())
        keys = torch.cat([ref_pos, ref_neg])
        if queries.numel() == 0 or ref_pos.numel() == 0:
            return None
        v, k = key_emb[queries].float(), ref_emb[keys].float()
        positive = key_ids[queries][:, None] == ref_ids[keys][None, :]
        valid = positive.any(dim=1)
        if not valid.any():
            return None
        loss = self.embed_weight * multi_positive_loss(v @ k.T / self.temperature, positive)[valid].mean()
        if self.aux_weight > 0:
            cosine = F.normalize(v, dim=1) @ F.normalize(k, dim=1).T
            loss = loss + self.aux_weight * auxiliary_cosine_loss(
                cosine, positive, self.pos_margin, self.neg_margin, self.aux_neg_pos_ub, self.hard_mining)
        return loss


def _check_dense(embeddings: Tensor, identities: Tensor, what: str) -> None:
    if embeddings.dim() != 3 or not embeddings.is_floating_point():
        raise CrossVISError(f"contrastive_embedding: {what} embeddings must be float [B, L, D], "
                            f"got {embeddings.dtype} {tuple(embeddings.shape)}")
    if identities.shape != embeddings.shape[:2] or identities.is_floating_point():
        raise CrossVISError(f"contrastive_embedding: {what} identities must be int64 [B, L] = "
                            f"{tuple(embeddings.shape[:2])}, got {identities.dtype} {tuple(identities.shape)}")
