"""Contrastive association: the quasi-dense contrastive embedding loss and the memory-bank tracker.

Example::

    from crossvis.association import ContrastiveEmbeddingLoss, MemoryBankTracker

    loss = ContrastiveEmbeddingLoss()                     # QDTrack defaults, bi-directional (STC)
    value = loss(key_emb, key_ids, ref_emb, ref_ids)      # [B, L, D] embeddings, [B, L] ids (-1 bg)
    tracker = MemoryBankTracker(max_age=10)
    ids = tracker.update(frame_detections)                # int64 [N] track ids, -1 dropped

Registered (kind ``loss``) as ``contrastive_embedding`` and ``weighted_embedding_sum``, and (kind
``tracker``) as ``memory_bank``. The package only plugs in through
``crossvis.association.components``; removing it and its ``BUILTIN_PLUGINS`` line removes it all.
"""
from crossvis.association.combined import WeightedEmbeddingLoss
from crossvis.association.contrastive import ContrastiveEmbeddingLoss, auxiliary_cosine_loss, multi_positive_loss
from crossvis.association.memory_bank import MemoryBankTracker
from crossvis.association.sampling import LocationSampler, instance_balanced_choice

__all__ = ["ContrastiveEmbeddingLoss", "WeightedEmbeddingLoss", "MemoryBankTracker", "LocationSampler",
           "multi_positive_loss", "auxiliary_cosine_loss", "instance_balanced_choice"]
