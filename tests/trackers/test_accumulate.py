"""VideoAccumulator: the official YouTube-VIS results format, built frame by frame."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tracker_cases import empty, frame

from crossvis.errors import CrossVISError
from crossvis.trackers import CrossVISTracker, VideoAccumulator, encode_masks

SIZE = (24, 37)


def random_masks(n: int, seed: int, size=SIZE) -> torch.Tensor:
    return torch.rand((n, *size), generator=torch.Generator().manual_seed(seed)) > 0.6


def test_results_format_decodes_back_and_has_nulls():
    acc = VideoAccumulator()
    m0, m2 = random_masks(2, 0), random_masks(1, 1)
    acc.add(frame([[0, 0, 5, 5], [9, 9, 20, 20]], [0.9, 0.5], [2, 0], size=SIZE, masks=m0), torch.tensor([0, 1]))
    acc.add(empty(SIZE), torch.zeros(0, dtype=torch.int64))
    acc.add(frame([[0, 0, 5, 5]], [0.7], [2], size=SIZE, masks=m2), torch.tensor([0]))
    entries = acc.results(video_id=7)
    json.dumps(entries)  # plain JSON types only
    assert [sorted(e) for e in entries] == [["category_id", "score", "segmentations", "video_id"]] * 2
    t0, t1 = entries
    assert (t0["video_id"], t0["category_id"], t1["category_id"]) == (7, 3, 1)
    assert t0["score"] == pytest.approx((0.9 + 0.7) / 2)
    assert t1["score"] == pytest.approx(0.5)
    assert t0["segmentations"][1] is None and t1["segmentations"][1:] == [None, None]
    assert len(t0["segmentations"]) == len(t1["segmentations"]) == 3
    for rle, expected in [(t0["segmentations"][0], m0[0]), (t0["segmentations"][2], m2[0]),
                          (t1["segmentations"][0], m0[1])]:
        assert isinstance(rle["counts"], str) and rle["size"] == list(SIZE)
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, expected.numpy().astype(np.uint8))


def test_dropped_detections_are_ignored():
    acc = VideoAccumulator()
    acc.add(frame([[0, 0, 5, 5], [0, 0, 6, 6]], [0.9, 0.8], [0, 0], size=SIZE), torch.tensor([-1, 0]))
    (entry,) = acc.results(1)
    assert entry["score"] == pytest.approx(0.8)


def test_category_first_vs_vote_and_category_map():
    def fill(acc):
        for label, score in [(1, 0.3), (4, 0.8), (4, 0.7), (1, 0.2)]:
            acc.add(frame([[0, 0, 5, 5]], [score], [label], size=SIZE), torch.tensor([0]))
        return acc.results(1)[0]

    assert fill(VideoAccumulator())["category_id"] == 2                      # first label 1 -> id 2
    assert fill(VideoAccumulator(category_rule="vote"))["category_id"] == 5  # 1.5 for label 4 vs 0.5
    ids = [10, 20, 30, 40, 50]
    assert fill(VideoAccumulator(category_ids=ids))["category_id"] == 20
    assert fill(VideoAccumulator(category_ids=ids, category_rule="vote"))["category_id"] == 50
    with pytest.raises(CrossVISError, match="label 4"):
        fill(VideoAccumulator(category_ids=[10, 20], category_rule="vote"))


def test_bad_calls_are_clear_errors():
    with pytest.raises(CrossVISError, match="category_rule"):
        VideoAccumulator(category_rule="mode")
    acc = VideoAccumulator()
    det = frame([[0, 0, 5, 5]], [0.9], [0], size=SIZE)
    with pytest.raises(CrossVISError, match="track ids"):
        acc.add(det, torch.tensor([0, 1]))
    det.masks = None
    with pytest.raises(CrossVISError, match="masks"):
        acc.add(det, torch.tensor([0]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 4), st.integers(1, 30), st.integers(1, 30), st.integers(0, 10_000))
def test_encode_masks_roundtrip(n, h, w, seed):
    masks = random_masks(n, seed, (h, w))
    rles = encode_masks(masks)
    assert len(rles) == n
    if n:
        decoded = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
        np.testing.assert_array_equal(decoded.transpose(2, 0, 1), masks.numpy().astype(np.uint8))


def test_stored_memory_does_not_grow_with_decoded_masks():
    """Per frame the accumulator keeps only the RLE (a few hundred bytes for a blob), never the
    360x640 decoded mask (230 kB as uint8): 80 frames of 3 tracks stay far below one mask per frame."""
    h, w = 360, 640
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    frames = []
    for shift in range(4):
        centres = [(100 + 5 * shift, 100), (200, 300 + 5 * shift), (300, 500)]
        masks = torch.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < 40 ** 2 for cy, cx in centres])
        boxes = [[cx - 40, cy - 40, cx + 40, cy + 40] for cy, cx in centres]
        frames.append(frame(boxes, [0.9, 0.8, 0.7], [0, 1, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], (h, w), masks))
    tracker, acc = CrossVISTracker(), VideoAccumulator()

    tracemalloc.start()
    for t in range(10):
        acc.add(frames[t % 4], tracker.update(frames[t % 4]))
    _, base = tracemalloc.get_traced_memory()
    for t in range(10, 80):
        acc.add(frames[t % 4], tracker.update(frames[t % 4]))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tracker.num_tracks == 3
    assert current < base + 70 * 3 * 2_000  # < 2 kB per stored mask, vs 230 kB decoded
    stored = [rle for t in acc.tracks.values() for rle in t.segmentations.values()]
    assert len(stored) == 240
    assert all(isinstance(r["counts"], str) and len(r["counts"]) < 1_000 for r in stored)
