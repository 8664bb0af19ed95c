"""3×3 convolutions by NNPACK's Winograd kernels, chosen layer by layer and size by size by measuring (CPU).

A direct 3×3 convolution costs 9 multiply-adds per input channel and output pixel. Winograd's
minimal filtering computes a tile of outputs from the transformed input tile and kernel with a
fraction of those products, at the price of the input, kernel and output transforms and of a
small rounding error (measured: ~1.5e-5 of the output's magnitude in float32, against ~4e-3 for
bfloat16). PyTorch ships NNPACK's implementation (``torch._nnpack_spatial_convolution``,
AVX2/FMA kernels) but sends only batches of 16 or more to it; the online predictor runs one frame.

Whether it wins depends on the CPU, the thread count and the map: on a 2-core Zen 4 EPYC
(2026-12-04, 256 channels) it ran a 48×80 map in 9.6 ms against 26.9 ms direct float32 and
10.4 ms bfloat16 at 2 threads (14.4 / 48.2 / 20.3 ms at 1 thread), but a 24×40 map in 4.4 ms
against 5.0 / 2.6 ms, where the kernel transform it redoes on every call dominates. So
:func:`winograd_for_inference` times both ways for every eligible convolution at every input size
an example run gives it (and at any other size the first time it comes), and
:class:`WinogradConv2d` takes NNPACK only for the sizes where it won.

The decisions depend on the shapes, the CPU, the torch version and the thread count only; the
``fp32-winograd`` backend keeps them in ``winograd.json`` beside the backend choice cache
(``crossvis.inference.backends``), so that a later process reads them instead of timing.

Eligible: ``nn.Conv2d`` with a 3×3 kernel, stride 1, dilation 1, one group, zero padding smaller
than the kernel, on float32 CPU maps. NNPACK's thread pool is created at its first use with
torch's thread count at that moment (later ``torch.set_num_threads`` calls do not resize it), so
set the thread count before building.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from crossvis.inference.fused import conv_input_sizes

__all__ = ["WinogradConv2d", "winograd_eligible", "winograd_for_inference", "winograd_unavailable",
           "time_both_ways"]

logger = logging.getLogger(__name__)

#: NNPACK replaces the direct convolution at a size only when it is at least this much faster there
MARGIN = 0.05


@functools.lru_cache(maxsize=1)
def _nnpack_ready() -> bool:
    # NNPACK's own initialisation runs in this call; a convolution before it fails
    return bool(torch._nnpack_available())


def winograd_unavailable(device: torch.device) -> Optional[str]:
    """Why NNPACK convolutions cannot run on ``device`` here, or None when they can."""
    if device.type != "cpu":
        return "NNPACK's Winograd convolutions are CPU kernels"
    if not hasattr(torch, "_nnpack_spatial_convolution") or not _nnpack_ready():
        return "this torch build or CPU has no NNPACK (it needs AVX2 and FMA on x86)"
    return None


def winograd_eligible(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution NNPACK's Winograd kernels compute (see the module doc)."""
    return (type(module) is nn.Conv2d and tuple(module.kernel_size) == (3, 3) and tuple(module.stride) == (1, 1)
            and tuple(module.dilation) == (1, 1) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and all(0 <= p < 3 for p in module.padding))


class WinogradConv2d(nn.Module):
    """A 3×3 stride-1 ``nn.Conv2d`` that runs NNPACK at the input sizes chosen for it, itself elsewhere.

    Args:
        conv: an eligible convolution (:func:`winograd_eligible`); its parameters are shared.
        sizes: the input ``(height, width)`` pairs to run by NNPACK.
        timer: when given, an input size met for the first time is timed both ways with it
            (``timer(layer, input_shape)`` → (direct seconds, NNPACK seconds)) and the faster way
            kept for that size from then on (NNPACK when ``margin`` faster); without one, sizes
            not in ``sizes`` run direct.
        margin: the least relative gain that takes a size to NNPACK.
        shared: decisions to share between layers, keyed by :meth:`timing_key`: the timing depends
            on the shapes only, so layers of the same shape at the same input size are timed once
            (and a cache of them spares a later process the timing, see
            ``crossvis.inference.backends``).

    Input float32 [B, C_in, H, W] (any memory format; NNPACK reads it contiguous) → float32
    [B, C_out, H + 2·pad_h − 2, W + 2·pad_w − 2], contiguous.
    """

    def __init__(self, conv: nn.Conv2d, sizes: Any = (),
                 timer: Optional[Callable[["WinogradConv2d", torch.Size], tuple[float, float]]] = None,
                 margin: float = MARGIN, shared: Optional[dict[str, bool]] = None) -> None:
        super().__init__()
        if not winograd_eligible(conv):
            raise ValueError(f"not a 3×3 stride-1 dilation-1 single-group zero-padded convolution: {conv}")
        self.conv = conv
        self.choices: dict[tuple[int, int], bool] = {(int(h), int(w)): True for h, w in sizes}
        self.timer, self.margin = timer, margin
        self.shared = shared if shared is not None else {}
        self.padding = [int(p) for p in conv.padding]

    @property
    def sizes(self) -> set[tuple[int, int]]:
        """The input ``(height, width)`` pairs this layer runs by NNPACK."""
        return {size for size, nnpack in self.choices.items() if nnpack}

    def timing_key(self, shape: torch.Size) -> str:
        """What the timing of this layer on an input of ``shape`` depends on: the shapes, not the
        weights (a string, so that decisions can be kept in a JSON file)."""
        dims = "x".join
        return (f"weight {dims(map(str, self.conv.weight.shape))} padding {dims(map(str, self.padding))} "
                f"bias {int(self.conv.bias is not None)} input {dims(map(str, shape))}")

    def decide(self, shape: torch.Size) -> bool:
        """Time both ways on a batch of ``shape`` (unless a layer of the same shape already did) and
        keep the faster for its size; True: NNPACK."""
        key = self.timing_key(shape)
        if key not in self.shared:
            direct, winograd = (self.timer or time_both_ways)(self, torch.Size(shape))
            self.shared[key] = winograd < (1.0 - self.margin) * direct
        nnpack = self.shared[key]
        self.choices[(int(shape[-2]), int(shape[-1]))] = nnpack
        return nnpack

    def winograd(self, x: Tensor) -> Tensor:
        """NNPACK's convolution of ``x`` with this layer's weight and bias."""
        return torch._nnpack_spatial_convolution(x.contiguous(), self.conv.weight.contiguous(), self.conv.bias,
                                                 self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu":
            nnpack = self.choices.get((x.shape[-2], x.shape[-1]))
            if nnpack is None and self.timer is not None:
                nnpack = self.decide(x.shape)
            if nnpack:
                return self.winograd(x)
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"nnpack at {sorted(self.sizes)}"


def time_both_ways(layer: WinogradConv2d, shape: torch.Size, repeats: int = 3) -> tuple[float, float]:
    """Fastest seconds of ``layer.conv`` and of NNPACK on a random float32 batch of ``shape``,
    timed alternately after one untimed call of each (the least of ``repeats``: a burst of other
    load on a shared machine lengthens single calls, and must not decide the choice)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(layer.conv.weight.device)
    ways = (layer.conv, layer.winograd)
    times: list[list[float]] = [[], []]
    with torch.inference_mode():
        for way in ways:
            way(x)
        for _ in range(repeats):
            for i, way in enumerate(ways):
                start = time.perf_counter()
                way(x)
                times[i].append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def winograd_for_inference(network: nn.Module, run: Callable[[nn.Module], Any], margin: float = MARGIN,
                           timer: Optional[Callable[[WinogradConv2d, torch.Size], tuple[float, float]]] = None,
                           decisions: Optional[dict[str, bool]] = None) -> nn.Module:
    """Replace, in place, every eligible convolution of ``network`` by a :class:`WinogradConv2d`
    that uses NNPACK at the input sizes where ``timer`` found it ``margin`` faster.

    The sizes an example run gives each convolution are timed now; a size met later (a video of
    another shape) is timed the first time it comes, so every size runs the faster way. Layers of
    the same shape share their timings (an FCOS head's three towers: 12 layers, one timing per level).

    Args:
        network: a float32 CPU network in eval mode (an inference copy: it is modified).
        run: ``run(network)`` runs it on an example batch; the sizes each convolution sees there
            are the ones measured now (a shared layer, e.g. an FCOS tower over five levels, sees several).
        margin: the least relative gain that takes a size to NNPACK.
        timer: ``timer(layer, input_shape)`` → (direct seconds, NNPACK seconds); default
            :func:`time_both_ways`.
        decisions: earlier decisions by :meth:`WinogradConv2d.timing_key` (True: NNPACK), e.g.
            read from a cache of the same CPU, torch version and thread count; the shapes found
            there are not timed again, and the new decisions are added to it.

    Returns:
        ``network``.
    """
    why = winograd_unavailable(next(network.parameters()).device)
    if why is not None:
        raise RuntimeError(why)
    timer = timer or time_both_ways
    seen_by_id = conv_input_sizes(network, run, winograd_eligible)
    shapes = {name: seen_by_id.get(id(module), []) for name, module in network.named_modules()
              if name and winograd_eligible(module)}
    won = 0
    decisions = decisions if decisions is not None else {}
    known = len(decisions)
    for name, seen in shapes.items():
        layer = WinogradConv2d(network.get_submodule(name), timer=timer, margin=margin, shared=decisions)
        for shape in sorted(seen):
            layer.decide(torch.Size(shape))
        won += bool(layer.sizes)
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, layer)
    logger.debug("winograd: NNPACK faster for %d of %d eligible convolutions (%d layer shapes and sizes timed, "
                 "%d known before)", won, len(shapes), len(decisions) - known, known)
    return network
