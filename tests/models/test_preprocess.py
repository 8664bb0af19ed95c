"""The image preprocessor: normalised, channel-ordered, zero-padded batches, bit for bit the plain formula."""
import pytest
import torch
import torch.nn.functional as F

from crossvis.models.preprocess import ImagePreprocessor


def _reference(images, mean, std, bgr, divisor):
    """``(x − mean) / std`` per image in float32 (channels flipped for BGR), zero-padded bottom/right."""
    hp = -(-max(im.shape[1] for im in images) // divisor) * divisor
    wp = -(-max(im.shape[2] for im in images) // divisor) * divisor
    out = torch.zeros(len(images), 3, hp, wp)
    for i, im in enumerate(images):
        x = im.float()
        if bgr:
            x = torch.stack([x[2], x[1], x[0]])
        out[i, :, : im.shape[1], : im.shape[2]] = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return out


@pytest.mark.parametrize("input_format", ["RGB", "BGR"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_batch_is_the_normalised_zero_padded_images(input_format, dtype):
    g = torch.Generator().manual_seed(0)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    pre = ImagePreprocessor(mean, std, input_format=input_format, size_divisibility=32)
    # an HWC-strided image (what the predictor passes: a permuted numpy frame), and a smaller one
    hwc = torch.randint(0, 256, (45, 70, 3), generator=g, dtype=torch.uint8).permute(2, 0, 1).to(dtype)
    small = torch.randint(0, 256, (3, 20, 33), generator=g, dtype=torch.uint8).to(dtype)
    for _ in range(3):
        # a freed block of NaNs of the batch's size, which the batch is likely to re-use: its
        # padding must be zeros all the same
        torch.full((2, 3, 64, 96), float("nan"))
        batch, sizes = pre.batch([hwc, small])
        assert sizes == [(45, 70), (20, 33)] and batch.shape == (2, 3, 64, 96) and batch.dtype == torch.float32
        assert torch.equal(batch, _reference([hwc, small], mean, std, input_format == "BGR", 32))


def test_resize_for_test_returns_the_image_at_its_test_size_and_resizes_others():
    pre = ImagePreprocessor(min_size_test=40, max_size_test=80)
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    assert pre.resize_for_test(image) is image  # already at the test size: converted by batch()
    larger = torch.randint(0, 256, (3, 80, 120), dtype=torch.uint8)
    resized = pre.resize_for_test(larger)
    expected = F.interpolate(larger.float()[None], size=(40, 60), mode="bilinear", align_corners=False,
                             antialias=True)[0]
    assert resized.dtype == torch.float32 and torch.equal(resized, expected)
    batch, sizes = pre.batch([image])
    assert sizes == [(40, 60)] and torch.equal(batch[0, :, :40, :60], pre.normalize(image.float()))
