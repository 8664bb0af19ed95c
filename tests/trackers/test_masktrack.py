"""MaskTrack R-CNN-style scoring tracker on hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch
from tracker_cases import frame

from crossvis.plugins import get_registry
from crossvis.errors import CrossVISError
from crossvis.trackers import MaskTrackScoringTracker


def test_registered():
    assert get_registry().get("tracker", "masktrack") is MaskTrackScoringTracker


def test_slot_scores_by_hand():
    tracker = MaskTrackScoringTracker()
    tracker.update(frame([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.8], [0, 1], [[1.0, 0.0], [0.0, 2.0]]))
    det = frame([[0, 0, 10, 5]], [0.5], [0], [[2.0, 1.0]])
    # logits [0, <(2,1),(1,0)> = 2, <(2,1),(0,2)> = 2]; IoU with track 0 = 50/100, track 1 = 0.
    log_z = math.log(1 + 2 * math.exp(2))
    log_s = math.log(0.5)
    expected = torch.tensor([[
        0 - log_z + log_s + 10.0,                    # new slot: class-compatible, no IoU
        2 - log_z + log_s + 2.0 * 0.5 + 10.0,        # track 0: same class
        2 - log_z + log_s + 0.0,                     # track 1: other class
    ]])
    torch.testing.assert_close(tracker.slot_scores(det), expected)


@pytest.mark.parametrize("assignment", ["hungarian", "greedy"])
def test_tracks_two_objects_and_starts_new_ones(assignment):
    tracker = MaskTrackScoringTracker(assignment=assignment)
    e0, e1 = [4.0, 0.0], [0.0, 4.0]
    assert tracker.update(frame([[0, 0, 10, 10], [20, 0, 30, 10]], [0.6, 0.9], [0, 0], [e0, e1])).tolist() == [1, 0]
    # Swapped order, moved a little: still the same ids.
    got = tracker.update(frame([[21, 0, 31, 10], [1, 0, 11, 10]], [0.9, 0.6], [0, 0], [e1, e0]))
    assert got.tolist() == [0, 1]
    # An object with an unrelated embedding (dot product 0 with both tracks, far away) is new.
    got = tracker.update(frame([[60, 60, 70, 70]], [0.9], [0], [[-4.0, -4.0]]))
    assert got.tolist() == [2]


def test_hungarian_and_greedy_differ_where_greedy_is_myopic():
    """Detection 0 (zero embedding, on both boxes) scores best on track 0 but nearly as well on
    track 1; detection 1 (far away) is only good on track 0 by its embedding. Hungarian maximises
    the total, greedy takes the single best pair first."""
    def run(assignment):
        tracker = MaskTrackScoringTracker(w_det=0.0, w_iou=10.0, w_cat=0.0, assignment=assignment)
        tracker.update(frame([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8], [0, 0], [[1.0, 0.0], [0.0, 1.0]]))
        det = frame([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 0], [[0.0, 0.0], [20.0, -1.0]])
        scores = tracker.slot_scores(det)
        # det 0: new -log 3, track 0 -log 3 + 10, track 1 -log 3 + 9; det 1: about -20, 0, -21.
        torch.testing.assert_close(scores[0], torch.tensor([0.0, 10.0, 9.0]) - math.log(3))
        assert scores[1, 1] > -1e-6 and scores[1, 0] < -19 and scores[1, 2] < -20.5
        return tracker.update(det).tolist()

    assert run("greedy") == [0, 2]      # det 0 takes track 0; det 1 is left with a new track
    assert run("hungarian") == [1, 0]   # total 9 - log 3 + 0 beats 10 - log 3 - 20


def test_needs_embeddings_and_a_known_assignment():
    with pytest.raises(CrossVISError, match="assignment"):
        MaskTrackScoringTracker(assignment="auction")
    with pytest.raises(CrossVISError, match="embeddings"):
        MaskTrackScoringTracker().update(frame([[0, 0, 10, 10]], [0.9], [0]))
