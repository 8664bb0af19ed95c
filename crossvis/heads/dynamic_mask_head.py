"""CondInst's dynamic mask head: per-instance 1×1 convolutions whose weights come from the controller."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.heads.upsample import aligned_bilinear, aligned_bilinear_crop
from crossvis.threads import MeasuredChoice

__all__ = ["DynamicMaskHead", "grid_locations"]


def grid_locations(height: int, width: int, stride: int, device: torch.device | str | None = None) -> Tensor:
    """Input-image coordinates of the sample points of a stride-``stride`` map.

    Returns float32 [height·width, 2] of (x, y) = (j·stride + stride//2, i·stride + stride//2),
    row-major over (i, j).
    """
    xs = torch.arange(width, dtype=torch.float32, device=device) * stride + stride // 2
    ys = torch.arange(height, dtype=torch.float32, device=device) * stride + stride // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1)


class DynamicMaskHead(nn.Module):
    """Instance masks from shared mask features and per-instance dynamic filters.

    Each instance's filter vector (length :attr:`num_params`, 169 for the defaults) is laid out as
    ``[W0 | W1 | ... | W_{L-1} | b0 | b1 | ... | b_{L-1}]``, every ``W`` row-major
    (out_channels, in_channels). Layer 0 sees ``[rel_x, rel_y, mask_feat_0 .. mask_feat_{C-1}]``;
    ReLU follows every layer but the last, which has one output channel (the mask logit).
    In inference the instances run as batched matrix products (a 1×1 convolution per instance);
    in training as one grouped convolution (the official form).

    Relative coordinates are ``(instance_location − pixel_location) / soi[level]``, with ``level``
    the FPN level the instance's filter came from.

    Args:
        sizes_of_interest: one normaliser per FPN level, e.g. [64, 128, 256, 512, 1024].
        in_channels: mask feature channels C (official 8).
        channels: width of the hidden dynamic layers (official 8).
        num_layers: number of dynamic layers (official 3).
        rel_coords: whether to prepend the two relative-coordinate channels.
        out_stride: stride of the returned logits (official 4).
    """

    def __init__(self, sizes_of_interest: Sequence[float], in_channels: int = 8, channels: int = 8,
                 num_layers: int = 3, rel_coords: bool = True, out_stride: int = 4) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("the dynamic mask head needs at least one layer")
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        self.rel_coords, self.out_stride = rel_coords, out_stride
        # Derived from the recipe, so not part of the state dict (a converter recomputes it).
        self.register_buffer("sizes_of_interest", torch.tensor([float(s) for s in sizes_of_interest]),
                             persistent=False)
        first_in = in_channels + (2 if rel_coords else 0)
        dims = [first_in] + [channels] * (num_layers - 1) + [1]
        self.weight_nums = [dims[i] * dims[i + 1] for i in range(num_layers)]
        self.bias_nums = [dims[i + 1] for i in range(num_layers)]
        self.layer_dims = dims
        self._chunk_choice = MeasuredChoice(self.CHUNK_CHOICES, "mask head: floats per batched matmul")

    @property
    def num_params(self) -> int:
        """Length of one instance's filter vector (169 for the official settings)."""
        return sum(self.weight_nums) + sum(self.bias_nums)

    def parse_params(self, params: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Split [N, num_params] filters into per-layer weights [N, out, in] and biases [N, out, 1]."""
        n = params.shape[0]
        splits = torch.split(params, self.weight_nums + self.bias_nums, dim=1)
        weights, biases = [], []
        for layer in range(self.num_layers):
            out_ch, in_ch = self.layer_dims[layer + 1], self.layer_dims[layer]
            weights.append(splits[layer].reshape(n, out_ch, in_ch))
            biases.append(splits[self.num_layers + layer].reshape(n, out_ch, 1))
        return weights, biases

    def forward(self, mask_feats: Tensor, mask_feat_stride: int, params: Tensor, locations: Tensor,
                levels: Tensor, im_inds: Tensor) -> Tensor:
        """Mask logits for N instances.

        Args:
            mask_feats: float [B, C, h, w] mask-branch output at stride ``mask_feat_stride``.
            mask_feat_stride: stride of ``mask_feats`` in input pixels (8).
            params: float [N, num_params] dynamic filters.
            locations: float [N, 2] (x, y) input-pixel location each instance is relative to.
            levels: int64 [N] FPN level index of each location (selects the soi normaliser).
            im_inds: int64 [N] which batch item's mask features each instance uses.

        Returns:
            float [N, h·f, w·f] mask logits at stride ``out_stride`` (f = mask_feat_stride / out_stride).
        """
        _, c, h, w = mask_feats.shape
        n = params.shape[0]
        factor = mask_feat_stride // self.out_stride
        if n == 0:
            return mask_feats.new_zeros((0, h * factor, w * factor))
        grid = grid_locations(h, w, mask_feat_stride, device=mask_feats.device) if self.rel_coords else None
        if torch.is_grad_enabled() and (params.requires_grad or mask_feats.requires_grad):
            # training: the official form, one grouped convolution over all instances (batched
            # matmuls measured no faster for a training step, and this keeps runs comparable)
            return aligned_bilinear(self._grouped_logits(mask_feats, grid, params, locations, levels, im_inds)
                                    .reshape(n, 1, h, w), factor)[:, 0]
        # A 1×1 convolution per instance is a matrix product per instance: [out, in] @ [in, h·w].
        # Batched matmuls in chunks that stay in cache are ~4× faster on CPU than one grouped
        # convolution over all instances (same numbers up to summation order).
        per_instance = max(self.layer_dims) * h * w
        elements, choice = self.CHUNK_ELEMENTS, None
        if elements is None:
            choice = self._chunk_choice
            elements = choice.pick()
            if n * per_instance <= min(self.CHUNK_CHOICES):  # one chunk whichever is chosen: not timed
                choice = None
        chunk = max(1, elements // per_instance)
        start = choice.clock() if choice is not None else 0.0
        logits = [self._logits(mask_feats, grid, params[s:s + chunk], locations[s:s + chunk], levels[s:s + chunk],
                               im_inds[s:s + chunk]) for s in range(0, n, chunk)]
        logits = torch.cat(logits) if len(logits) > 1 else logits[0]
        if choice is not None:
            choice.record(elements, choice.clock() - start, n)
        # contiguous, and one copy fewer than padding (``aligned_bilinear`` up to float rounding)
        out = logits.new_empty((n, 1, h * factor, w * factor))
        aligned_bilinear_crop(logits.reshape(n, 1, h, w), factor, out)
        return out[:, 0]

    #: instances per batched matmul: at most this many floats in one layer's input, the faster of
    #: :attr:`CHUNK_CHOICES` measured on the first calls (a chunk's product stays in cache, but
    #: each chunk costs ~0.1 ms of small operations: measured on a 2-core Intel Xeon, 87 instances
    #: at 48×80, 3.1 ms in one chunk against 3.4 in four); a number here fixes it
    CHUNK_ELEMENTS: Optional[int] = None
    CHUNK_CHOICES = (1 << 20, 1 << 22)

    def _inputs(self, mask_feats: Tensor, grid: Optional[Tensor], locations: Tensor, levels: Tensor,
                im_inds: Tensor) -> Tensor:
        """float [n, C (+2), h·w]: each instance's relative coordinates and its image's features."""
        _, c, h, w = mask_feats.shape
        n = locations.shape[0]
        x = mask_feats[im_inds].reshape(n, c, h * w)
        if grid is not None:
            rel = locations.reshape(n, 1, 2) - grid.reshape(1, h * w, 2)
            rel = rel.permute(0, 2, 1) / self.sizes_of_interest[levels].reshape(n, 1, 1)
            x = torch.cat([rel.to(x.dtype), x], dim=1)
        return x

    def _logits(self, mask_feats: Tensor, grid: Optional[Tensor], params: Tensor, locations: Tensor,
                levels: Tensor, im_inds: Tensor) -> Tensor:
        """float [n, 1, h·w] logits of the dynamic layers for n instances, as batched matmuls."""
        weights, biases = self.parse_params(params)
        if mask_feats.dtype in (torch.float32, torch.float64) and params.dtype == mask_feats.dtype:
            x = self._first_layer(mask_feats, grid, weights[0], biases[0], locations, levels, im_inds)
        else:  # 16-bit: the folded terms (location, grid: hundreds of pixels) cancel where rel is small
            x = torch.baddbmm(biases[0], weights[0], self._inputs(mask_feats, grid, locations, levels, im_inds))
        for layer in range(1, self.num_layers):
            x = torch.baddbmm(biases[layer], weights[layer], x.relu_())
        return x

    def _first_layer(self, mask_feats: Tensor, grid: Optional[Tensor], weight: Tensor, bias: Tensor,
                     locations: Tensor, levels: Tensor, im_inds: Tensor) -> Tensor:
        """Layer 0 (before its ReLU) as one matrix product per image over inputs the instances share.

        The relative coordinates are linear in the instance's location:
        ``W_rel · (loc − grid) / soi = (W_rel / soi) · loc − (W_rel / soi) · grid``, so the first term
        joins the bias and the second is a product with the image's grid, like the features'
        ``W_feat · feats``. Every instance then multiplies the same [2 + C, h·w] input
        ``[feats; grid]`` instead of its own copy with its own coordinates (the same values up to
        float rounding; float32/float64 only, see :meth:`_logits`).

        Args:
            weight: [n, out, 2 + C] (or [n, out, C] without relative coordinates); bias: [n, out, 1].

        Returns:
            float [n, out, h·w].
        """
        _, c, h, w = mask_feats.shape
        n, out_ch, _ = weight.shape
        feats = mask_feats.reshape(mask_feats.shape[0], c, h * w)
        if grid is not None:
            scaled = weight[..., :2] / self.sizes_of_interest[levels].to(weight.dtype).reshape(n, 1, 1)
            bias = torch.baddbmm(bias, scaled, locations.to(weight.dtype).reshape(n, 2, 1))
            weight = torch.cat([weight[..., 2:], -scaled], dim=2)               # [n, out, C + 2]
            grid_rows = grid.t().to(feats.dtype)[None].expand(feats.shape[0], 2, h * w)
            feats = torch.cat([feats, grid_rows], dim=1)                       # [B, C + 2, h·w]
        if n and bool((im_inds == im_inds[0]).all()):                             # one image (inference)
            image = int(im_inds[0])
            return torch.addmm(bias.reshape(n * out_ch, 1), weight.reshape(n * out_ch, -1),
                               feats[image]).reshape(n, out_ch, h * w)
        return torch.baddbmm(bias, weight, feats[im_inds])

    def _grouped_logits(self, mask_feats: Tensor, grid: Optional[Tensor], params: Tensor, locations: Tensor,
                        levels: Tensor, im_inds: Tensor) -> Tensor:
        """The same logits as :meth:`_logits` from one grouped 1×1 convolution per layer (groups = n)."""
        _, _, h, w = mask_feats.shape
        n = params.shape[0]
        x = self._inputs(mask_feats, grid, locations, levels, im_inds).reshape(1, -1, h, w)
        weights, biases = self.parse_params(params)
        for layer, (weight, bias) in enumerate(zip(weights, biases)):
            x = F.conv2d(x, weight.reshape(-1, weight.shape[-1], 1, 1), bias.reshape(-1), groups=n)
            if layer < self.num_layers - 1:
                x = torch.relu(x)
        return x.reshape(n, 1, h * w)
