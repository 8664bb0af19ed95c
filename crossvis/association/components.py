"""Registers the contrastive association components through the plugin hook."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from crossvis.association.combined import WeightedEmbeddingLoss
from crossvis.association.contrastive import ContrastiveEmbeddingLoss
from crossvis.association.memory_bank import MemoryBankTracker
from crossvis.errors import CrossVISError
from crossvis.hookspecs import hookimpl


def weighted_embedding_sum(losses: Sequence[Mapping[str, Any]], weights: Optional[Sequence[float]] = None,
                           num_identities: Optional[int] = None) -> WeightedEmbeddingLoss:
    """Recipe factory: ``{type: weighted_embedding_sum, losses: [loss node, ...], weights: [w, ...]}``.

    Each member node is built from the registry (kind ``loss``); ``num_identities`` is passed on to
    the members that accept it.
    """
    from crossvis.recipes import build

    if not isinstance(losses, (list, tuple)) or not losses:
        raise CrossVISError("weighted_embedding_sum: 'losses' must be a list of loss nodes like "
                            "[{type: global_focal_embedding}, {type: contrastive_embedding}]")
    inject = {} if num_identities is None else {"num_identities": num_identities}
    built = [build("loss", node, where=f"weighted_embedding_sum.losses[{i}]", **inject)
             for i, node in enumerate(losses)]
    return WeightedEmbeddingLoss(built, weights)


@hookimpl
def crossvis_register_components(registry) -> None:
    registry.register("loss", "contrastive_embedding", ContrastiveEmbeddingLoss)
    registry.register("loss", "weighted_embedding_sum", weighted_embedding_sum)
    registry.register("tracker", "memory_bank", MemoryBankTracker)
