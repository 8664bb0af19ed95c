"""The FCOS head of CondInst/CrossVIS, shared across FPN levels.

Module names follow the official AdelaiDet layout so checkpoints map one-to-one:
``cls_tower.{0,3,6,9}`` convs and ``{1,4,7,10}`` GroupNorms, ``cls_logits``, ``bbox_pred``,
``ctrness``, ``scales.{l}.scale``; the optional embedding branch (official ``reid_*``) is
``embed_tower``, ``embed_pred`` and ``embed_norm``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.heads.sampled import conv2d_at_locations
from crossvis.structures import CrossVISError, ShapeSpec

__all__ = ["Scale", "FCOSHead", "FCOSHeadOutputs", "conv_tower"]


@dataclass
class FCOSHeadOutputs:
    """What :meth:`FCOSHead.forward` returns: one entry per input level, fine → coarse.

    For a level of size [B, 256, h, w] (256 = the neck's channels; float32, or the autocast dtype):

    Attributes:
        cls_logits: float [B, C, h, w] classification logits.
        bbox_reg: float [B, 4, h, w] (l, t, r, b) distances in units of the level stride, ≥ 0.
        ctrness: float [B, 1, h, w] centerness logits.
        bbox_features: float [B, 256, h, w] box-tower output (the CondInst controller's input).
        embeddings: float [B, D, h, w] identity embeddings (embedding tower, dense mode), else None.
        embed_features: float [B, 256, h, w] embedding-tower output before the projection
            (embedding tower, ``dense_embeddings=False``), else None.
    """

    cls_logits: list[Tensor]
    bbox_reg: list[Tensor]
    ctrness: list[Tensor]
    bbox_features: list[Tensor]
    embeddings: Optional[list[Tensor]] = None
    embed_features: Optional[list[Tensor]] = None


class Scale(nn.Module):
    """A learnable scalar multiplier (one per FPN level for box regression)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def conv_tower(channels: int, num_convs: int, norm: str) -> nn.Sequential:
    """``num_convs`` × [3×3 conv (bias) + norm + ReLU] at constant width ``channels``.

    ``norm`` is ``"GN"`` (32 groups) or ``"none"``; with ``"none"`` the Sequential indices are
    conv/ReLU pairs instead of conv/GN/ReLU triples.
    """
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=True))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, channels))
        elif norm != "none":
            raise CrossVISError(f"head norm {norm!r} is not supported; use 'GN' or 'none'")
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """FCOS prediction head applied with shared weights to every feature level.

    Towers: ``cls_tower`` feeds ``cls_logits``; ``bbox_tower`` feeds ``bbox_pred`` and ``ctrness``
    and is returned so a CondInst controller can run on it; an optional ``embed_tower`` feeds a
    1×1 conv + BatchNorm2d producing a per-location identity embedding (CrossVIS).

    Args:
        input_shape: the neck's outputs, ``{name: ShapeSpec}`` ordered fine → coarse (injected).
        num_classes: number of object categories C (injected from the data).
        in_features: names of the levels to use; default all of ``input_shape`` in order.
        num_convs: convolutions per tower (official 4).
        norm: ``"GN"`` (official) or ``"none"``.
        prior_prob: initial foreground probability for the classification bias.
        embed_dim: size D of the identity embedding; ``None`` (CondInst) builds no embedding tower.

    Shapes: for an input level of size [B, 256, h, w] the outputs are ``cls_logits`` [B, C, h, w],
    ``bbox_reg`` [B, 4, h, w] (ReLU(scale·x), distances in units of the level stride),
    ``ctrness`` [B, 1, h, w], ``bbox_features`` [B, 256, h, w] and ``embeddings`` [B, D, h, w].
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], num_classes: int,
                 in_features: Optional[Sequence[str]] = None, num_convs: int = 4, norm: str = "GN",
                 prior_prob: float = 0.01, embed_dim: Optional[int] = None) -> None:
        super().__init__()
        self.in_features = list(in_features) if in_features is not None else list(input_shape)
        missing = [f for f in self.in_features if f not in input_shape]
        if missing:
            raise CrossVISError(f"head.in_features {missing} are not produced by the neck "
                                f"(it gives {list(input_shape)}); fix head.in_features in the recipe")
        channels = {input_shape[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise CrossVISError(f"the FCOS head is shared across levels and needs equal channels, "
                                f"got {sorted(channels)} for {self.in_features}; set neck.out_channels")
        (in_channels,) = channels
        if num_classes is None or int(num_classes) < 1:
            raise CrossVISError("head.num_classes is missing: it is taken from the training data "
                                "(data.train) or set model.num_classes in the recipe")
        self.num_classes = int(num_classes)
        self.strides = [input_shape[f].stride for f in self.in_features]
        self.embed_dim = embed_dim

        self.cls_tower = conv_tower(in_channels, num_convs, norm)
        self.bbox_tower = conv_tower(in_channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, self.num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.in_features)
        if embed_dim is not None:
            self.embed_tower = conv_tower(in_channels, num_convs, norm)
            self.embed_pred = nn.Conv2d(in_channels, int(embed_dim), kernel_size=1)
            self.embed_norm = nn.BatchNorm2d(int(embed_dim))
        self.out_channels = in_channels
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor], dense_embeddings: bool = True) -> FCOSHeadOutputs:
        """Run the head on each level.

        Args:
            features: one float tensor [B, 256, h_l, w_l] per level of ``in_features``.
            dense_embeddings: with an embedding tower, return the embedding of every location
                (``embeddings``); ``False`` returns the tower output ``embed_features``
                [B, 256, h, w] instead, for :meth:`embeddings_at` on chosen locations (inference).

        Returns:
            the per-level maps, see :class:`FCOSHeadOutputs`.
        """
        if len(features) != len(self.scales):
            raise ValueError(f"FCOSHead built for {len(self.scales)} levels got {len(features)}")
        out = FCOSHeadOutputs(cls_logits=[], bbox_reg=[], ctrness=[], bbox_features=[])
        embedded: Optional[list[Tensor]] = [] if self.embed_dim is not None else None
        for level, feature in enumerate(features):
            cls_feat = self.cls_tower(feature)
            bbox_feat = self.bbox_tower(feature)
            out.cls_logits.append(self.cls_logits(cls_feat))
            out.bbox_reg.append(torch.relu(self.scales[level](self.bbox_pred(bbox_feat))))
            out.ctrness.append(self.ctrness(bbox_feat))
            out.bbox_features.append(bbox_feat)
            if embedded is not None:
                embed_feat = self.embed_tower(feature)
                if dense_embeddings:
                    embed_feat = self.embed_norm(self.embed_pred(embed_feat))
                embedded.append(embed_feat)
        if dense_embeddings:
            out.embeddings = embedded
        else:
            out.embed_features = embedded
        return out

    def embeddings_at(self, embed_features: Tensor, index: Tensor) -> Tensor:
        """Embeddings at chosen locations of one image's level.

        Args:
            embed_features: [256, h, w] the embedding tower output (``forward(...,
                dense_embeddings=False).embed_features[level][image]``).
            index: int64 [K] row-major locations.

        Returns:
            [K, D], equal to the dense ``embeddings`` read at ``index`` up to float rounding.
        """
        projected = conv2d_at_locations(self.embed_pred, embed_features, index)
        return self.embed_norm(projected[:, :, None, None])[:, :, 0, 0]
