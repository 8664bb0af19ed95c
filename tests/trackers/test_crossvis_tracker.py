"""The official CrossVIS association rule (reference §4.2) on hand-made sequences."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou
from tracker_cases import empty, frame

from crossvis.plugins import get_registry
from crossvis.structures import CrossVISError, FrameDetections
from crossvis.trackers import CrossVISTracker

A, B = [1.0, 0.0], [-1.0, 0.0]  # opposite embeddings: cosine -1 between the two objects


def ids_of(tracker, det) -> list[int]:
    return tracker.update(det).tolist()


def test_registered_and_repr():
    assert get_registry().get("tracker", "crossvis") is CrossVISTracker
    assert "new_track_threshold=0.4" in repr(CrossVISTracker())


def test_score_matrix_is_cosine_plus_iou_with_class_gate():
    torch.manual_seed(0)
    tracker = CrossVISTracker()
    first = frame([[0, 0, 10, 10], [20, 20, 40, 50], [5, 5, 30, 30]], [0.9, 0.8, 0.7], [0, 1, 0],
                  torch.randn(3, 8).tolist())
    tracker.update(first)
    second = frame([[2, 1, 12, 11], [22, 18, 41, 52]], [0.9, 0.6], [0, 0], torch.randn(2, 8).tolist())
    got = tracker.match_scores(second)
    expected = torch.empty(2, 3)
    for i in range(2):
        for k in range(3):
            if second.labels[i] != first.labels[k]:
                expected[i, k] = -1.0
            else:
                cos = F.cosine_similarity(second.embeddings[i], first.embeddings[k], dim=0)
                iou = box_iou(second.boxes[i:i + 1], first.boxes[k:k + 1])[0, 0]
                expected[i, k] = cos + iou
    torch.testing.assert_close(got, expected)


def test_ids_are_created_in_descending_score_order():
    tracker = CrossVISTracker()
    det = frame([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0.5, 0.9, 0.7], [0, 0, 0], [A, A, A])
    assert ids_of(tracker, det) == [2, 0, 1]
    assert tracker.num_tracks == 3


def test_two_objects_crossing_follow_their_embeddings():
    """Two objects swap places; at the crossing frame each box lies exactly on the other's last box,
    so IoU alone would swap the identities. The embeddings keep them."""
    tracker = CrossVISTracker()
    assert ids_of(tracker, frame([[0, 0, 20, 20], [30, 0, 50, 20]], [0.9, 0.8], [0, 0], [A, B])) == [0, 1]
    assert ids_of(tracker, frame([[10, 0, 30, 20], [20, 0, 40, 20]], [0.9, 0.8], [0, 0], [A, B])) == [0, 1]
    # A now sits where B was (IoU 1 with track 1's box), B where A was.
    assert ids_of(tracker, frame([[20, 0, 40, 20], [10, 0, 30, 20]], [0.9, 0.8], [0, 0], [A, B])) == [0, 1]
    assert ids_of(tracker, frame([[30, 0, 50, 20], [0, 0, 20, 20]], [0.8, 0.9], [0, 0], [A, B])) == [0, 1]
    assert tracker.num_tracks == 2


def test_iou_only_without_embeddings_would_swap():
    """Control for the crossing test: without embeddings the same boxes swap identities."""
    tracker = CrossVISTracker()
    tracker.update(frame([[10, 0, 30, 20], [20, 0, 40, 20]], [0.9, 0.8], [0, 0]))
    assert ids_of(tracker, frame([[20, 0, 40, 20], [10, 0, 30, 20]], [0.9, 0.8], [0, 0])) == [1, 0]


def test_disappearing_object_is_rematched_after_empty_frames():
    tracker = CrossVISTracker()
    both = frame([[0, 0, 20, 20], [50, 0, 70, 20]], [0.9, 0.8], [0, 1], [A, B])
    assert ids_of(tracker, both) == [0, 1]
    only_b = frame([[52, 0, 72, 20]], [0.8], [1], [B])
    assert ids_of(tracker, only_b) == [1]
    assert ids_of(tracker, empty()) == []
    assert ids_of(tracker, empty()) == []
    # A comes back far from where it was: the cosine (1.0) alone clears the 0.4 threshold.
    back = frame([[30, 30, 50, 50], [54, 0, 74, 20]], [0.9, 0.85], [0, 1], [A, B])
    assert ids_of(tracker, back) == [0, 1]
    assert tracker.num_tracks == 2


def test_category_change_starts_a_new_track():
    tracker = CrossVISTracker()
    assert ids_of(tracker, frame([[0, 0, 20, 20]], [0.9], [3], [A])) == [0]
    # Same box, same embedding (score would be 2.0) but another class: gate -> -1 -> new track.
    assert ids_of(tracker, frame([[0, 0, 20, 20]], [0.9], [4], [A])) == [1]
    # Both tracks exist now; the class-4 detection continues track 1, not track 0.
    assert ids_of(tracker, frame([[0, 0, 20, 20]], [0.9], [4], [A])) == [1]


def test_competing_detections_higher_match_score_wins_and_loser_is_dropped():
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [A]))
    # Detection 0 (higher detector score, processed first) matches with cos 1 + IoU 0.25 < the
    # second detection's cos 1 + IoU 1: the second replaces the first, which is dropped (-1),
    # not turned into a new track.
    det = frame([[10, 0, 30, 20], [0, 0, 20, 20]], [0.95, 0.6], [0, 0], [A, A])
    scores = tracker.match_scores(det)
    assert scores[1, 0] > scores[0, 0] > 0.4
    assert ids_of(tracker, det) == [-1, 0]
    assert tracker.num_tracks == 1
    torch.testing.assert_close(tracker.memory.boxes[0], torch.tensor([0.0, 0, 20, 20]))


def test_competing_detection_with_lower_match_score_is_dropped():
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [A]))
    det = frame([[0, 0, 20, 20], [10, 0, 30, 20]], [0.95, 0.6], [0, 0], [A, A])
    assert ids_of(tracker, det) == [0, -1]
    assert tracker.num_tracks == 1


def test_equal_match_scores_keep_the_first_proposal():
    tracker = CrossVISTracker()
    tracker.update(frame([[10, 0, 30, 20]], [0.9], [0], [A]))
    # Mirror images around the track's box: identical IoU and cosine; the higher-scoring detection,
    # processed first, keeps the track ("strictly higher" replaces).
    det = frame([[0, 0, 20, 20], [20, 0, 40, 20]], [0.6, 0.95], [0, 0], [A, A])
    assert ids_of(tracker, det) == [-1, 0]


def test_threshold_decides_between_match_and_new_track():
    # No embeddings: the score is the IoU alone. IoU 0.45 matches, IoU 0.35 starts a track.
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 100, 10]], [0.9], [0]))
    assert ids_of(tracker, frame([[0, 0, 45, 10]], [0.9], [0])) == [0]
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 100, 10]], [0.9], [0]))
    assert ids_of(tracker, frame([[0, 0, 35, 10]], [0.9], [0])) == [1]
    tracker = CrossVISTracker(new_track_threshold=0.3)
    tracker.update(frame([[0, 0, 100, 10]], [0.9], [0]))
    assert ids_of(tracker, frame([[0, 0, 35, 10]], [0.9], [0])) == [0]


def test_detections_of_one_frame_compare_with_memory_before_the_frame():
    # Two far-apart detections of the same object in the first frame: the second cannot match the
    # track the first one just created (it did not exist before the frame).
    tracker = CrossVISTracker()
    assert ids_of(tracker, frame([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0], [A, A])) == [0, 1]


def test_max_age_limits_how_long_a_track_can_be_matched():
    def run(max_age):
        tracker = CrossVISTracker(max_age=max_age)
        tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [A]))      # frame 0
        tracker.update(empty())                                       # frame 1
        tracker.update(empty())                                       # frame 2
        return ids_of(tracker, frame([[0, 0, 20, 20]], [0.9], [0], [A]))  # frame 3: age 3

    assert run(None) == [0]
    assert run(3) == [0]
    assert run(2) == [1]


def test_momentum_keeps_an_average_of_normalised_embeddings():
    tracker = CrossVISTracker(embedding_momentum=0.75)
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [[3.0, 0.0]]))
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [[0.0, 5.0]]))
    torch.testing.assert_close(tracker.memory.embeddings[0], torch.tensor([0.75, 0.25]))
    # A detection far away (IoU 0) with embedding (0, 1): official memory (last = (0, 1)) gives
    # cos 1 -> match; the average (0.75, 0.25) gives cos 0.316 < 0.4 -> new track.
    probe = frame([[60, 40, 80, 60]], [0.9], [0], [[0.0, 1.0]])
    expected_cos = 0.25 / math.hypot(0.75, 0.25)
    torch.testing.assert_close(tracker.match_scores(probe), torch.tensor([[expected_cos]]))
    assert ids_of(tracker, probe) == [1]
    official = CrossVISTracker()
    official.update(frame([[0, 0, 20, 20]], [0.9], [0], [[3.0, 0.0]]))
    official.update(frame([[0, 0, 20, 20]], [0.9], [0], [[0.0, 5.0]]))
    assert ids_of(official, probe) == [0]


def test_min_new_score_only_gates_new_tracks():
    tracker = CrossVISTracker(min_new_score=0.5)
    assert ids_of(tracker, frame([[0, 0, 20, 20], [40, 0, 60, 20]], [0.9, 0.3], [0, 0], [A, B])) == [0, -1]
    # A low-score detection may still continue an existing track.
    assert ids_of(tracker, frame([[0, 0, 20, 20]], [0.3], [0], [A])) == [0]
    assert tracker.num_tracks == 1


def test_reset_restarts_ids_and_bad_options_are_refused():
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [A]))
    tracker.reset()
    assert tracker.num_tracks == 0
    assert ids_of(tracker, frame([[0, 0, 20, 20]], [0.9], [1], [A])) == [0]
    for kwargs in ({"embedding_momentum": 1.0}, {"max_age": 0}, {"max_age": 2.5}, {"min_new_score": 2}):
        with pytest.raises(CrossVISError, match="tracker."):
            CrossVISTracker(**kwargs)


def test_mixing_frames_with_and_without_embeddings_is_an_error():
    tracker = CrossVISTracker()
    tracker.update(frame([[0, 0, 20, 20]], [0.9], [0], [A]))
    with pytest.raises(CrossVISError, match="embeddings"):
        tracker.update(frame([[0, 0, 20, 20]], [0.9], [0]))


# -- the rule as written in the reference, transcribed literally (lists of detections per track) --
def reference_tracker(frames: list[FrameDetections]) -> list[list[int]]:
    memory: dict[int, list[dict]] = {}
    out = []
    for t, det in enumerate(frames):
        n = len(det)
        if n == 0:
            out.append([])
            continue
        marks = []
        for i in range(n):
            best, best_k = None, None
            for k, dets in memory.items():
                last = dets[-1]
                if last["label"] != int(det.labels[i]):
                    s = -1.0
                else:
                    s = float(F.cosine_similarity(det.embeddings[i], last["emb"], dim=0)
                              + box_iou(det.boxes[i:i + 1], last["box"][None])[0, 0])
                if best is None or s > best:
                    best, best_k = s, k
            marks.append(("new", None) if best is None or best < 0.4 else (best_k, best))
        order = sorted(range(n), key=lambda i: -float(det.scores[i]))
        taken: dict[int, float] = {}
        for i in order:
            entry = {"frame": t, "i": i, "label": int(det.labels[i]), "emb": det.embeddings[i], "box": det.boxes[i]}
            k, s = marks[i]
            if k == "new":
                memory[len(memory)] = [entry]
            elif k not in taken:
                taken[k] = s
                memory[k].append(entry)
            elif s > taken[k]:
                taken[k] = s
                memory[k].pop()
                memory[k].append(entry)
        ids = [-1] * n
        for k, dets in memory.items():
            if dets[-1]["frame"] == t:
                ids[dets[-1]["i"]] = k
        out.append(ids)
    return out


@st.composite
def sequences(draw):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    frames = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(0, 5))
        xy = torch.randint(0, 40, (n, 2), generator=g).float()
        wh = torch.randint(4, 30, (n, 2), generator=g).float()
        scores = torch.rand(n, generator=g) * 0.9 + 0.05
        frames.append(FrameDetections(
            boxes=torch.cat([xy, xy + wh], 1), scores=scores,
            labels=torch.randint(0, 2, (n,), generator=g), image_size=(80, 80),
            embeddings=torch.randn(n, 3, generator=g)))
    return frames


@settings(max_examples=60, deadline=None)
@given(sequences())
def test_matches_a_literal_transcription_of_the_reference_rule(frames):
    tracker = CrossVISTracker()
    assert [tracker.update(det).tolist() for det in frames] == reference_tracker(frames)
