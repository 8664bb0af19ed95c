"""Deep Layer Aggregation (DLA, Yu et al. 2018) backbone; DLA-34 is the CrossVIS-Lite backbone.

The network follows the ucbdrive DLA-34 used by AdelaiDet: a 7x7 stride-1 base layer, two plain
conv levels (level0 stride 1, level1 stride 2) and four aggregation trees (level2..level5, each
stride 2) of basic residual blocks, with levels (1, 1, 1, 2, 2, 1) and channels
(16, 32, 64, 128, 256, 512). Level ``i`` has stride ``2**i``.

Submodule names equal the official ones (``base_layer.0``, ``level0.0``, ``level2.tree1.conv1``,
``level2.root.conv``, ``level2.project.0``, ``level3.tree1.tree1.conv1`` …), so AdelaiDet/ucbdrive
state dicts load without renaming.

Two deliberate details:
- The max-pool that strides a tree's shortcut uses ``ceil_mode=True`` so that it agrees with the
  stride-2 3x3 convolution on odd sizes; on even sizes (every input padded to a multiple of 32) it
  is identical to the reference.
- In a tree of depth > 1 (level3, level4) the reference builds a shortcut projection (``project``)
  whose output is never used, because the inner tree computes its own. It is kept so checkpoints and
  parameter counts match, and its parameters are set ``requires_grad=False`` so that
  DistributedDataParallel does not see unused trainable parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.backbones.base import Backbone
from crossvis.backbones.norm import check_norm, get_norm
from crossvis.structures import CrossVISError, ShapeSpec

__all__ = ["DLA", "dla34", "DLA_LEVELS"]

#: Output names, fine to coarse; level ``i`` has stride ``2**i``.
DLA_LEVELS: tuple[str, ...] = tuple(f"level{i}" for i in range(6))


class BasicBlock(nn.Module):
    """Two 3x3 conv + norm layers with a residual sum: relu(bn2(conv2(relu(bn1(conv1(x))))) + r)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = get_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = get_norm(norm, out_channels)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """x: float [B, Cin, H, W]; residual: float [B, Cout, H', W'] (defaults to x)."""
        residual = x if residual is None else residual
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + residual)


class Root(nn.Module):
    """Aggregation node: relu(norm(conv1x1(concat(children)))) (no residual, as in DLA-34)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = get_norm(norm, out_channels)

    def forward(self, children: list[Tensor]) -> Tensor:
        """children: float maps [B, Ci, H, W] of equal size; returns float [B, Cout, H, W]."""
        return F.relu(self.bn(self.conv(torch.cat(children, dim=1))))


class Tree(nn.Module):
    """A hierarchical aggregation tree of ``2**depth`` basic blocks.

    A depth-1 tree runs two blocks and aggregates them, plus the ``children`` handed down by its
    parent, in a :class:`Root`. A deeper tree is two subtrees; the first one's output becomes a
    child of the second one's root. With ``level_root`` the strided input (``bottom``) is also
    aggregated.

    Args:
        depth: tree depth ≥ 1.
        in_channels, out_channels: channels of the input and of the output.
        stride: stride of the first block (1 or 2).
        norm: see :func:`crossvis.backbones.norm.get_norm`.
        child_channels: total channels of the children the parent passes to ``forward``.
        level_root: aggregate the (strided) input too.
    """

    def __init__(self, depth: int, in_channels: int, out_channels: int, stride: int, norm: str,
                 child_channels: int = 0, level_root: bool = False) -> None:
        super().__init__()
        self.depth, self.level_root = depth, level_root
        root_children = child_channels + (in_channels if level_root else 0)
        if depth == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride, norm)
            self.tree2 = BasicBlock(out_channels, out_channels, 1, norm)
            self.root = Root(2 * out_channels + root_children, out_channels, norm)
        else:
            self.tree1 = Tree(depth - 1, in_channels, out_channels, stride, norm)
            self.tree2 = Tree(depth - 1, out_channels, out_channels, 1, norm,
                              child_channels=root_children + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride=stride, ceil_mode=True) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                         get_norm(norm, out_channels))
            if depth > 1:  # kept for checkpoint compatibility; its output is never used
                self.project.requires_grad_(False)

    def forward(self, x: Tensor, children: Sequence[Tensor] = ()) -> Tensor:
        """x: float [B, Cin, H, W] -> float [B, Cout, ceil(H / stride), ceil(W / stride)]."""
        children = list(children)
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.depth == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root([x2, x1, *children])
        x1 = self.tree1(x)
        return self.tree2(x1, children + [x1])


class DLA(Backbone):
    """DLA feature extractor returning the maps of the requested levels.

    Args:
        levels: six numbers: convs in level0 and level1, then the tree depths of level2..level5.
        channels: output channels of level0..level5.
        norm: ``"BN"`` (reference), ``"FrozenBN"`` or ``"GN"``.
        out_features: names of the returned levels, a subset of ``("level0", …, "level5")``;
            levels after the last requested one are not built.
        stem_stride: 1 (reference) or 2. With 2 the base layer strides by 2 and level1 by 1, so
            the base layer and level0 run at half resolution (a quarter of their cost) and level0
            has stride 2; level1..level5 keep their strides and every parameter keeps its shape.
            For small models trained from scratch, where the two full-resolution layers are a
            third of a training step.

    The defaults are DLA-34 (15,270,832 parameters with all levels).
    """

    def __init__(self, levels: Sequence[int] = (1, 1, 1, 2, 2, 1),
                 channels: Sequence[int] = (16, 32, 64, 128, 256, 512), norm: str = "BN",
                 out_features: Sequence[str] = ("level3", "level4", "level5"),
                 stem_stride: int = 1) -> None:
        super().__init__()
        check_norm(norm, "DLA")
        levels, channels = tuple(levels), tuple(channels)
        if len(levels) != 6 or len(channels) != 6 or min(levels + channels) < 1:
            raise CrossVISError(f"DLA: levels and channels need six positive integers each, "
                                f"got levels={list(levels)} channels={list(channels)}")
        if stem_stride not in (1, 2):
            raise CrossVISError(f"DLA: stem_stride must be 1 or 2, got {stem_stride!r}")
        self._out_features = _check_out_features(out_features)
        num_levels = 1 + max(DLA_LEVELS.index(n) for n in self._out_features)

        self.base_layer = nn.Sequential(nn.Conv2d(3, channels[0], 7, stride=stem_stride, padding=3, bias=False),
                                        get_norm(norm, channels[0]), nn.ReLU(inplace=True))
        in_channels = channels[0]
        for i in range(num_levels):
            if i < 2:
                stride = 2 if i == 1 and stem_stride == 1 else 1  # level1 is at stride 2 either way
                level = _conv_level(in_channels, channels[i], levels[i], stride=stride, norm=norm)
            else:
                level = Tree(levels[i], in_channels, channels[i], stride=2, norm=norm,
                             level_root=i > 2)
            setattr(self, f"level{i}", level)
            in_channels = channels[i]
        self._shapes = {f"level{i}": ShapeSpec(channels=channels[i], stride=max(2 ** i, stem_stride))
                        for i in range(num_levels)}
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x: float [B, 3, H, W] normalised images.

        Returns:
            dict name -> float [B, C, ceil(H / stride), ceil(W / stride)] for each of
            ``out_features``, fine to coarse.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise CrossVISError(f"DLA: expected images of shape [B, 3, H, W], got {tuple(x.shape)}")
        x = self.base_layer(x)
        outputs = {}
        for name in self._shapes:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def dla34(norm: str = "BN", out_features: Sequence[str] = ("level3", "level4", "level5")) -> DLA:
    """DLA-34 (levels 1,1,1,2,2,1; channels 16..512; basic blocks), the CrossVIS-Lite backbone."""
    return DLA(norm=norm, out_features=out_features)


def _conv_level(in_channels: int, out_channels: int, num_convs: int, stride: int,
                norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j in range(num_convs):
        layers += [nn.Conv2d(in_channels if j == 0 else out_channels, out_channels, 3,
                             stride=stride if j == 0 else 1, padding=1, bias=False),
                   get_norm(norm, out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _check_out_features(out_features: Sequence[str]) -> tuple[str, ...]:
    names = tuple(out_features) if not isinstance(out_features, str) else (out_features,)
    unknown = [n for n in names if n not in DLA_LEVELS]
    if not names or unknown:
        raise CrossVISError(f"DLA: out_features must be a non-empty subset of "
                            f"{', '.join(DLA_LEVELS)}; got {list(names)}")
    return tuple(n for n in DLA_LEVELS if n in names)
