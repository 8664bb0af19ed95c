"""The run lengths read from the low-resolution map equal those of the mask made by upsampling."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.formats import encode_masks, encode_runs
from crossvis.formats import rle_encode
from crossvis.heads import aligned_bilinear
from crossvis.heads.upsample_rle import aligned_bilinear_runs


def row_major_runs(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a bool [A, B] mask read row by row, starting with False (numpy diff)."""
    flat = mask.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat])) != 0)
    return np.diff(np.concatenate([[0], changes, [flat.size]]))


def upsampled(probs: np.ndarray, factor: int, threshold: float, size: tuple[int, int]) -> np.ndarray:
    """bool [N, A, B]: CondInst's aligned bilinear upsample (F.interpolate), cropped, thresholded."""
    up = aligned_bilinear(torch.from_numpy(probs)[:, None], factor)[:, 0, : size[0], : size[1]]
    return (up > threshold).numpy()


def blobs(rng: np.random.Generator, n: int, a: int, b: int) -> np.ndarray:
    """float32 [N, a, b] smooth object-like probability maps (a Gaussian bump each, some empty)."""
    y, x = np.mgrid[0:a, 0:b]
    maps = []
    for _ in range(n):
        cy, cx = rng.uniform(-2, a + 2), rng.uniform(-2, b + 2)
        sy, sx = rng.uniform(0.5, a), rng.uniform(0.5, b)
        maps.append(np.exp(-((y - cy) / sy) ** 2 - ((x - cx) / sx) ** 2) * rng.uniform(0.2, 1.0))
    return np.asarray(maps, dtype=np.float32)


def probability_maps(kind: str, rng: np.random.Generator, n: int, a: int, b: int) -> np.ndarray:
    """float32 [N, a, b] maps of one ``kind``: "noise", "blobs", or "two-valued" (whole cells on one
    side of the threshold, and changes between constant cells)."""
    if kind == "noise":
        return rng.random((n, a, b), dtype=np.float32)
    if kind == "blobs":
        return blobs(rng, n, a, b)
    return np.where(rng.random((n, a, b)) < 0.5, 0.1, 0.9).astype(np.float32)


def check(probs: np.ndarray, factor: int, threshold: float, size: tuple[int, int], threads: int = 1) -> None:
    result = aligned_bilinear_runs(probs, factor, threshold, size, threads=threads)
    assert result is not None
    counts, offsets = result
    assert counts.dtype == np.uint32 and offsets.shape == (probs.shape[0] + 1,)
    masks = upsampled(np.ascontiguousarray(probs), factor, threshold, size)
    for i, mask in enumerate(masks):
        got = counts[offsets[i]:offsets[i + 1]]
        np.testing.assert_array_equal(got, row_major_runs(mask), err_msg=f"mask {i}")
        assert int(got.sum()) == size[0] * size[1]


@settings(max_examples=60, deadline=None)
@given(a=st.integers(1, 9), b=st.integers(1, 9), factor=st.sampled_from([2, 3, 4]), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["noise", "blobs", "two-valued"]), threshold=st.sampled_from([0.3, 0.5, 0.7]),
       crop=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_runs_equal_those_of_the_upsampled_mask(a, b, factor, seed, kind, threshold, crop):
    rng = np.random.default_rng(seed)
    probs = probability_maps(kind, rng, int(rng.integers(1, 5)), a, b)
    s = factor // 2
    size = (s + 1 + round(crop[0] * (factor * a - s - 1)), s + 1 + round(crop[1] * (factor * b - s - 1)))
    check(probs, factor, threshold, size)


def test_frame_sized_object_masks_on_two_threads_and_a_transposed_view():
    rng = np.random.default_rng(3)
    probs = blobs(rng, 40, 96, 160)            # the mask head's stride-4 maps of a 384×640 input
    check(probs, 4, 0.5, (360, 640))
    check(probs, 4, 0.5, (360, 640), threads=2)
    # the caller passes the maps transposed (a view): rows are the frame's columns
    transposed = np.ascontiguousarray(probs.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert not transposed.flags.c_contiguous
    check(transposed, 4, 0.5, (360, 640))
    one = aligned_bilinear_runs(transposed, 4, 0.5, (360, 640))
    two = aligned_bilinear_runs(transposed, 4, 0.5, (360, 640), threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_full_empty_and_first_pixel_masks():
    probs = np.zeros((3, 4, 5), dtype=np.float32)
    probs[1] = 1.0                               # every pixel above: runs [0, A·B]
    probs[2, 0, 0] = 1.0                         # only the top-left corner region
    counts, offsets = aligned_bilinear_runs(probs, 4, 0.5, (14, 18))
    assert counts[offsets[0]:offsets[1]].tolist() == [14 * 18]
    assert counts[offsets[1]:offsets[2]].tolist() == [0, 14 * 18]
    check(probs, 4, 0.5, (14, 18))


def test_sizes_outside_the_map_and_other_dtypes_are_refused():
    probs = np.zeros((2, 4, 5), dtype=np.float32)
    assert aligned_bilinear_runs(probs, 4, 0.5, (17, 20)) is None      # taller than 4·4
    assert aligned_bilinear_runs(probs, 4, 0.5, (2, 20)) is None       # not past the shift
    assert aligned_bilinear_runs(probs.astype(np.float64), 4, 0.5, (16, 20)) is None
    counts, offsets = aligned_bilinear_runs(probs[:0], 4, 0.5, (16, 20))
    assert counts.size == 0 and offsets.tolist() == [0]


@pytest.mark.parametrize("native", [True, False])
def test_encode_runs_writes_pycocotools_strings(native, monkeypatch):
    rng = np.random.default_rng(0)
    masks = rng.random((6, 7, 9)) < 0.5
    masks[0], masks[1] = False, True
    # runs of each mask in COCO (column-major) order, from numpy
    runs = [row_major_runs(m.T) for m in masks]
    offsets = np.concatenate([[0], np.cumsum([r.size for r in runs])])
    if not native:
        monkeypatch.setattr(rle_encode, "_native", lambda: None)
    got = encode_runs(np.concatenate(runs).astype(np.uint32), offsets, (7, 9))
    expected = [{"size": [7, 9], "counts": r["counts"].decode()} for r in
                mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))]
    assert got == expected
    assert got == encode_masks(masks)
