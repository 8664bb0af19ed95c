"""Encoding masks on several threads with pycocotools' own C encoder gives pycocotools' strings."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.formats import encode_masks, rle_encode


def _fortran(masks: np.ndarray) -> np.ndarray:
    """bool [N, H, W] as the uint8 [H, W, N] Fortran-ordered array pycocotools encodes."""
    return np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))


def _official(masks: np.ndarray) -> list[dict]:
    """pycocotools.mask.encode on bool [N, H, W], strings decoded."""
    rles = mask_utils.encode(_fortran(masks))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


@st.composite
def _masks(draw):
    n, h, w = draw(st.integers(1, 7)), draw(st.integers(1, 30)), draw(st.integers(1, 30))
    h = draw(st.sampled_from([h, 8 * (h // 8 + 1)]))  # column heights a multiple of 8 are scanned in words
    seed = draw(st.integers(0, 2 ** 32 - 1))
    kind = draw(st.sampled_from(["noise", "blobs", "empty", "full", "columns"]))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random((n, h, w)) < draw(st.floats(0.0, 1.0))
    if kind == "blobs":  # long runs, as instance masks have
        y, x = np.mgrid[:h, :w]
        cy, cx, r = rng.random((3, n, 1, 1)) * np.array([h, w, max(h, w)]).reshape(3, 1, 1, 1)
        return (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    if kind == "columns":  # each mask inside its own range of columns, the rest empty
        masks = rng.random((n, h, w)) < draw(st.floats(0.0, 1.0))
        for mask in masks:
            first = int(rng.integers(0, w + 1))
            mask[:, :first] = False
            mask[:, int(rng.integers(first, w + 1)):] = False
        return masks
    return np.full((n, h, w), kind == "full")


@settings(max_examples=60, deadline=None)
@given(masks=_masks(), threads=st.integers(1, 4))
def test_threaded_encoding_equals_pycocotools(masks, threads):
    expected = _official(masks)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rle_encode, "MIN_PIXELS_PER_THREAD", 1)  # threads even for these small masks
        mp.setattr(rle_encode, "MIN_PIXELS_NATIVE", 1)      # and the column-skipping encoder on one
        assert rle_encode.encode_counts(_fortran(masks), threads) == [e["counts"].encode() for e in expected]
        assert encode_masks(masks, threads=threads) == expected
        # the column-major layout the post-processor writes: a transposed view of [N, W, H]
        column_major = np.ascontiguousarray(masks.transpose(0, 2, 1)).transpose(0, 2, 1)
        assert encode_masks(column_major, threads=threads) == expected
        assert encode_masks(masks.astype(np.uint8) * 3, threads=threads) == expected  # nonzero = 1


@settings(max_examples=60, deadline=None)
@given(masks=_masks())
def test_column_spans_are_the_first_and_one_past_the_last_occupied_column(masks):
    columns = np.ascontiguousarray(masks.transpose(0, 2, 1).astype(np.uint8))  # [N, W, H]
    expected = []
    for mask in masks:
        occupied = [x for x in range(mask.shape[1]) if mask[:, x].any()]
        expected.append([occupied[0], occupied[-1] + 1] if occupied else [0, 0])
    spans = rle_encode.column_spans(columns)
    assert spans.dtype == np.int64 and spans.tolist() == expected


def test_the_encoder_reads_only_the_occupied_columns_and_one_more(monkeypatch):
    native = rle_encode._native()
    calls = []
    original = native.encode

    class Spy:
        def __call__(self, rle, address, h, w, n):
            calls.append((address, h, w, n))
            return original(rle, address, h, w, n)

    monkeypatch.setattr(native, "encode", Spy())
    masks = np.zeros((3, 16, 10), dtype=bool)
    masks[0, 3:5, 4:6] = True   # columns 4..5: read 4..6
    masks[1, :, 7:] = True      # to the last column: nothing after it to read
    fortran = _fortran(masks)   # mask 2 stays empty: one zero column is read
    counts = rle_encode.encode_counts(fortran, 1)
    assert counts == [e["counts"].encode() for e in _official(masks)]
    base, size = fortran.ctypes.data, 16 * 10
    assert calls == [(base + 4 * 16, 16, 3, 1), (base + size + 7 * 16, 16, 3, 1), (base + 2 * size, 16, 1, 1)]


def test_one_thread_leaves_few_pixels_to_pycocotools(monkeypatch):
    from crossvis.formats import rle as rle_module

    used = []
    original = rle_module._THREAD_CHOICE.encode
    monkeypatch.setattr(rle_module._THREAD_CHOICE, "encode", lambda m, t: used.append(m.size) or original(m, t))
    small = np.random.default_rng(4).random((2, 40, 60)) < 0.5
    large = np.zeros((2, 512, 512), dtype=bool)
    large[:, 100:200, 300:350] = True
    assert encode_masks(small) == _official(small) and used == []   # below MIN_PIXELS_NATIVE
    assert encode_masks(small, threads=2) == _official(small) and used == [small.size]
    assert encode_masks(large) == _official(large) and used == [small.size, large.size]


def test_the_slices_are_encoded_on_separate_threads(monkeypatch):
    monkeypatch.setattr(rle_encode, "MIN_PIXELS_PER_THREAD", 1)
    native = rle_encode._native()
    assert native is not None, "pycocotools' rleEncode/rleToString should be callable on Linux CPython"
    seen = []
    original = type(native).encode_slice

    def spy(self, columns, start, stop, out):
        seen.append((threading.current_thread(), start, stop))  # the objects: idents are re-used
        return original(self, columns, start, stop, out)

    monkeypatch.setattr(type(native), "encode_slice", spy)
    masks = np.random.default_rng(1).random((9, 20, 30)) < 0.3
    counts = rle_encode.encode_counts(_fortran(masks), 3)
    assert counts == [e["counts"].encode() for e in _official(masks)]
    assert sorted((start, stop) for _, start, stop in seen) == [(0, 3), (3, 6), (6, 9)]
    assert len({id(thread) for thread, _, _ in seen}) == 3


def test_without_the_c_functions_pycocotools_encodes(monkeypatch):
    monkeypatch.setattr(rle_encode, "_native", lambda: None)
    masks = np.random.default_rng(2).random((4, 11, 13)) < 0.5
    assert rle_encode.encode_counts(_fortran(masks), 2) is None
    assert encode_masks(masks, threads=2) == _official(masks)


def test_a_failing_slice_raises_in_the_caller(monkeypatch):
    monkeypatch.setattr(rle_encode, "MIN_PIXELS_PER_THREAD", 1)
    native = rle_encode._native()

    def broken(self, columns, start, stop, out):
        if start > 0:
            raise MemoryError("no memory for the counts")
        for i in range(start, stop):
            out[i] = b""

    monkeypatch.setattr(type(native), "encode_slice", broken)
    with pytest.raises(MemoryError, match="no memory"):
        rle_encode.encode_counts(_fortran(np.ones((4, 10, 10), dtype=bool)), 2)


class _Clock:
    """A clock that advances, when read, by the time the fake encode before it set in ``pending``."""

    def __init__(self) -> None:
        self.now, self.pending = 0.0, 0.0

    def __call__(self) -> float:
        self.now += self.pending
        self.pending = 0.0
        return self.now


@pytest.mark.parametrize("ns_per_pixel, expected", [({1: 0.5, 2: 0.3}, 2), ({1: 0.5, 2: 0.6}, 1),
                                                    ({1: 0.5, 2: 0.5}, 1)])
def test_thread_choice_keeps_what_measured_faster(monkeypatch, ns_per_pixel, expected):
    clock = _Clock()
    choice = rle_encode.ThreadChoice(clock=clock)
    used = []

    def fake_encode(masks, threads):
        used.append(threads)
        clock.pending = ns_per_pixel[threads] * 1e-9 * masks.size
        return [b""] * masks.shape[2]

    monkeypatch.setattr(rle_encode, "encode_counts", fake_encode)
    sizes = [3, 9, 5, 7, 4, 8, 6, 2, 9, 3]  # masks per frame vary: timings are per pixel
    for n in sizes:
        choice.encode(np.zeros((10, 10, n), dtype=np.uint8, order="F"), 2)
    trials = 2 * rle_encode.ThreadChoice.TRIALS
    assert sorted(used[:trials]) == [1] * (trials // 2) + [2] * (trials // 2)   # both timed, alternately
    assert used[trials:] == [expected] * (len(sizes) - trials)
    assert choice.pick(1) == 1 and len(used) == len(sizes)
