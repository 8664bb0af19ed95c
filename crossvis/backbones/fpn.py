"""Feature Pyramid Network neck with FCOS-style extra levels (P6, P7).

Layout of the official CrossVIS/AdelaiDet ``build_fcos_resnet_fpn_backbone``: a 1x1 lateral and a 3x3
output convolution per input level (with bias, no norm), nearest-neighbour top-down upsampling
fused by sum, then ``top_levels`` extra stride-2 3x3 convolutions: the first on P5 (or on C5), each
further one on the ReLU of the previous. Output ``p{k}`` has stride ``2**k``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.structures import CrossVISError, ShapeSpec

__all__ = ["FPN", "c2_xavier_fill"]


def c2_xavier_fill(conv: nn.Conv2d) -> nn.Conv2d:
    """Caffe2 "XavierFill" as in detectron2: weight ~ kaiming_uniform(a=1), bias 0. Returns ``conv``."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """Feature pyramid on backbone maps, plus extra coarser levels.

    Args:
        input_shape: the backbone's ``output_shape()`` (injected by the recipe builder).
        in_features: backbone maps to use, fine to coarse, e.g. ``("res3", "res4", "res5")``;
            their strides must be powers of two, each twice the previous.
        out_channels: channels of every output map.
        top_levels: number of extra stride-2 levels after the coarsest input (2 → P6, P7).
        top_block_input: ``"p5"`` to compute the first extra level from the coarsest FPN output
            (CrossVIS/FCOS), ``"c5"`` to compute it from the coarsest backbone map (RetinaNet).

    Outputs are named ``p{log2(stride)}``: on ResNet res3–res5 with ``top_levels=2`` they are
    ``p3`` … ``p7`` with strides 8 … 128.
    """

    def __init__(self, input_shape: Mapping[str, ShapeSpec],
                 in_features: Sequence[str] = ("res3", "res4", "res5"), out_channels: int = 256,
                 top_levels: int = 2, top_block_input: str = "p5") -> None:
        super().__init__()
        self.in_features = _check_in_features(input_shape, in_features)
        if top_block_input not in ("p5", "c5"):
            raise CrossVISError(f"FPN: top_block_input must be 'p5' (coarsest FPN output) or 'c5' "
                                f"(coarsest backbone map), got {top_block_input!r}")
        if isinstance(top_levels, bool) or not isinstance(top_levels, int) or top_levels < 0:
            raise CrossVISError(f"FPN: top_levels must be an integer >= 0, got {top_levels!r}")
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise CrossVISError(f"FPN: out_channels must be a positive integer, got {out_channels!r}")
        self.top_block_input = top_block_input

        strides = [input_shape[f].stride for f in self.in_features]
        names = [f"p{s.bit_length() - 1}" for s in strides]
        self.lateral = nn.ModuleDict()
        self.output = nn.ModuleDict()
        for feature, name in zip(self.in_features, names):
            self.lateral[name] = c2_xavier_fill(nn.Conv2d(input_shape[feature].channels, out_channels, 1))
            self.output[name] = c2_xavier_fill(nn.Conv2d(out_channels, out_channels, 3, padding=1))

        self.top_block = nn.ModuleDict()
        top_in = out_channels if top_block_input == "p5" else input_shape[self.in_features[-1]].channels
        level = int(names[-1][1:])
        for i in range(top_levels):
            level += 1
            self.top_block[f"p{level}"] = c2_xavier_fill(
                nn.Conv2d(top_in if i == 0 else out_channels, out_channels, 3, stride=2, padding=1))

        self._shapes = {n: ShapeSpec(channels=out_channels, stride=s) for n, s in zip(names, strides)}
        for name in self.top_block:
            self._shapes[name] = ShapeSpec(channels=out_channels, stride=2 ** int(name[1:]))

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every output map, fine to coarse."""
        return dict(self._shapes)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """
        Args:
            features: backbone maps by name; ``in_features`` are used (others are ignored),
                float [B, C_i, H_i, W_i].

        Returns:
            dict ``p{k}`` -> float [B, out_channels, h_k, w_k], fine to coarse. FPN levels keep their
            input's size; each extra level is ``ceil(size / 2)`` of the previous one.
        """
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise CrossVISError(f"FPN: backbone outputs lack {missing}; it returned {list(features)}. "
                                f"Add them to the backbone's out_features")
        names = list(self.lateral)
        outputs: dict[str, Tensor] = {}
        top_down = self.lateral[names[-1]](features[self.in_features[-1]])
        outputs[names[-1]] = self.output[names[-1]](top_down)
        for feature, name in zip(reversed(self.in_features[:-1]), reversed(names[:-1])):
            lateral = self.lateral[name](features[feature])
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            outputs[name] = self.output[name](top_down)

        x = outputs[names[-1]] if self.top_block_input == "p5" else features[self.in_features[-1]]
        for i, (name, conv) in enumerate(self.top_block.items()):
            x = conv(x if i == 0 else F.relu(x))
            outputs[name] = x
        return {name: outputs[name] for name in self._shapes}


def _check_in_features(input_shape: Mapping[str, ShapeSpec], in_features: Sequence[str]) -> tuple[str, ...]:
    names = tuple(in_features) if not isinstance(in_features, str) else (in_features,)
    missing = [n for n in names if n not in input_shape]
    if not names or missing:
        raise CrossVISError(f"FPN: in_features {list(names)} must be non-empty names of the backbone's "
                            f"outputs {list(input_shape)}; set the backbone's out_features or the "
                            f"neck's in_features to match")
    strides = [input_shape[n].stride for n in names]
    if any(s < 1 or s & (s - 1) for s in strides) or any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise CrossVISError(f"FPN: in_features {list(names)} must be ordered fine to coarse with "
                            f"power-of-two strides doubling each level; their strides are {strides}")
    return names
