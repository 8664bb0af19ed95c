"""The typed outputs that travel between the network, the criterion and the post-processor."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Optional, Union

from torch import Tensor

__all__ = ["NetworkOutputs"]


@dataclass
class NetworkOutputs:
    """Raw predictions of :class:`~crossvis.models.network.CondInstNetwork` for a padded batch.

    For an input batch float32 [B, 3, H, W] every per-level field is a list with one tensor per
    head level l (fine → coarse, stride s_l, map size h_l × w_l = H/s_l × W/s_l). Tensors are
    float32, or the autocast dtype inside an autocast region (the fast path casts them back).

    Always present:
        cls_logits: per level [B, C, h_l, w_l] classification logits.
        bbox_reg: per level [B, 4, h_l, w_l] (l, t, r, b) distances in units of s_l, ≥ 0.
        ctrness: per level [B, 1, h_l, w_l] centerness logits.
        mask_feats: [B, 8, H/8, W/8] mask-branch features (stride 8).

    Dense outputs (``network(images)``: training, export):
        controller: per level [B, P, h_l, w_l] dynamic mask-head parameters (P = 169 officially).
        embeddings: per level [B, D, h_l, w_l] identity embeddings (heads with ``embed_dim``).

    Sparse outputs (``network(images, dense=False)``: inference), read at the kept locations
    with ``CondInstNetwork.at_locations``:
        bbox_features: per level [B, 256, h_l, w_l] box-tower features (the controller's input).
        embed_features: per level [B, 256, h_l, w_l] embedding-tower features (heads with ``embed_dim``).

    A field that does not apply is None.
    """

    cls_logits: list[Tensor]
    bbox_reg: list[Tensor]
    ctrness: list[Tensor]
    mask_feats: Tensor
    controller: Optional[list[Tensor]] = None
    embeddings: Optional[list[Tensor]] = None
    bbox_features: Optional[list[Tensor]] = None
    embed_features: Optional[list[Tensor]] = None

    @property
    def num_levels(self) -> int:
        return len(self.cls_logits)

    @property
    def has_embeddings(self) -> bool:
        """Whether the network has an embedding tower (dense or sparse)."""
        return self.embeddings is not None or self.embed_features is not None

    def present(self) -> dict[str, Union[Tensor, list[Tensor]]]:
        """The fields that are not None, by name (declaration order)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def map(self, fn: Callable[[Tensor], Tensor]) -> "NetworkOutputs":
        """A copy with ``fn`` applied to every tensor (e.g. ``lambda t: t.float()``)."""
        return replace(self, **{name: [fn(t) for t in value] if isinstance(value, list) else fn(value)
                                for name, value in self.present().items()})

    def select(self, items: slice) -> "NetworkOutputs":
        """The outputs of batch items ``items`` (every map sliced along its first dimension)."""
        return self.map(lambda t: t[items])

