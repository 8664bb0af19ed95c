"""crossvis.formats.rle_decode: batch decoding against masks encoded by pycocotools and decoded by hand."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.formats.rle_decode import decode_compressed


def foreground_intervals(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of every run of 1s of ``mask`` in column-major order, by hand."""
    flat = np.concatenate([[0], mask.astype(np.int8).flatten(order="F"), [0]])
    change = np.flatnonzero(np.diff(flat))
    return change[0::2], change[1::2]


def encode(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


# masks of every kind: noise, blocks, full, empty, tall columns (runs over column boundaries)
mask_kind = st.sampled_from(["noise", "block", "full", "empty", "stripes"])
masks = st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2 ** 32 - 1), mask_kind).map(
    lambda a: _draw_mask(*a))


def _draw_mask(h: int, w: int, seed: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random((h, w)) < rng.random()
    mask = np.zeros((h, w), dtype=bool)
    if kind == "block":
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        mask[y0:y1, x0:x1] = True
    elif kind == "full":
        mask[:] = True
    elif kind == "stripes":
        mask[:, rng.random(w) < 0.5] = True
    return mask


@settings(max_examples=60, deadline=None)
@given(st.lists(masks, min_size=1, max_size=8), st.data())
def test_a_batch_decodes_to_the_masks_runs(batch, data):
    counts = [encode(m) for m in batch]
    if data.draw(st.booleans()):
        counts = [c.decode("ascii") for c in counts]  # str works like bytes
    decoded = decode_compressed(counts, intervals=True)
    assert (decoded.problems == 0).all()
    assert decoded.sums.tolist() == [m.size for m in batch]
    assert decoded.areas.tolist() == [int(m.sum()) for m in batch]
    for i, mask in enumerate(batch):
        starts = decoded.starts[decoded.offsets[i]:decoded.offsets[i + 1]]
        ends = decoded.ends[decoded.offsets[i]:decoded.offsets[i + 1]]
        expected = foreground_intervals(mask)
        assert starts.tolist() == expected[0].tolist() and ends.tolist() == expected[1].tolist()


def test_intervals_of_some_strings_only():
    rng = np.random.default_rng(2)
    batch = [rng.random((7, 5)) < 0.5 for _ in range(6)]
    wanted = np.array([True, False, True, False, False, True])
    decoded = decode_compressed([encode(m) for m in batch], intervals=wanted)
    for i, mask in enumerate(batch):
        starts = decoded.starts[decoded.offsets[i]:decoded.offsets[i + 1]]
        assert starts.tolist() == (foreground_intervals(mask)[0].tolist() if wanted[i] else [])
    assert decoded.areas.tolist() == [int(m.sum()) for m in batch]  # areas of all of them


def test_long_runs_and_empty_strings_in_one_batch():
    """Runs of up to 6 characters (a 1000x1000 mask), a string without runs and the empty mask."""
    big = np.zeros((1000, 1000), dtype=bool)
    big[10:990, 3:900] = True
    big[500, 950] = True
    small = np.eye(3, dtype=bool)
    counts = [encode(big), b"", encode(np.zeros((2, 2), dtype=bool)), encode(small)]
    decoded = decode_compressed(counts, intervals=True)
    assert decoded.problems.tolist() == [0, 0, 0, 0]
    assert decoded.sums.tolist() == [10 ** 6, 0, 4, 9]
    assert decoded.areas.tolist() == [int(big.sum()), 0, 0, 3]
    starts = decoded.starts[decoded.offsets[0]:decoded.offsets[1]]
    assert starts.tolist() == foreground_intervals(big)[0].tolist()
    assert decoded.offsets[1:].tolist() == [898, 898, 898, 901]
