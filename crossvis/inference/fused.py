"""Convolutions run by oneDNN with their activation fused in and their weights packed once (CPU).

Eager PyTorch runs ``Conv2d`` → ``ReLU`` as two passes over the output map, reorders a
channels-last weight into oneDNN's blocked layout on every call, and sends small maps (the FPN's
P6/P7, 6×10 and 3×5 at 360×640) to a slow im2col kernel. :func:`fuse_for_inference` rewrites an
inference copy of a network so that every ``nn.Conv2d`` calls
``torch.ops.mkldnn._convolution_pointwise`` — the oneDNN op Inductor emits for frozen CPU graphs —
with the weight reordered once (:class:`FusedConv2d`), the ReLU after a convolution fused into it,
and a residual block's ``relu(conv(x) + identity)`` as one call with a fused sum. The numbers are
the convolutions' own up to float summation order.

Which modules are fused (the wiring of the built-in parts; anything else keeps its own forward,
with each of its ``nn.Conv2d`` replaced one for one):

* ``nn.Sequential`` children ``Conv2d`` [``Identity`` …] ``ReLU`` (folded conv-BN-ReLU stacks: DLA's
  base, the mask branch); the ``ReLU`` after a ``GroupNorm`` (the FCOS towers) runs in place;
* torchvision's ResNet ``Bottleneck`` / ``BasicBlock`` and DLA's ``BasicBlock`` / ``Root`` whose
  batch norms were folded (:mod:`crossvis.inference.fold`), and the ResNet stem.

Input maps must be channels-last in the network's dtype (the backends convert the batch); the
weights are packed for the input sizes of an example batch (a different size still runs, at the
cost of a reorder per call). A bfloat16 network can keep named parts in float32
(:class:`Float32Part`; ``bf16-fused`` keeps the head's score and box convolutions).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

__all__ = ["FusedConv2d", "Float32Part", "fuse_for_inference", "fusion_unavailable", "conv_input_sizes"]

logger = logging.getLogger(__name__)


def fusion_unavailable(device: torch.device) -> Optional[str]:
    """Why fused oneDNN convolutions cannot run on ``device`` here, or None when they can."""
    if device.type != "cpu":
        return "oneDNN fused convolutions are CPU kernels"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    try:
        conv = nn.Conv2d(4, 4, 3, padding=1)
        x = torch.randn(1, 4, 5, 5).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            got = FusedConv2d(conv, x.shape, "relu")(x)
            expected = torch.relu(conv(x))
    except (AttributeError, RuntimeError) as exc:
        return f"oneDNN fused convolutions failed here ({type(exc).__name__}: {str(exc)[:80]})"
    if not torch.allclose(got, expected, atol=1e-5):
        return "oneDNN fused convolutions gave different numbers here"
    return None


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


class FusedConv2d(nn.Module):
    """An inference-only ``nn.Conv2d`` (and optionally the ReLU after it) as one oneDNN call.

    Args:
        conv: the convolution to copy (2-D, zero padding given as numbers).
        input_size: the input size [B, C, H, W] the weight is packed for (any size runs).
        unary: ``"none"`` or ``"relu"`` (applied to the output in the same pass).
        dtype: ``torch.float32`` or ``torch.bfloat16``: the dtype of weights, inputs and outputs
            (an input in another dtype is cast to it first, as autocast casts a convolution's input).
        fuse_sum: :meth:`add_relu` adds the residual inside the convolution (one rounding of
            ``conv + residual``); False rounds the convolution's output first, then adds, as
            unfused (autocast) code does.

    Shapes: ``forward(x)``: x [B, C, H, W] channels-last in ``dtype`` → [B, O, H', W']
    channels-last, as ``conv(x)`` (then ReLU).
    """

    def __init__(self, conv: nn.Conv2d, input_size, unary: str = "none",
                 dtype: torch.dtype = torch.float32, fuse_sum: bool = True) -> None:
        super().__init__()
        if not _fusable(conv):
            raise ValueError(f"FusedConv2d needs an nn.Conv2d with numeric zero padding, got {conv}")
        if unary not in ("none", "relu"):
            raise ValueError(f"FusedConv2d: unary must be 'none' or 'relu', got {unary!r}")
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups, self.unary = list(conv.dilation), conv.groups, unary
        self.fuse_sum = fuse_sum
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self._weight = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        # plain attributes, not buffers: an oneDNN-layout tensor has no storage to save or move
        self.packed = self._pack(input_size)
        self.packed_for: dict[tuple[int, ...], Tensor] = {}
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def _pack(self, input_size) -> Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            self._weight, self.padding, self.stride, self.dilation, self.groups, [int(s) for s in input_size])

    def specialise(self, input_size, repeats: int = 3) -> bool:
        """Keep a weight packed for ``input_size`` too, if it runs faster there than the main one.

        oneDNN may choose another kernel, with another weight layout, for a much smaller map: a
        head convolution shared by every FPN level, packed for P3, then reorders its weight on
        each call at P6/P7 (measured: 2.7 ms instead of 0.05 ms for the 40-class logits at 6×10).
        Both are timed here (best of ``repeats`` calls) and the faster kept.

        Returns:
            whether the size-specific weight was kept.
        """
        size = tuple(int(s) for s in input_size)
        own = self._pack(size)
        x = torch.zeros(size, dtype=self._weight.dtype).contiguous(memory_format=torch.channels_last)

        def best(weight: Tensor) -> float:
            times = []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                self._conv(x, weight)
                times.append(time.perf_counter() - start)
            return min(times[1:])

        with torch.inference_mode():
            keep = best(own) < 0.8 * best(self.packed)
        if keep:
            self.packed_for[size] = own
        return keep

    def _conv(self, x: Tensor, weight: Tensor) -> Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, self.bias, self.padding, self.stride, self.dilation, self.groups, self.unary, [], "")

    def _weight_for(self, x: Tensor) -> Tensor:
        return self.packed_for.get(tuple(x.shape), self.packed) if self.packed_for else self.packed

    def forward(self, x: Tensor) -> Tensor:
        x = _channels_last(x.to(self._weight.dtype))
        return self._conv(x, self._weight_for(x))

    def add_relu(self, x: Tensor, other: Tensor) -> Tensor:
        """``relu(conv(x) + other)``, in one pass with ``fuse_sum``; ``other`` has the output's shape."""
        if not self.fuse_sum:
            return torch.relu(self(x) + other)
        x = _channels_last(x.to(self._weight.dtype))
        return torch.ops.mkldnn._convolution_pointwise(
            x, _channels_last(other), self._weight_for(x), self.bias, self.padding, self.stride,
            self.dilation, self.groups, "add", 1.0, "relu", [], "")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, unary={self.unary!r}, dtype={self.packed.dtype}")


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


# -- the built-in blocks, fused -------------------------------------------------------------------
Pack = Callable[[nn.Conv2d, str], FusedConv2d]


def _folded(*norms: nn.Module) -> bool:
    return all(isinstance(n, nn.Identity) for n in norms)


class _FusedBottleneck(nn.Module):
    """torchvision ``Bottleneck`` with folded norms: relu(conv3(relu(conv2(relu(conv1 x)))) + identity)."""

    def __init__(self, block: tv_resnet.Bottleneck, pack: Pack) -> None:
        super().__init__()
        self.conv1, self.conv2 = pack(block.conv1, "relu"), pack(block.conv2, "relu")
        self.conv3 = pack(block.conv3, "none")
        self.downsample = None if block.downsample is None else _rewrite(block.downsample, pack)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3.add_relu(self.conv2(self.conv1(x)), identity)


class _FusedBasicBlock(nn.Module):
    """A two-convolution residual block with folded norms: relu(conv2(relu(conv1 x)) + residual).

    Serves torchvision's ``BasicBlock`` (residual = ``downsample(x)`` or ``x``) and DLA's
    ``BasicBlock`` (residual given by the caller, default ``x``).
    """

    def __init__(self, block: nn.Module, pack: Pack) -> None:
        super().__init__()
        self.conv1, self.conv2 = pack(block.conv1, "relu"), pack(block.conv2, "none")
        downsample = getattr(block, "downsample", None)
        self.downsample = None if downsample is None else _rewrite(downsample, pack)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        if residual is None:
            residual = x if self.downsample is None else self.downsample(x)
        return self.conv2.add_relu(self.conv1(x), residual)


class _FusedRoot(nn.Module):
    """DLA's aggregation node with a folded norm: relu(conv1x1(concat(children)))."""

    def __init__(self, root: nn.Module, pack: Pack) -> None:
        super().__init__()
        self.conv = pack(root.conv, "relu")

    def forward(self, children: list[Tensor]) -> Tensor:
        return self.conv(torch.cat(children, dim=1))


def _block_fuser(module: nn.Module) -> Optional[Callable[[nn.Module, Pack], nn.Module]]:
    """The fused replacement of a built-in block whose norms were folded, if there is one."""
    from crossvis.backbones import dla

    kind = type(module)
    if kind is tv_resnet.Bottleneck and _folded(module.bn1, module.bn2, module.bn3) \
            and _fusable(module.conv3):
        return _FusedBottleneck
    if kind in (tv_resnet.BasicBlock, dla.BasicBlock) and _folded(module.bn1, module.bn2):
        return _FusedBasicBlock
    if kind is dla.Root and _folded(module.bn):
        return _FusedRoot
    return None


def _fuse_resnet_stem(module: nn.Module, pack: Pack) -> None:
    """crossvis's ResNet runs ``maxpool(relu(bn1(conv1(x))))``: with bn1 folded, conv1 takes the ReLU."""
    from crossvis.backbones.resnet import ResNet

    if isinstance(module, ResNet) and _folded(module.bn1) and isinstance(module.relu, nn.ReLU) \
            and _fusable(module.conv1):
        module.conv1 = pack(module.conv1, "relu")
        module.relu = nn.Identity()


def _fuse_sequential(seq: nn.Sequential, pack: Pack) -> None:
    """Conv2d [Identity …] ReLU → FusedConv2d(relu); the ReLU after a GroupNorm runs in place."""
    names = list(seq._modules)
    for i, name in enumerate(names):
        child = seq._modules[name]
        if isinstance(child, nn.ReLU) and i > 0 and isinstance(seq._modules[names[i - 1]], nn.GroupNorm):
            child.inplace = True   # the norm's output is a fresh tensor nobody else reads
        if not _fusable(child):
            continue
        j = i + 1
        while j < len(names) and isinstance(seq._modules[names[j]], nn.Identity):
            j += 1
        if j < len(names) and isinstance(seq._modules[names[j]], nn.ReLU):
            seq._modules[name] = pack(child, "relu")
            seq._modules[names[j]] = nn.Identity()


def _rewrite(module: nn.Module, pack: Pack) -> nn.Module:
    """``module`` with its convolutions fused (in place where possible); returns the module to use."""
    fuser = _block_fuser(module)
    if fuser is not None:
        return fuser(module, pack)
    _fuse_resnet_stem(module, pack)
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, pack)
    for name, child in list(module._modules.items()):
        if child is None or isinstance(child, FusedConv2d):
            continue
        module._modules[name] = pack(child, "none") if _fusable(child) else _rewrite(child, pack)
    return module


def conv_input_sizes(network: nn.Module, run: Callable[[nn.Module], object],
                     include: Optional[Callable[[nn.Module], bool]] = None) -> dict[int, list[tuple[int, ...]]]:
    """The input shapes each selected module of ``network`` sees in ``run(network)`` (by ``id``),
    largest first; ``include`` selects the modules (default: the convolutions this module fuses)."""
    include = include or _fusable
    sizes: dict[int, list[tuple[int, ...]]] = {}

    def record(conv: nn.Module, args: tuple) -> None:
        seen = sizes.setdefault(id(conv), [])
        shape = tuple(args[0].shape)
        if shape not in seen:
            seen.append(shape)
            seen.sort(key=lambda s: -torch.Size(s).numel())

    hooks = [m.register_forward_pre_hook(record) for m in network.modules() if include(m)]
    try:
        with torch.inference_mode():
            run(network)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


class Float32Part(nn.Module):
    """A part of a bfloat16 network that runs in float32: tensor inputs are cast to float32 and
    the outputs stay float32 (e.g. the head's score and box convolutions, where bf16 rounding
    changes which near-tied detections survive)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: object) -> object:
        return self.module(*(a.float() if isinstance(a, Tensor) else a for a in args))


def fuse_for_inference(network: nn.Module, run: Callable[[nn.Module], object],
                       dtype: torch.dtype = torch.float32, float32_parts: Sequence[str] = (),
                       autocast_numerics: bool = False) -> nn.Module:
    """Rewrite an inference copy of ``network`` to fused oneDNN convolutions (see the module doc).

    Args:
        network: an eval-mode float32 network, batch norms folded, in channels-last (modified in
            place; pass a copy).
        run: ``run(network)`` runs it once on an example float32 batch: the weights are packed for
            the input sizes each convolution sees there: for the largest, and for a smaller one
            where that measures faster (:meth:`FusedConv2d.specialise`; a convolution not reached
            is packed for a 1×C×64×64 input).
        dtype: ``torch.float32``, or ``torch.bfloat16`` for a network that then runs in bfloat16
            (its weights and other parameters converted here, its inputs by the caller).
        float32_parts: names of submodules (``network.get_submodule``) that stay float32 in a
            bfloat16 network, each wrapped in :class:`Float32Part`; names it does not have are
            skipped.
        autocast_numerics: give exactly what the network gives under ``torch.autocast`` in
            ``dtype``: the convolutions alone run in ``dtype`` (their input cast to it, their
            output rounded to it before a residual is added; a fused ReLU commutes with the
            rounding), every other parameter stays float32 and ``float32_parts`` is ignored. Run
            the result under ``torch.autocast`` too, for the other operations' precision.

    Returns:
        the rewritten network (the same object, unless the network itself is a fusable block).
    """
    sizes = conv_input_sizes(network, run)
    kept: set[int] = set()
    for name in float32_parts if dtype != torch.float32 and not autocast_numerics else ():
        parent, _, attr = name.rpartition(".")
        try:
            owner = network.get_submodule(parent)
            part = getattr(owner, attr)
        except AttributeError:
            continue
        if isinstance(part, nn.Module) and attr in owner._modules:
            kept.update(id(m) for m in part.modules())
            owner._modules[attr] = Float32Part(part)

    def pack(conv: nn.Conv2d, unary: str) -> FusedConv2d:
        seen = sizes.get(id(conv)) or [(1, conv.in_channels, 64, 64)]
        fused = FusedConv2d(conv, seen[0], unary, torch.float32 if id(conv) in kept else dtype,
                            fuse_sum=not autocast_numerics)
        for size in seen[1:]:   # a convolution shared by several levels (the FCOS head)
            fused.specialise(size)
        return fused

    if dtype != torch.float32 and not autocast_numerics:   # the parameters left (norms, scales) in ``dtype`` too
        for module in network.modules():
            if id(module) in kept:
                continue
            for value in module._parameters.values():
                if value is not None and value.is_floating_point():
                    value.data = value.data.to(dtype)
            for key, value in module._buffers.items():
                if value is not None and value.is_floating_point():
                    module._buffers[key] = value.to(dtype)
    network = _rewrite(network, pack)
    logger.debug("fused %d convolutions (%s, %d kept float32)", sum(isinstance(m, FusedConv2d) for m in
                 network.modules()), dtype, sum(isinstance(m, Float32Part) for m in network.modules()))
    return network
