"""ResNet body (no average pool, no classifier) built from :mod:`torchvision.models.resnet`.

Module names are torchvision's (``conv1``, ``bn1``, ``layer1`` … ``layer4``), so torchvision
ImageNet state dicts load directly (minus ``fc.*``); :mod:`crossvis.deploy.official_keys` maps the
detectron2/AdelaiDet names (``stem.conv1``, ``res2`` … ``res5``) onto them. Stage ``layer{k}`` is
output ``res{k+1}``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from crossvis.backbones.base import Backbone
from crossvis.backbones.norm import check_norm, freeze_module, get_norm
from crossvis.structures import CrossVISError, ShapeSpec

__all__ = ["ResNet", "RESNET_STAGES"]

#: Output names of the four residual stages, fine to coarse.
RESNET_STAGES: tuple[str, ...] = ("res2", "res3", "res4", "res5")

_BLOCKS_PER_STAGE: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (tv_resnet.BasicBlock, (2, 2, 2, 2)),
    34: (tv_resnet.BasicBlock, (3, 4, 6, 3)),
    50: (tv_resnet.Bottleneck, (3, 4, 6, 3)),
    101: (tv_resnet.Bottleneck, (3, 4, 23, 3)),
    152: (tv_resnet.Bottleneck, (3, 8, 36, 3)),
}


class ResNet(Backbone):
    """A ResNet feature extractor returning the maps of the requested stages.

    Stages res2, res3, res4, res5 have strides 4, 8, 16, 32 and 256, 512, 1024, 2048 channels
    (bottleneck, depth ≥ 50) or 64, 128, 256, 512 channels (basic block, depth 18/34). Stages after
    the last requested one are not built.

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: ``"FrozenBN"``, ``"BN"`` or ``"GN"`` (see :func:`crossvis.backbones.norm.get_norm`).
        freeze_at: number of leading parts whose parameters get ``requires_grad=False``:
            0 nothing, 1 the stem, 2 stem + res2, … 5 everything. Batch norms inside frozen parts
            become FrozenBN.
        stride_in_1x1: put the stride 2 of the first block of res3/res4/res5 in its 1x1 ``conv1``
            (MSRA/detectron2 weights, e.g. the official CrossVIS checkpoints) instead of the 3x3
            ``conv2`` (torchvision weights). Only for bottleneck ResNets.
        out_features: names of the returned stages, a subset of ``("res2", "res3", "res4", "res5")``.

    Example:
        >>> body = ResNet(depth=50, norm="FrozenBN", freeze_at=2, out_features=("res3", "res4", "res5"))
        >>> {k: tuple(v.shape) for k, v in body(torch.zeros(1, 3, 64, 96)).items()}
        {'res3': (1, 512, 8, 12), 'res4': (1, 1024, 4, 6), 'res5': (1, 2048, 2, 3)}
    """

    def __init__(self, depth: int = 50, norm: str = "FrozenBN", freeze_at: int = 2,
                 stride_in_1x1: bool = False,
                 out_features: Sequence[str] = ("res3", "res4", "res5")) -> None:
        super().__init__()
        if depth not in _BLOCKS_PER_STAGE:
            raise CrossVISError(f"ResNet: unsupported depth {depth!r}; use one of "
                                f"{', '.join(map(str, _BLOCKS_PER_STAGE))}")
        check_norm(norm, "ResNet")
        if isinstance(freeze_at, bool) or not isinstance(freeze_at, int) or not 0 <= freeze_at <= 5:
            raise CrossVISError(f"ResNet: freeze_at must be an integer 0..5 "
                                f"(0 = train everything, 2 = freeze stem and res2), got {freeze_at!r}")
        self._out_features = _check_out_features(out_features)
        block, blocks_per_stage = _BLOCKS_PER_STAGE[depth]
        if stride_in_1x1 and block is not tv_resnet.Bottleneck:
            raise CrossVISError(f"ResNet: stride_in_1x1 needs a bottleneck ResNet (depth 50/101/152), "
                                f"depth {depth} has no 1x1 convolutions; set stride_in_1x1: false")

        net = tv_resnet.ResNet(block, list(blocks_per_stage), norm_layer=lambda c: get_norm(norm, c))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        num_stages = 1 + max(RESNET_STAGES.index(name) for name in self._out_features)
        self._stage_names = RESNET_STAGES[:num_stages]
        for i in range(num_stages):
            layer = getattr(net, f"layer{i + 1}")
            if stride_in_1x1 and i > 0:
                _move_stride_to_1x1(layer[0])
            setattr(self, f"layer{i + 1}", layer)

        width = 64 * block.expansion
        self._shapes = {name: ShapeSpec(channels=width * 2 ** i, stride=4 * 2 ** i)
                        for i, name in enumerate(self._stage_names)}
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        """Freeze the stem (``freeze_at >= 1``) and the first ``freeze_at - 1`` built stages."""
        if freeze_at >= 1:
            self.conv1 = freeze_module(self.conv1)
            self.bn1 = freeze_module(self.bn1)
        for i in range(min(freeze_at - 1, len(self._stage_names))):
            name = f"layer{i + 1}"
            setattr(self, name, freeze_module(getattr(self, name)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x: float [B, 3, H, W] normalised images (any H, W ≥ 1).

        Returns:
            dict name -> float [B, C, ceil(H / stride), ceil(W / stride)] for each of
            ``out_features``, fine to coarse.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise CrossVISError(f"ResNet: expected images of shape [B, 3, H, W], got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = {}
        for i, name in enumerate(self._stage_names):
            x = getattr(self, f"layer{i + 1}")(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def _check_out_features(out_features: Sequence[str]) -> tuple[str, ...]:
    names = tuple(out_features) if not isinstance(out_features, str) else (out_features,)
    unknown = [n for n in names if n not in RESNET_STAGES]
    if not names or unknown:
        raise CrossVISError(f"ResNet: out_features must be a non-empty subset of "
                            f"{', '.join(RESNET_STAGES)}; got {list(names)}")
    return tuple(n for n in RESNET_STAGES if n in names)


def _move_stride_to_1x1(block: nn.Module) -> None:
    """MSRA layout: the first bottleneck of a stage strides in conv1 (1x1), not conv2 (3x3)."""
    stride = block.conv2.stride
    block.conv1.stride, block.conv2.stride = stride, (1, 1)
