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


@pytest.mark.parametrize("assignment", ["masktrack", "hungarian", "greedy"])
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


def test_default_is_masktrack_rule():
    assert MaskTrackScoringTracker().assignment == "masktrack"


def _one_track(**kwargs):
    tracker = MaskTrackScoringTracker(**kwargs)
    assert tracker.update(frame([[0, 0, 10, 10]], [0.9], [0], [[4.0, 0.0]])).tolist() == [0]
    return tracker


def test_masktrack_later_higher_scoring_detection_takes_the_track_over():
    """Both detections share the track's embedding, so both argmax to track 0 (logits [0, 16]:
    log p = -log(1 + e^-16) ≈ 0 against ≈ -16 for "new"). Slot scores by hand:
    det 0 (score 0.9, IoU 50/100 = 0.5): log 0.9 + 2·0.5 + 10 = 10.895;
    det 1 (score 0.8, IoU 1):            log 0.8 + 2·1   + 10 = 11.777.
    det 0 claims first, det 1 scores higher and takes over; det 0 gets no id and starts no track."""
    tracker = _one_track()
    det = frame([[0, 0, 10, 5], [0, 0, 10, 10]], [0.9, 0.8], [0, 0], [[4.0, 0.0], [4.0, 0.0]])
    scores = tracker.slot_scores(det)
    torch.testing.assert_close(scores[:, 1], torch.tensor([math.log(0.9) + 11.0, math.log(0.8) + 12.0]), atol=1e-5,
                               rtol=0)
    assert tracker.update(det).tolist() == [-1, 0]
    assert tracker.num_tracks == 1
    assert tracker.memory.boxes[0].tolist() == [0, 0, 10, 10]   # the winner's box is the track's memory


def test_masktrack_later_lower_scoring_claimant_gets_no_id():
    tracker = _one_track()
    det = frame([[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.8], [0, 0], [[4.0, 0.0], [4.0, 0.0]])
    assert tracker.update(det).tolist() == [0, -1]
    assert tracker.num_tracks == 1 and tracker.memory.boxes[0].tolist() == [0, 0, 10, 10]


def test_masktrack_rule_differs_from_one_to_one_assignments():
    """The same frame under Hungarian / global greedy: every detection gets an id, the loser a new track."""
    for assignment in ("hungarian", "greedy"):
        tracker = _one_track(assignment=assignment)
        det = frame([[0, 0, 10, 5], [0, 0, 10, 10]], [0.9, 0.8], [0, 0], [[4.0, 0.0], [4.0, 0.0]])
        assert tracker.update(det).tolist() == [1, 0], assignment


def test_masktrack_new_slot_and_claims_in_one_frame():
    """A detection whose best slot is "new" starts a track even while others fight over track 0."""
    tracker = _one_track()
    det = frame([[0, 0, 10, 5], [50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.85, 0.8], [0, 0, 0],
                [[4.0, 0.0], [-4.0, 0.0], [4.0, 0.0]])
    # det 1: logits [0, -16] -> "new" wins (log p ≈ 0 + 10 vs ≈ -16 + 0 + 10)
    assert tracker.update(det).tolist() == [-1, 1, 0]
    assert tracker.num_tracks == 2


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
