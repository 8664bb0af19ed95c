"""Fold inference-mode batch norms into the convolutions before them.

In eval mode a batch norm (``nn.BatchNorm2d`` with running statistics, or torchvision's
``FrozenBatchNorm2d`` of the ResNet backbones) is a per-channel affine map ``y = s·x + t`` with
``s = γ / sqrt(var + eps)`` and ``t = β − s·mean``. Right after a convolution it can be merged
into that convolution: ``W' = s·W``, ``b' = s·b + t``. The backbone then skips one full pass over
every feature map per norm (53 in ResNet-50: ~5% of its CPU time at 360×640). The numbers are the
same up to float rounding.

Only the norm directly after a convolution is folded, found by the wiring the backbones use:
children ``convK`` → ``bnK`` / ``conv`` → ``bn`` of one module (torchvision's ResNet blocks and
stem, DLA's blocks and roots) and consecutive ``Conv2d`` → norm children of an ``nn.Sequential``
(ResNet's downsample, DLA's base layer and projections). :func:`fold_batchnorm` checks the folded
module against the original on a test input and the caller keeps the original when they differ.
"""
from __future__ import annotations

import copy
import logging
from typing import Union

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["fold_batchnorm", "folded_copy"]

logger = logging.getLogger(__name__)

Norm = Union[nn.BatchNorm2d, FrozenBatchNorm2d]


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return isinstance(module, nn.BatchNorm2d) and not module.training and module.track_running_stats


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and _is_norm(norm) and conv.out_channels == norm.weight.shape[0]
            and conv.padding_mode == "zeros")


def _fold_into(conv: nn.Conv2d, norm: Norm) -> None:
    """``conv`` followed by ``norm``, as one convolution (in place)."""
    with torch.no_grad():
        eps = norm.eps
        scale = norm.weight / torch.sqrt(norm.running_var + eps)
        shift = norm.bias - norm.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode batch norm that follows a convolution into it, in place.

    Returns:
        how many norms were folded (each is replaced by ``nn.Identity``).
    """
    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        pairs = []
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs += [(a, b) for a, b in zip(names, names[1:])]
        for name in children:
            if name.startswith("bn"):
                pairs.append(("conv" + name[2:], name))
        for conv_name, norm_name in pairs:
            conv, norm = children.get(conv_name), children.get(norm_name)
            if conv is not None and norm is not None and _foldable(conv, norm):
                _fold_into(conv, norm)
                setattr(parent, norm_name, nn.Identity())
                children[norm_name] = parent._modules[norm_name]
                folded += 1
    return folded


def folded_copy(network: nn.Module, example: Tensor, forward=None) -> nn.Module:
    """A copy of ``network`` (in eval mode) with its batch norms folded, or an unfolded copy.

    The folded copy is checked against ``network`` on ``example``: when any output differs by
    more than float rounding (a norm that was not really right after its convolution) the
    unfolded copy is returned and a warning logged.

    Args:
        network: the module to copy (not modified).
        example: an input batch for the check.
        forward: ``forward(module, example) -> tensors`` (default ``module(example)``); the
            outputs may be a tensor, a (nested) sequence or dict of tensors, or ``NetworkOutputs``.
    """
    run = forward if forward is not None else (lambda m, x: m(x))
    original = copy.deepcopy(network).eval()
    folded = copy.deepcopy(network).eval()
    if fold_batchnorm(folded) == 0:
        return original
    with torch.inference_mode():
        expected, got = _tensors(run(original, example)), _tensors(run(folded, example))
    for a, b in zip(expected, got):
        scale = float(a.abs().max()) if a.numel() else 0.0
        if a.shape != b.shape or (a.numel() and float((a - b).abs().max()) > 1e-3 * max(scale, 1.0)):
            logger.warning("folding the batch norms changed the network's outputs; running it unfolded")
            return original
    return folded


def _tensors(outputs) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs]
    if hasattr(outputs, "present"):  # NetworkOutputs
        outputs = outputs.present()
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    flat: list[Tensor] = []
    for item in outputs:
        flat.extend(_tensors(item) if not isinstance(item, Tensor) else [item])
    return flat
