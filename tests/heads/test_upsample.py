"""aligned_bilinear against an independent NumPy reading of its definition."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from crossvis.heads import aligned_bilinear


def _bilinear_align_corners(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a 2-d array where the corner samples of input and output coincide."""
    in_h, in_w = img.shape
    ys = np.arange(out_h) * ((in_h - 1) / (out_h - 1) if out_h > 1 else 0.0)
    xs = np.arange(out_w) * ((in_w - 1) / (out_w - 1) if out_w > 1 else 0.0)
    y0 = np.floor(ys).astype(int).clip(0, in_h - 1)
    x0 = np.floor(xs).astype(int).clip(0, in_w - 1)
    y1, x1 = (y0 + 1).clip(max=in_h - 1), (x0 + 1).clip(max=in_w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def _reference(x: np.ndarray, f: int) -> np.ndarray:
    h, w = x.shape
    padded = np.pad(x, ((0, 1), (0, 1)), mode="edge")
    resized = _bilinear_align_corners(padded, f * h + 1, f * w + 1)
    shifted = np.pad(resized, ((f // 2, 0), (f // 2, 0)), mode="edge")
    return shifted[: f * h, : f * w]


def test_hand_case_factor_2():
    x = torch.tensor([[[[0.0, 4.0]]]])
    expected = torch.tensor([[[[0.0, 0.0, 2.0, 4.0], [0.0, 0.0, 2.0, 4.0]]]])
    torch.testing.assert_close(aligned_bilinear(x, 2), expected)


def test_factor_one_is_identity():
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(aligned_bilinear(x, 1), x)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), f=st.sampled_from([2, 3, 4, 8]), seed=st.integers(0, 1000))
def test_matches_definition(h, w, f, seed):
    x = torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = aligned_bilinear(x, f)
    assert out.shape == (1, 1, f * h, f * w)
    np.testing.assert_allclose(out[0, 0].numpy(), _reference(x[0, 0].numpy(), f), atol=1e-9)


@pytest.mark.parametrize("f", [2, 4])
def test_input_samples_reappear_at_offset_half_factor(f):
    # Input sample (i, j) is reproduced exactly at output (i·f + f//2, j·f + f//2).
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    out = aligned_bilinear(x, f)
    torch.testing.assert_close(out[0, 0, f // 2::f, f // 2::f], x[0, 0])


@pytest.mark.parametrize("bad", [0, 1.5, -2])
def test_rejects_bad_factor(bad):
    with pytest.raises(ValueError):
        aligned_bilinear(torch.zeros(1, 1, 2, 2), bad)


def _unshifted_reference(x: np.ndarray, f: int) -> np.ndarray:
    """The interpolation of the definition before its shift, float64: [f·h, f·w]."""
    h, w = x.shape
    padded = np.pad(x, ((0, 1), (0, 1)), mode="edge")
    return _bilinear_align_corners(padded, f * h + 1, f * w + 1)[: f * h, : f * w]


def _blobs(n: int, h: int, w: int, seed: int, smooth: int) -> torch.Tensor:
    """Mask-like probability maps [n, 1, h, w]: smooth noise through a sigmoid."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, max(1, h // smooth), max(1, w // smooth), generator=g) * 4
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").sigmoid()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 13), st.sampled_from([2, 3, 4, 8]), st.integers(0, 10_000),
       st.sampled_from([1, 3, 8]), st.floats(0.2, 0.8))
def test_above_threshold_equals_thresholded_interpolation(h, w, f, seed, smooth, threshold):
    from crossvis.heads.upsample import aligned_bilinear_above, aligned_bilinear_unshifted

    x = _blobs(3, h, w, seed, smooth)
    got = aligned_bilinear_above(x, f, threshold)
    assert got.dtype == torch.bool and got.shape == (3, f * h, f * w)
    values = np.stack([_unshifted_reference(m[0].double().numpy(), f) for m in x])
    expected = values > threshold
    differs = got.numpy() != expected
    # a pixel may differ only where float32 rounding decides: a tie with the threshold
    assert (np.abs(values[differs] - threshold) < 1e-5).all()
    # and the same as thresholding torch's own interpolation, except at such ties
    torch_mask = aligned_bilinear_unshifted(x, f)[:, 0, : f * h, : f * w] > threshold
    assert (np.abs(values[(got != torch_mask).numpy()] - threshold) < 1e-5).all()


def test_above_threshold_on_object_masks_and_on_noise():
    """Object-like maps take the boundary-cell path, white noise the full interpolation; both equal
    thresholding the interpolation (random values are never within rounding of 0.5 here)."""
    from crossvis.heads import upsample

    blobs = _blobs(20, 24, 40, 0, 8)
    noise = torch.rand(20, 1, 24, 40, generator=torch.Generator().manual_seed(1))
    for x in (blobs, noise):
        expected = upsample.aligned_bilinear_unshifted(x, 4)[:, 0, :96, :160] > 0.5
        assert torch.equal(upsample.aligned_bilinear_above(x, 4, 0.5), expected)
    ab = blobs[:, 0]
    corners = torch.stack([ab[:, :-1, :-1], ab[:, :-1, 1:], ab[:, 1:, :-1], ab[:, 1:, 1:]])
    boundary = (corners.amax(0) >= 0.5) & (corners.amin(0) <= 0.5)
    assert boundary.float().mean() < upsample.MAX_BOUNDARY_FRACTION  # the object maps took the cell path
