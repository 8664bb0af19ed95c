"""crossvis.eval.intersections: exact mask intersections against numpy and pycocotools."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.eval.intersections import MaskTable, column_pieces, intersections
from crossvis.eval.tracks import Track, track_iou_matrix
from crossvis.formats.rle_decode import decode_compressed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2


def encode(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def draw(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise (several pieces per column), a block, a full mask (runs over column boundaries) or nothing."""
    kind = rng.integers(4)
    if kind == 0:
        return rng.random((h, w)) < rng.random()
    mask = np.zeros((h, w), dtype=bool)
    if kind == 1:
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        mask[y0:y1, x0:x1] = True
    elif kind == 2:
        mask[:] = True
    return mask


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 14), st.integers(1, 14), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_intersections_equal_pixel_counts(h, w, n_pred, n_truth, seed):
    rng = np.random.default_rng(seed)
    pred = [draw(rng, h, w) for _ in range(n_pred)]
    truth = [draw(rng, h, w) for _ in range(n_truth)]
    pieces = column_pieces(decode_compressed([encode(m)["counts"] for m in pred], intervals=True), [h] * n_pred)
    table = MaskTable([encode(m)["counts"] for m in truth], [(h, w)] * n_truth)
    a = rng.integers(0, n_pred, 12)
    b = rng.integers(0, n_truth, 12)
    values = intersections(pieces, a, table, b)
    assert values.tolist() == [int((pred[i] & truth[j]).sum()) for i, j in zip(a, b)]
    # and what pycocotools' IoU implies: I = iou * (|a| + |b|) / (1 + iou)
    iou = np.asarray(mask_utils.iou([encode(pred[i]) for i in a], [encode(truth[j]) for j in b], [0] * 12))
    sums = np.array([pred[i].sum() + truth[j].sum() for i, j in zip(a, b)])
    assert np.array_equal(np.rint(np.diag(iou) * sums / (1 + np.diag(iou))).astype(int), values)


def test_masks_of_several_sizes_in_one_batch():
    rng = np.random.default_rng(5)
    shapes = [(3, 9), (11, 2), (6, 6)]
    pred = [rng.random(s) < 0.5 for s in shapes]
    truth = [rng.random(s) < 0.5 for s in shapes]
    pieces = column_pieces(decode_compressed([encode(m)["counts"] for m in pred], intervals=True),
                           [s[0] for s in shapes])
    table = MaskTable([encode(m)["counts"] for m in truth], shapes)
    values = intersections(pieces, np.arange(3), table, np.arange(3))
    assert values.tolist() == [int((p & t).sum()) for p, t in zip(pred, truth)]


def test_a_table_refuses_invalid_strings():
    with pytest.raises(ValueError, match="valid compressed RLE"):
        MaskTable([b"0000"], [(2, 2)])


def _track(masks: list, **kw) -> Track:
    segs = [None if m is None else {"size": list(m.shape), "counts": encode(m)["counts"]} for m in masks]
    areas = np.array([0 if m is None else int(m.sum()) for m in masks], dtype=np.int64)
    return Track(video_id=1, category_id=1, segs=segs, present=np.array([m is not None for m in masks]),
                 areas=areas, avg_area=float(areas[areas > 0].mean()) if (areas > 0).any() else 0.0, **kw)


def test_track_iou_from_masks_follows_the_official_rules():
    """Frames walked up to the shorter track; a frame of different sizes counts 0 in both sums."""
    rng = np.random.default_rng(9)
    a = [rng.random((5, 4)) < 0.6 for _ in range(4)]
    g = [rng.random((5, 4)) < 0.6 for _ in range(3)]
    other = rng.random((4, 5)) < 0.6
    dt = _track([a[0], None, a[2], other])
    gt = _track([g[0], g[1], g[2], g[0]][:3])  # shorter: frame 3 of the prediction is not walked
    ious, mismatch = track_iou_matrix([dt], [gt])
    inter = (a[0] & g[0]).sum() + (a[2] & g[2]).sum()
    union = (a[0] | g[0]).sum() + g[1].sum() + (a[2] | g[2]).sum()
    assert not mismatch and ious[0, 0] == pytest.approx(inter / union, abs=1e-15)
    dt2 = _track([a[0], other, a[2]])
    ious, mismatch = track_iou_matrix([dt2], [gt])  # frame 1 has sizes 4x5 vs 5x4: it adds nothing
    assert mismatch and ious[0, 0] == pytest.approx(inter / ((a[0] | g[0]).sum() + (a[2] | g[2]).sum()), abs=1e-15)
