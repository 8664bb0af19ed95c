"""RLE validation against pycocotools and an independent decoder of the compressed string format."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError
from crossvis.formats import check_compressed, check_size, check_uncompressed, encode_mask, encode_masks


def column_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary mask in column-major order, starting with a run of 0s (by hand)."""
    flat = mask.astype(bool).flatten(order="F")
    runs, current, length = [], False, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = v, 1
    runs.append(length)
    return runs


def reference_decode(counts: bytes) -> tuple[bool, list[int]]:
    """(complete, runs): maskApi.c rleFrString written out in Python, stopping where C would run off the end."""
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return False, runs
            c = counts[p] - 48
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return True, runs


masks = st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2 ** 32 - 1), st.floats(0, 1)).map(
    lambda a: np.random.default_rng(a[2]).random((a[0], a[1])) < a[3])


@settings(max_examples=60, deadline=None)
@given(masks)
def test_valid_strings_pass_with_the_right_area(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    problems, areas = check_compressed([rle["counts"]], [mask.shape])
    assert problems == [None] and areas[0] == mask.sum() == mask_utils.area(rle)
    assert reference_decode(rle["counts"]) == (True, column_major_runs(mask))
    assert check_uncompressed(column_major_runs(mask), *mask.shape) == (None, int(mask.sum()))


@settings(max_examples=80, deadline=None)
@given(masks, st.data())
def test_altered_strings_are_judged_like_the_reference_decoder(mask, data):
    counts = bytearray(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"])
    edit = data.draw(st.sampled_from(["truncate", "replace", "insert"]))
    at = data.draw(st.integers(0, len(counts) - 1))
    if edit == "truncate":
        counts = counts[:at]
    elif edit == "replace":
        counts[at] = data.draw(st.integers(48, 111))
    else:
        counts.insert(at, data.draw(st.integers(48, 111)))
    counts = bytes(counts)
    complete, runs = reference_decode(counts)
    h, w = mask.shape
    expected_ok = complete and all(r >= 0 for r in runs) and sum(runs) == h * w and not _has_long_group(counts)
    problems, areas = check_compressed([counts], [(h, w)])
    assert (problems[0] is None) == expected_ok, (counts, problems)
    if expected_ok:
        assert areas[0] == sum(runs[1::2]) == mask_utils.area({"size": [h, w], "counts": counts})


def _has_long_group(counts: bytes) -> bool:
    group = 0
    for c in counts:
        group = group + 1 if (c - 48) & 0x20 else 0
        if group >= 7:
            return True
    return False


def test_batch_of_mixed_strings_flags_each_one():
    good = mask_utils.encode(np.asfortranarray(np.eye(6, dtype=np.uint8)))["counts"]
    batch = [good, good[:-1], b"", b"0" * 3 + b"\x7f", good, b"oooooooooo1", b"6"]
    problems, areas = check_compressed(batch, [(6, 6)] * 6 + [(2, 3)])
    assert problems[0] is None and problems[4] is None and areas[0] == areas[4] == 6
    assert "sum to" in problems[1] or "truncated" in problems[1]
    assert "sum to 0" in problems[2]
    assert "outside '0'..'o'" in problems[3]
    assert "longer than any mask" in problems[5] or "ends in the middle" in problems[5]
    assert problems[6] is None and areas[6] == 0  # "6" = one run of 6 zeros: a valid empty 2×3 mask


def test_forked_chunks_give_the_serial_answer(monkeypatch):
    """Decoding the chunks in forked workers (thresholds lowered so a small batch forks) gives the
    same problems and areas as one process, bad strings in several chunks included."""
    import crossvis.formats.rle as rle
    from crossvis.parallel import can_fork

    if not can_fork():
        pytest.skip("no fork start method on this platform")
    rng = np.random.default_rng(4)
    batch, sizes = [], []
    for k in range(60):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        counts = mask_utils.encode(np.asfortranarray(rng.random((h, w)) < rng.random()).astype(np.uint8))["counts"]
        batch.append(counts[:-1] if k % 7 == 3 else counts)  # every 7th truncated
        sizes.append((h, w))
    serial = check_compressed(batch, sizes)
    monkeypatch.setattr(rle, "_CHUNK_CHARS", 40)
    monkeypatch.setattr(rle, "PARALLEL_MIN_CHUNKS", 2)
    chunked = check_compressed(batch, sizes)
    forked = check_compressed(batch, sizes, workers=2)
    for other in (chunked, forked):
        assert other[0] == serial[0] and np.array_equal(other[1], serial[1])
    assert sum(p is not None for p in serial[0]) >= 8  # the truncated ones were flagged


@pytest.mark.parametrize("counts, problem", [
    ([1, 2, 3], "sum to 6, not h\\*w = 2\\*4 = 8"),
    ([4, -1, 5], "negative"),
    ([4.0, 4.0], "flat list of ints"),
    ([[4], [4]], "flat list of ints"),
    ("44", "must be a list"),
])
def test_uncompressed_problems(counts, problem):
    message, area = check_uncompressed(counts, 2, 4)
    assert message is not None and area == 0
    import re
    assert re.search(problem, message)


@pytest.mark.parametrize("size, ok", [([2, 3], True), ((0, 0), True), ([2], False), ([2.0, 3], False),
                                      ([True, 3], False), ([-1, 3], False), ([2 ** 20, 2 ** 20], False)])
def test_check_size(size, ok):
    assert (check_size(size) is None) == ok


def test_encode_round_trips():
    rng = np.random.default_rng(0)
    stack = rng.random((3, 5, 7)) < 0.4
    rles = encode_masks(stack)
    assert [r["size"] for r in rles] == [[5, 7]] * 3 and all(isinstance(r["counts"], str) for r in rles)
    for m, r in zip(stack, rles):
        np.testing.assert_array_equal(mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}), m)
        assert encode_mask(m) == r
    assert encode_masks(np.zeros((0, 4, 4), bool)) == []
    with pytest.raises(CrossVISError, match="one H×W mask"):
        encode_mask(stack)
