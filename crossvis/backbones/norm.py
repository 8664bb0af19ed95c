"""Normalisation layers shared by the backbones: BN, FrozenBN (torchvision) and GN.

``"FrozenBN"`` is :class:`torchvision.ops.FrozenBatchNorm2d`: its ``weight``, ``bias``,
``running_mean`` and ``running_var`` (eps 1e-5) are buffers, so it has no parameters and is an
affine map ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval.
"""
from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from crossvis.errors import CrossVISError

__all__ = ["NORMS", "check_norm", "get_norm", "freeze_module"]

#: Accepted values of the ``norm`` argument of every backbone.
NORMS: tuple[str, ...] = ("BN", "FrozenBN", "GN")

#: Number of groups of ``"GN"`` (fewer when a layer has fewer channels, see :func:`get_norm`).
GN_GROUPS = 32


def check_norm(norm: str, owner: str) -> None:
    """Raise :class:`CrossVISError` naming ``owner`` unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        raise CrossVISError(f"{owner}: unknown norm {norm!r}; use one of {', '.join(NORMS)}")


def get_norm(norm: str, channels: int) -> nn.Module:
    """A normalisation layer over ``channels`` channels of an NCHW map.

    Args:
        norm: ``"BN"`` (:class:`torch.nn.BatchNorm2d`), ``"FrozenBN"``
            (:class:`torchvision.ops.FrozenBatchNorm2d`) or ``"GN"`` (:class:`torch.nn.GroupNorm`
            with 32 groups, or one group per channel when the layer has fewer than 32 channels).
        channels: number of channels C.
    """
    check_norm(norm, "get_norm")
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    return nn.GroupNorm(min(GN_GROUPS, channels), channels)


def freeze_module(module: nn.Module) -> nn.Module:
    """Freeze ``module`` and return it, or its replacement when ``module`` is itself a batch norm.

    Every parameter gets ``requires_grad=False`` and every :class:`torch.nn.BatchNorm2d` (the module
    or one inside it) is replaced by a :class:`torchvision.ops.FrozenBatchNorm2d` holding the same
    statistics and affine values, so frozen layers also stop updating their running statistics in
    training mode. Use it as ``self.part = freeze_module(self.part)``.
    """
    if isinstance(module, nn.BatchNorm2d):
        return _to_frozen_bn(module)
    for name, child in module.named_children():
        setattr(module, name, freeze_module(child))
    for p in module.parameters(recurse=False):
        p.requires_grad_(False)
    return module


def _to_frozen_bn(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    if bn.affine:
        frozen.weight.copy_(bn.weight.detach())
        frozen.bias.copy_(bn.bias.detach())
    if bn.track_running_stats:
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen.to(bn.running_mean.device if bn.track_running_stats else bn.weight.device)
