"""A weighted sum of identity-embedding losses (e.g. CrossVIS's GBE + the contrastive loss).

The model hands a dense loss every location of both frames of each pair (``dense_inputs``); this
module turns that into what each member expects:

* dense members (``dense_inputs = True``, e.g. :class:`ContrastiveEmbeddingLoss`) get it as is;
* proxy members (``requires_proxies``, e.g. the global balanced embedding) get the positive
  locations of all frames, key frames first, with their identities and the model's proxies
  (exactly what the model passes them directly);
* pair-wise members get the key and reference positives with their pair index.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.errors import CrossVISError

__all__ = ["WeightedEmbeddingLoss"]


class WeightedEmbeddingLoss(nn.Module):
    """``L = Σ_j w_j L_j`` over built embedding losses.

    Args:
        losses: the member losses (modules).
        weights: one non-negative weight per member (default all 1).
    """

    dense_inputs = True

    def __init__(self, losses: Sequence[nn.Module], weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        if not losses:
            raise CrossVISError("weighted_embedding_sum: 'losses' needs at least one embedding loss node")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses) or any(w < 0 for w in weights):
            raise CrossVISError(f"weighted_embedding_sum: 'weights' must be {len(losses)} non-negative numbers, "
                                f"got {weights}")
        self.members = nn.ModuleList(losses)
        self.weights = weights
        self.requires_proxies = any(getattr(m, "requires_proxies", False) for m in losses)

    def forward(self, anchor_embeddings: Tensor, anchor_identities: Tensor, reference_embeddings: Tensor,
                reference_identities: Tensor, proxies: Optional[nn.Module] = None) -> Tensor:
        """Same inputs as :meth:`ContrastiveEmbeddingLoss.forward` (float [B, L, D] embeddings,
        int64 [B, L] identities with −1 background); ``proxies`` is the model's identity
        classifier when a member needs it. Returns a float32 scalar."""
        total = anchor_embeddings.new_zeros((), dtype=torch.float32)
        for weight, member in zip(self.weights, self.members):
            if getattr(member, "dense_inputs", False):
                value = member(anchor_embeddings, anchor_identities, reference_embeddings, reference_identities,
                               proxies=proxies)
            elif getattr(member, "requires_proxies", False):
                if proxies is None:
                    raise CrossVISError(f"weighted_embedding_sum: {type(member).__name__} needs the model's identity "
                                        f"proxies; the model must be built with num_identities")
                emb_a, ids_a, _ = _positives(anchor_embeddings, anchor_identities)
                emb_r, ids_r, _ = _positives(reference_embeddings, reference_identities)
                value = member(torch.cat([emb_a, emb_r]), torch.cat([ids_a, ids_r]), proxies)
            else:
                (emb_a, ids_a, grp_a) = _positives(anchor_embeddings, anchor_identities)
                (emb_r, ids_r, grp_r) = _positives(reference_embeddings, reference_identities)
                value = member(emb_a, ids_a, emb_r, ids_r, grp_a, grp_r)
            total = total + weight * value
        return total


def _positives(embeddings: Tensor, identities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Embeddings float [P, D], identities int64 [P] and pair index int64 [P] of the positive locations."""
    mask = identities >= 0
    groups = torch.arange(identities.shape[0], device=identities.device)[:, None].expand_as(identities)
    return embeddings[mask], identities[mask], groups[mask]
