"""The memory-bank tracker: re-identification within max_age, new tracks after it, and each rule."""
import pytest
import torch

from crossvis.association import MemoryBankTracker
from crossvis.errors import CrossVISError
from crossvis.structures import FrameDetections

# well separated identity embeddings (dot products 25 vs 0: bi-softmax is decisive)
A, B, C = [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]


def frame(*dets):
    """dets: (embedding, box, score[, label])."""
    if not dets:
        return FrameDetections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long), (100, 100),
                               embeddings=torch.zeros((0, 3)))
    emb = torch.tensor([d[0] for d in dets])
    boxes = torch.tensor([d[1] for d in dets], dtype=torch.float32)
    scores = torch.tensor([d[2] for d in dets])
    labels = torch.tensor([d[3] if len(d) > 3 else 0 for d in dets])
    return FrameDetections(boxes, scores, labels, (100, 100), embeddings=emb)


LEFT, RIGHT, MIDDLE = [0, 0, 20, 20], [60, 60, 90, 90], [30, 30, 50, 50]


def run(tracker, frames):
    tracker.reset()
    return [tracker.update(f).tolist() for f in frames]


@pytest.mark.parametrize("max_age", [1, 3, 10])
def test_reidentifies_after_an_occlusion_within_max_age(max_age):
    tracker = MemoryBankTracker(max_age=max_age)
    # A is occluded (not detected) for max_age - 1 frames: it comes back at frame - last_frame == max_age
    frames = [frame((A, LEFT, 0.9), (B, RIGHT, 0.9))] + [frame((B, RIGHT, 0.9))] * (max_age - 1) + \
             [frame((A, MIDDLE, 0.9), (B, RIGHT, 0.9))]
    ids = run(tracker, frames)
    assert ids[0] == [0, 1] and ids[-1] == [0, 1]


@pytest.mark.parametrize("max_age", [1, 3, 10])
def test_starts_a_new_track_after_a_longer_gap(max_age):
    tracker = MemoryBankTracker(max_age=max_age)
    frames = [frame((A, LEFT, 0.9), (B, RIGHT, 0.9))] + [frame((B, RIGHT, 0.9))] * max_age + \
             [frame((A, MIDDLE, 0.9), (B, RIGHT, 0.9))]
    ids = run(tracker, frames)
    assert ids[-1] == [2, 1]
    assert tracker.num_tracks == 2  # the forgotten track is deleted from memory


def test_empty_frames_count_as_unseen_frames():
    tracker = MemoryBankTracker(max_age=2)
    assert run(tracker, [frame((A, LEFT, 0.9)), frame(), frame((A, LEFT, 0.9))])[-1] == [0]
    assert run(tracker, [frame((A, LEFT, 0.9)), frame(), frame(), frame((A, LEFT, 0.9))])[-1] == [1]


def test_start_threshold_and_keep_threshold():
    tracker = MemoryBankTracker(start_score_threshold=0.5, keep_score_threshold=0.2)
    ids = run(tracker, [frame((A, LEFT, 0.4)), frame((A, LEFT, 0.6)), frame((A, LEFT, 0.3)),
                        frame((A, LEFT, 0.1))])
    # 0.4 cannot start; 0.6 starts; 0.3 continues (>= keep); 0.1 matches but is too weak: dropped
    assert ids == [[-1], [0], [0], [-1]]


def test_duplicates_of_a_detection_are_dropped():
    tracker = MemoryBankTracker()
    nearly_left = [1, 1, 21, 21]
    ids = run(tracker, [frame((A, LEFT, 0.9), (A, nearly_left, 0.8), (B, RIGHT, 0.9))])
    assert ids == [[0, -1, 1]]
    off = MemoryBankTracker(duplicate_iou=None, new_track_iou=None)
    assert run(off, [frame((A, LEFT, 0.9), (C, nearly_left, 0.8))]) == [[0, 1]]


def test_new_tracks_are_not_started_over_an_assigned_detection():
    tracker = MemoryBankTracker(duplicate_iou=None, new_track_iou=0.5)
    nearly_left = [1, 1, 21, 21]
    ids = run(tracker, [frame((A, LEFT, 0.9)), frame((A, LEFT, 0.9), (C, nearly_left, 0.8))])
    assert ids[-1] == [0, -1]


def test_matching_is_exclusive_and_in_score_order():
    tracker = MemoryBankTracker(duplicate_iou=None, new_track_iou=None)
    ids = run(tracker, [frame((A, LEFT, 0.9)), frame((A, RIGHT, 0.7), (A, LEFT, 0.95))])
    assert ids[-1] == [1, 0]  # the higher score takes the track, the other starts a new one


def test_categories_gate_matches():
    tracker = MemoryBankTracker()
    assert run(tracker, [frame((A, LEFT, 0.9, 0)), frame((A, LEFT, 0.9, 1))])[-1] == [1]
    loose = MemoryBankTracker(with_categories=False)
    assert run(loose, [frame((A, LEFT, 0.9, 0)), frame((A, LEFT, 0.9, 1))])[-1] == [0]


def test_backdrops_absorb_unmatched_lookalikes():
    # frame 0: A starts a track; a weak detection D (too weak to start) becomes a backdrop.
    d = [0.0, 0.0, 5.0]
    tracker = MemoryBankTracker(start_score_threshold=0.5)
    ids = run(tracker, [frame((A, LEFT, 0.9), (d, RIGHT, 0.3)), frame((d, RIGHT, 0.6))])
    assert ids == [[0, -1], [1]]  # D matches its backdrop (not track 0), so it starts its own track


@pytest.mark.parametrize("memory", ["momentum", "temporal"])
def test_memory_follows_a_slowly_changing_appearance(memory):
    tracker = MemoryBankTracker(memory=memory, metric="cosine", match_threshold=0.5)
    drift = [[5.0, 0.0, 0.0], [4.0, 3.0, 0.0], [3.0, 4.0, 0.0], [0.5, 5.0, 0.0]]
    ids = run(tracker, [frame((e, LEFT, 0.9)) for e in drift])
    assert ids == [[0], [0], [0], [0]]


def test_temporal_memory_weights_recent_and_confident_embeddings():
    tracker = MemoryBankTracker(memory="temporal", memory_length=3)
    run(tracker, [frame(([1.0, 0.0, 0.0], LEFT, 0.5)), frame(([0.0, 1.0, 0.0], LEFT, 0.5)),
                  frame(([0.0, 0.0, 1.0], LEFT, 1.0))])
    weights = torch.tensor([1 * 0.5, 2 * 0.5, 3 * 1.0])
    expected = weights / weights.sum()
    assert torch.allclose(tracker._track_embedding(tracker.tracks[0]), expected)


def test_bad_options_and_missing_embeddings_are_clear_errors():
    with pytest.raises(CrossVISError, match="metric"):
        MemoryBankTracker(metric="iou")
    with pytest.raises(CrossVISError, match="max_age"):
        MemoryBankTracker(max_age=0)
    det = frame((A, LEFT, 0.9))
    det.embeddings = None
    with pytest.raises(CrossVISError, match="embeddings"):
        MemoryBankTracker().update(det)


def test_near_duplicates_of_kept_detections_are_not_backdrops():
    # a weak near-duplicate of A (IoU 0.62: kept by the 0.7 duplicate rule, too weak to start a track)
    # must not become a backdrop that competes with A's track; a weak detection elsewhere does.
    near = [0, 0, 20, 13]
    tracker = MemoryBankTracker(start_score_threshold=0.5, backdrop_iou=0.5)
    ids = run(tracker, [frame((A, LEFT, 0.9), (A, near, 0.3), (C, RIGHT, 0.3))])
    assert ids == [[0, -1, -1]]
    (_, embeddings, _), = tracker.backdrops
    assert embeddings.tolist() == [C]
