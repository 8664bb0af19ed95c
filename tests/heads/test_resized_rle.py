"""The run lengths of resized masks read from the low-resolution map equal those of the masks made
by the two interpolations (``aligned_bilinear`` then ``F.interpolate``), up to ties."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from crossvis.heads import aligned_bilinear
from crossvis.heads.resized_rle import aligned_taps, axis_windows, resize_taps, resized_runs, window_weights
from test_upsample_rle import blobs, probability_maps   # the stride-4 reader's test maps


def made(probs: np.ndarray, factor: int, threshold: float, crop: tuple[int, int], size: tuple[int, int]):
    """bool [N, H, W] as CondInst makes them, and the float64 values (to tell ties)."""
    up = aligned_bilinear(torch.from_numpy(np.ascontiguousarray(probs))[:, None], factor)[:, :, : crop[0], : crop[1]]
    masks = F.interpolate(up, size=size, mode="bilinear", align_corners=False)[:, 0] > threshold
    values = F.interpolate(up.double(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return masks.numpy(), values.numpy()


def decoded(counts: np.ndarray, offsets: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [N, H, W] from row-major runs starting with False; checks the runs' form on the way."""
    masks = []
    for i in range(offsets.size - 1):
        runs = counts[offsets[i]:offsets[i + 1]].astype(np.int64)
        assert runs.sum() == size[0] * size[1], f"mask {i}: the runs cover {runs.sum()} pixels"
        assert (runs[1:] > 0).all(), f"mask {i}: an empty run after the first: {runs}"
        value = np.zeros(runs.sum(), dtype=bool)
        ends = np.cumsum(runs)
        for start, stop in zip(ends[0::2], ends[1::2]):
            value[start:stop] = True
        masks.append(value.reshape(size))
    return np.asarray(masks).reshape(-1, *size)


def check(probs: np.ndarray, factor: int, threshold: float, crop: tuple[int, int], size: tuple[int, int],
          threads: int = 1) -> None:
    result = resized_runs(probs, factor, threshold, crop, size, threads=threads)
    assert result is not None
    counts, offsets = result
    assert counts.dtype == np.uint32 and offsets.dtype == np.int64 and offsets.shape == (probs.shape[0] + 1,)
    masks, values = made(probs, factor, threshold, crop, size)
    got = decoded(counts, offsets, size)
    differ = got != masks
    # a pixel may differ only where its value is within float rounding of the threshold
    assert not (differ & (np.abs(values - threshold) > 1e-5)).any(), f"{differ.sum()} pixels differ"


@settings(max_examples=80, deadline=None)
@given(a=st.integers(1, 9), b=st.integers(1, 9), factor=st.sampled_from([1, 2, 3, 4]), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["noise", "blobs", "two-valued", "constant"]), threshold=st.sampled_from([0.3, 0.5]),
       crop=st.tuples(st.floats(0, 1), st.floats(0, 1)), scale=st.tuples(st.floats(0.2, 3.5), st.floats(0.2, 3.5)))
def test_runs_equal_those_of_the_resized_mask(a, b, factor, seed, kind, threshold, crop, scale):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    if kind == "constant":   # every sample above, below, or at the threshold (all uncertain)
        probs = np.full((n, a, b), rng.choice([0.1, threshold, 0.9]), dtype=np.float32)
    else:   # "two-valued": known blocks of both values side by side
        probs = probability_maps(kind, rng, n, a, b)
    h, w = 1 + round(crop[0] * (factor * a - 1)), 1 + round(crop[1] * (factor * b - 1))
    size = (max(1, round(h * scale[0])), max(1, round(w * scale[1])))
    check(probs, factor, threshold, (h, w), size)


def test_720p_masks_from_360p_maps_on_two_threads_and_a_transposed_view():
    rng = np.random.default_rng(3)
    probs = blobs(rng, 32, 96, 160)            # the mask head's stride-4 maps of a 384×640 input
    check(probs, 4, 0.5, (360, 640), (720, 1280), threads=2)
    transposed = np.ascontiguousarray(probs.transpose(0, 2, 1)).transpose(0, 2, 1)   # as the caller passes them
    assert not transposed.flags.c_contiguous
    check(transposed, 4, 0.5, (360, 640), (540, 960))
    one = resized_runs(transposed, 4, 0.5, (360, 640), (720, 1280))
    two = resized_runs(transposed, 4, 0.5, (360, 640), (720, 1280), threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_full_empty_and_corner_masks():
    probs = np.zeros((3, 4, 5), dtype=np.float32)
    probs[1] = 1.0                               # every pixel above: runs [0, H·W]
    probs[2, 0, 0] = 1.0                         # only near the top-left corner
    counts, offsets = resized_runs(probs, 4, 0.5, (14, 18), (30, 37))
    assert counts[offsets[0]:offsets[1]].tolist() == [30 * 37]
    assert counts[offsets[1]:offsets[2]].tolist() == [0, 30 * 37]
    assert counts[offsets[2]] == 0               # the corner pixel is True
    check(probs, 4, 0.5, (14, 18), (30, 37))


def test_crops_outside_the_map_and_other_dtypes_are_refused():
    probs = np.zeros((2, 4, 5), dtype=np.float32)
    assert resized_runs(probs, 4, 0.5, (17, 20), (40, 40)) is None     # taller than 4·4
    assert resized_runs(probs, 4, 0.5, (16, 20), (0, 40)) is None
    assert resized_runs(probs.astype(np.float64), 4, 0.5, (16, 20), (40, 40)) is None
    counts, offsets = resized_runs(probs[:0], 4, 0.5, (16, 20), (40, 40))
    assert counts.size == 0 and offsets.tolist() == [0]


@pytest.mark.parametrize("out_length, in_length", [(1280, 640), (720, 360), (100, 37), (37, 100), (5, 5), (1, 7)])
def test_resize_taps_reproduce_torch_interpolate(out_length, in_length):
    """The taps of one axis, applied to a ramp, give F.interpolate's values (an independent check
    of the source positions: torch's kernel against the formula)."""
    taps = resize_taps(out_length, in_length)
    x = np.random.default_rng(0).random(in_length).astype(np.float32)
    ours = (1 - taps.w.astype(np.float64)) * x[taps.i0] + taps.w * x[taps.i1].astype(np.float64)
    # float32 as in the pipeline: torch then computes the source positions in float32 too
    theirs = F.interpolate(torch.from_numpy(x)[None, None, None], size=(1, out_length), mode="bilinear",
                           align_corners=False)[0, 0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("factor, samples, length", [(4, 24, 90), (4, 24, 96), (2, 7, 13), (1, 9, 9), (3, 5, 15)])
def test_aligned_taps_and_window_weights_reproduce_aligned_bilinear(factor, samples, length):
    x = np.random.default_rng(1).random(samples).astype(np.float32)
    taps = aligned_taps(length, factor, samples)
    ours = (1 - taps.w.astype(np.float64)) * x[taps.i0] + taps.w * x[taps.i1].astype(np.float64)
    theirs = aligned_bilinear(torch.from_numpy(x)[None, None, None], factor)[0, 0, 0, :length].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # both stages as one: each output is its window's samples weighed by window_weights
    resize = resize_taps(2 * length + 3, length)
    first, last = axis_windows(taps, resize)
    assert (last - first <= 2).all() and (np.diff(first) >= 0).all() and (np.diff(last) >= 0).all()
    weights = window_weights(taps, resize)
    padded = np.concatenate([x, [0, 0]]).astype(np.float64)
    combined = sum(weights[:, d] * padded[first + d] for d in range(3))
    both = F.interpolate(torch.from_numpy(theirs.copy())[None, None, None], size=(1, 2 * length + 3), mode="bilinear",
                         align_corners=False)[0, 0, 0].numpy()
    np.testing.assert_allclose(combined, both, rtol=0, atol=1e-6)
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-6)


def test_downscaled_so_far_that_neighbouring_pixels_read_disjoint_samples():
    """Frame pixels 4 samples apart (factor 1, 16 → 4): pixel o reads samples 4o+1..4o+3, so two
    known pixels side by side can have different values with no uncertain pixel between them."""
    rng = np.random.default_rng(5)
    blocks = rng.random((6, 4, 4)) < 0.5
    probs = np.where(np.kron(blocks, np.ones((4, 4))), 0.9, 0.1).astype(np.float32)   # [6, 16, 16]
    counts, offsets = resized_runs(probs, 1, 0.5, (16, 16), (4, 4))
    np.testing.assert_array_equal(decoded(counts, offsets, (4, 4)), blocks)
    check(probs, 1, 0.5, (16, 16), (4, 4))
