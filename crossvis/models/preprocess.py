"""Input handling owned by the model: resizing for inference, normalisation, padding."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossvis.errors import CrossVISError

__all__ = ["ImagePreprocessor", "IMAGENET_RGB_MEAN", "IMAGENET_RGB_STD", "test_resize_shape"]

#: ImageNet statistics on the 0–255 scale, RGB order (the default of crossvis recipes).
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)


def test_resize_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Size after resizing the short side to ``min_size`` with the long side capped at ``max_size``.

    Same rounding as detectron2's ResizeShortestEdge: ``int(side·scale + 0.5)``.
    """
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ImagePreprocessor(nn.Module):
    """Normalises uint8 RGB images and pads them into one batch.

    Args:
        pixel_mean: per-channel mean, 0–255 scale, in ``input_format`` channel order.
        pixel_std: per-channel std, 0–255 scale, in ``input_format`` channel order.
        input_format: ``"RGB"`` or ``"BGR"`` — the channel order the network expects (inputs are
            always RGB; ``"BGR"`` flips them, as the official detectron2 weights need).
        size_divisibility: padded height and width are multiples of this (32).
        min_size_test, max_size_test: inference resize (short side, long-side cap).
    """

    def __init__(self, pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN,
                 pixel_std: Sequence[float] = IMAGENET_RGB_STD, input_format: str = "RGB",
                 size_divisibility: int = 32, min_size_test: int = 360, max_size_test: int = 640) -> None:
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise CrossVISError(f"model.input_format must be 'RGB' or 'BGR', got {input_format!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise CrossVISError("model.pixel_mean and model.pixel_std need 3 values each")
        self.input_format = input_format
        self.size_divisibility = int(size_divisibility)
        self.min_size_test, self.max_size_test = int(min_size_test), int(max_size_test)
        self.register_buffer("pixel_mean", torch.tensor([float(v) for v in pixel_mean]).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([float(v) for v in pixel_std]).view(3, 1, 1), persistent=False)

    def resize_for_test(self, image: Tensor) -> Tensor:
        """uint8 [3, H, W] → [3, h, w] resized (bilinear, antialiased) to the test size: float32,
        or ``image`` itself when it already has that size (:meth:`batch` converts it)."""
        h, w = image.shape[-2:]
        size = test_resize_shape(h, w, self.min_size_test, self.max_size_test)
        if size == (h, w):
            return image
        return F.interpolate(image.float()[None], size=size, mode="bilinear", align_corners=False,
                             antialias=True)[0]

    def normalize(self, image: Tensor, out: Optional[Tensor] = None) -> Tensor:
        """[3, h, w] RGB, 0–255 (uint8 or float) → float32 [3, h, w] normalised in ``input_format``.

        ``out`` (float32 [3, h, w], e.g. a view into a batch) receives the result. The channels are
        copied in the network's order while converting, then normalised in place: the same float32
        operations as ``(x - mean) / std``, without a temporary per step.
        """
        if out is None:
            out = torch.empty(image.shape, dtype=torch.float32, device=self.pixel_mean.device)
        if self.input_format == "BGR":
            for channel in range(3):
                out[channel].copy_(image[2 - channel])
        else:
            out.copy_(image)
        return out.sub_(self.pixel_mean).div_(self.pixel_std)

    def padded_size(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        d = self.size_divisibility
        h = max(s[0] for s in sizes)
        w = max(s[1] for s in sizes)
        return (h + d - 1) // d * d, (w + d - 1) // d * d

    def batch(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad (bottom/right) images into float32 [B, 3, Hp, Wp].

        Args:
            images: [3, h_i, w_i] RGB tensors on the 0–255 scale (uint8 or float).

        Returns:
            the batch and the unpadded (h_i, w_i) of each image.
        """
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise CrossVISError(f"image {i} must be a [3, H, W] RGB tensor, got {shape}")
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        hp, wp = self.padded_size(sizes)
        out = torch.empty((len(images), 3, hp, wp), device=self.pixel_mean.device)
        for i, (image, (h, w)) in enumerate(zip(images, sizes)):
            self.normalize(image, out[i, :, :h, :w])
            out[i, :, h:].zero_()
            out[i, :, :h, w:].zero_()
        return out, sizes
