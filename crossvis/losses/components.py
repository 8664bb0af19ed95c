"""Registers the losses with the crossvis registry (kind ``loss``)."""
from crossvis.losses.embedding import GlobalFocalEmbeddingLoss, GlobalSoftmaxEmbeddingLoss, PairwiseEmbeddingLoss
from crossvis.losses.fcos import FCOSLoss
from crossvis.hookspecs import hookimpl


@hookimpl
def crossvis_register_components(registry):
    registry.register("loss", "fcos", FCOSLoss)
    registry.register("loss", "global_focal_embedding", GlobalFocalEmbeddingLoss)
    registry.register("loss", "global_softmax_embedding", GlobalSoftmaxEmbeddingLoss)
    registry.register("loss", "pairwise_embedding", PairwiseEmbeddingLoss)
