"""The results scan: the all-at-once check of usual masks agrees with the mask-by-mask one."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossvis.errors import CrossVISError
from crossvis.formats import results as results_module
from crossvis.formats.results import scan_results

USUAL = {"size": [4, 5], "counts": "0d0"}
# masks of every form the scan meets: the usual ones, absent frames, and forms only the mask-by-mask
# check accepts (bytes counts, tuple or NumPy sizes) or refuses (with its message)
MASKS = st.sampled_from([
    None, USUAL, {"size": [6, 2], "counts": "c0"}, [], {}, {"size": (4, 5), "counts": "0d0"},
    {"size": [np.int64(4), 5], "counts": "0d0"}, {"size": [4, 5], "counts": b"0d0"},
    {"size": [True, 5], "counts": "0d0"}, {"size": [-4, 5], "counts": "0d0"}, {"size": [4], "counts": "0d0"},
    {"size": [2 ** 40, 2 ** 40], "counts": "0d0"}, {"size": [4, 5], "counts": "0d\u00e9"},
    {"size": [4, 5], "counts": [20]}, {"counts": "0d0"}, "0d0", 0, [[1, 2, 3, 4]],
])


def _scan(results, scan):
    try:
        out = scan(results, "r.json", {1: 3}, 0, len(results))
    except CrossVISError as exc:
        return str(exc)
    return ([(e.index, e.video_id, e.category_id, e.score, e.segmentations) for e in out.entries],
            out.mask_entry, out.mask_frame, out.counts, [list(s) for s in out.sizes], out.out_of_range,
            out.wrong_length)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(MASKS, max_size=4), st.sampled_from([0.5, 2.0, float("nan")]),
                          st.sampled_from([1, 7])), max_size=4))
def test_the_usual_scan_agrees_with_the_mask_by_mask_scan(predictions):
    results = [{"video_id": video, "category_id": 1, "score": score, "segmentations": masks}
               for masks, score, video in predictions]
    each = _scan(results, results_module._scan_each)
    assert _scan(results, scan_results) == each
    usual = results_module._scan_usual(results, "r.json", {1: 3}, 0, len(results))
    if usual is not None:  # it only answers when it gives the mask-by-mask result
        assert _scan(results, lambda *a: usual) == each
        assert usual.size_table is None or usual.size_table.tolist() == [list(s) for s in usual.sizes]


def test_usual_results_take_the_fast_scan():
    results = [{"video_id": 1, "category_id": 2, "score": 0.5, "segmentations": [USUAL, None, USUAL]}] * 3
    usual = results_module._scan_usual(results, "r.json", {1: 3}, 0, 3)
    assert usual is not None
    assert usual.mask_entry == [0, 0, 1, 1, 2, 2] and usual.mask_frame == [0, 2] * 3
    assert usual.size_table.tolist() == [[4, 5]] * 6


@pytest.mark.parametrize("mask, message", [
    ({"size": [4, 5], "counts": [20]}, "uncompressed RLE"),
    ({"size": [True, 5], "counts": "0d0"}, "must be [height, width]"),
    ({"counts": "0d0"}, "must be compressed RLE"),
])
def test_an_unusual_mask_gets_the_mask_by_mask_message(mask, message):
    results = [{"video_id": 1, "category_id": 2, "score": 0.5, "segmentations": [USUAL, None, mask]}]
    with pytest.raises(CrossVISError, match=rf"prediction #0 frame 2 .*{re.escape(message)}"):
        scan_results(results, "r.json", {1: 3})
