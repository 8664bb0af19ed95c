"""Predictor: a random-weight tiny CrossVIS model tracked online, checkpoints, tracker choice."""
from __future__ import annotations

import re

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from torch import nn
from tracking_fixtures import save_checkpoint, single_thread, synthetic_frames, tiny_recipe  # noqa: F401 (autouse fixture)

from crossvis.inference.predictor import OnlinePredictor, Predictor, build_tracker
from crossvis.structures import CrossVISError, FrameDetections, TrackedInstances
from crossvis.trackers import CrossVISTracker, MaskTrackScoringTracker


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(tiny_recipe())


@pytest.mark.parametrize("size", [(360, 640), (241, 333)])
def test_track_yields_masks_at_frame_size_and_consistent_results(predictor, size):
    h, w = size
    frames = synthetic_frames(2, h, w)
    outputs = list(predictor.track(frames))
    assert len(outputs) == 2
    seen: dict[int, dict[int, np.ndarray]] = {}
    for t, inst in enumerate(outputs):
        assert isinstance(inst, TrackedInstances)
        assert inst.image_size == (h, w)
        assert inst.masks.dtype == torch.bool and inst.masks.shape == (len(inst), h, w)
        assert inst.track_ids.dtype == torch.int64 and (inst.track_ids >= 0).all()
        assert len(set(inst.track_ids.tolist())) == len(inst)
        assert inst.boxes.shape == (len(inst), 4) and inst.embeddings.shape == (len(inst), 16)
        for tid, mask in zip(inst.track_ids.tolist(), inst.masks.numpy()):
            seen.setdefault(tid, {})[t] = mask
    assert sum(len(o) for o in outputs) > 0, "the tiny model should detect something with score_threshold 0"
    entries = predictor.video_results(video_id=5)
    assert len(entries) == len(seen)
    for tid, entry in zip(sorted(seen), entries):
        assert entry["video_id"] == 5 and len(entry["segmentations"]) == 2
        for t, rle in enumerate(entry["segmentations"]):
            if t not in seen[tid]:
                assert rle is None
                continue
            decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            np.testing.assert_array_equal(decoded.astype(bool), seen[tid][t])


def test_track_resets_between_videos_and_leaves_no_inference_mode(predictor):
    frames = synthetic_frames(2, 64, 96)
    first = [inst.track_ids.tolist() for inst in predictor.track(frames)]
    second = []
    for inst in predictor.track(frames):
        assert not torch.is_inference_mode_enabled()
        second.append(inst.track_ids.tolist())
    assert first == second  # same frames, fresh tracker: same ids from 0
    assert len(predictor.video_results(1)) == len({i for ids in second for i in ids})


def test_bad_frames_are_clear_errors(predictor):
    with pytest.raises(CrossVISError, match="frame 1 must be an H×W×3 uint8"):
        list(predictor.track([np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96), np.uint8)]))
    with pytest.raises(CrossVISError, match="float32"):
        list(predictor.track([np.zeros((64, 96, 3), np.float32)]))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, predictor):
    ckpt = save_checkpoint(predictor.model, tmp_path / "model.pth")
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = Predictor(tiny_recipe(), checkpoint=ckpt)
    for key, value in predictor.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    frames = synthetic_frames(2, 80, 120)
    a = [inst.scores for inst in predictor.track(frames)]
    b = [inst.scores for inst in loaded.track(frames)]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_mismatching_checkpoint_names_file_and_keys(tmp_path, predictor):
    state = predictor.model.state_dict()
    dropped = next(iter(state))
    partial = {k: v for k, v in state.items() if k != dropped}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(CrossVISError, match=r"partial\.pth.*missing: " + re.escape(dropped)):
        Predictor(tiny_recipe(), checkpoint=tmp_path / "partial.pth")
    other = Predictor(tiny_recipe(num_classes=5))
    torch.save({"model": other.model.state_dict()}, tmp_path / "five.pth")
    with pytest.raises(CrossVISError, match=r"five\.pth.*shape mismatch: .*cls_logits"):
        Predictor(tiny_recipe(), checkpoint=tmp_path / "five.pth")
    with pytest.raises(CrossVISError, match="does not exist"):
        Predictor(tiny_recipe(), checkpoint=tmp_path / "nope.pth")


def test_num_classes_from_the_checkpoint_recipe(tmp_path):
    other = Predictor(tiny_recipe(num_classes=5))
    recipe = tiny_recipe()
    ckpt = save_checkpoint(other.model, tmp_path / "five.pth", recipe=tiny_recipe(num_classes=5))
    del recipe["model"]["num_classes"]
    assert Predictor(recipe, checkpoint=ckpt).model.num_classes == 5


def test_tracker_comes_from_the_recipe():
    assert isinstance(Predictor(tiny_recipe()).tracker, CrossVISTracker)
    recipe = tiny_recipe()
    recipe["tracker"] = {"type": "masktrack", "assignment": "greedy"}
    tracker = Predictor(recipe).tracker
    assert isinstance(tracker, MaskTrackScoringTracker) and tracker.assignment == "greedy"
    recipe["tracker"] = {"type": "crossvis", "max_age": 5}
    assert Predictor(recipe).tracker.max_age == 5
    recipe["tracker"] = {"type": "sort"}
    with pytest.raises(CrossVISError, match="unknown tracker 'sort'"):
        Predictor(recipe)


class PlannedModel(nn.Module):
    """Returns pre-planned detections, one FrameDetections per call, whatever the image."""

    num_classes = 3

    def __init__(self, plan: list[FrameDetections]) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.plan = plan
        self.calls = 0

    def predict(self, images):
        det = self.plan[self.calls]
        self.calls += 1
        assert images[0].shape[1:] == det.image_size
        return [det]


def det(boxes, scores, labels, emb, size=(40, 60)) -> FrameDetections:
    h, w = size
    masks = torch.zeros((len(scores), h, w), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = True
    embeddings = torch.tensor(emb, dtype=torch.float32).reshape(len(scores), -1)
    return FrameDetections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores),
                           torch.tensor(labels), size, masks, embeddings)


def test_online_predictor_runs_the_official_tracker_through_its_runner():
    plan = [det([[0, 0, 10, 10], [30, 0, 40, 10]], [0.9, 0.8], [0, 2], [[1, 0], [0, 1]]),
            FrameDetections.empty((40, 60), embed_dim=2),
            det([[31, 0, 41, 10], [0, 0, 10, 10], [1, 1, 10, 10]], [0.85, 0.7, 0.6], [2, 0, 0],
                [[0, 1], [1, 0], [1, 0]])]
    model = PlannedModel(plan)
    calls = []

    def runner(images):
        calls.append(len(images))
        return model.predict(images)

    predictor = OnlinePredictor(model, runner=runner)
    assert isinstance(predictor.tracker, CrossVISTracker) and predictor.device == torch.device("cpu")
    out = list(predictor.track([np.zeros((40, 60, 3), np.uint8)] * 3))
    assert calls == [1, 1, 1] and model.calls == 3
    assert [o.track_ids.tolist() for o in out] == [[0, 1], [], [1, 0]]  # third detection lost to the second
    entries = predictor.video_results(3)
    assert [e["category_id"] for e in entries] == [1, 3]
    assert entries[0]["score"] == pytest.approx((0.9 + 0.7) / 2)
    assert [s is None for s in entries[1]["segmentations"]] == [False, True, False]


def test_online_predictor_from_parts_tracks_like_the_recipe_predictor(tmp_path, predictor):
    ckpt = save_checkpoint(predictor.model, tmp_path / "model.pth")
    recipe = tiny_recipe()
    recipe["tracker"] = {"type": "crossvis", "max_age": 1}
    from_recipe = Predictor(recipe, checkpoint=ckpt)
    torch.manual_seed(7)  # a different random init, overwritten by the same weights
    model = Predictor(tiny_recipe()).model
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    categories = [{"id": 4, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "eel"}]
    from_parts = OnlinePredictor(model, tracker=build_tracker(recipe), categories=categories, device="cpu")
    assert from_parts.tracker.max_age == 1 and from_parts.category_name(1) == "dog"
    frames = synthetic_frames(3, 72, 100)
    a, b = list(from_recipe.track(frames)), list(from_parts.track(frames))
    assert sum(len(x) for x in a) > 0
    for x, y in zip(a, b):
        for key in ("track_ids", "scores", "labels", "boxes", "masks"):
            assert torch.equal(getattr(x, key), getattr(y, key)), key
    expected = from_recipe.video_results(2)
    got = from_parts.video_results(2)
    ids = {0: 4, 1: 7, 2: 9}  # the recipe predictor has no categories: id = label + 1
    assert [ids[e["category_id"] - 1] for e in expected] == [e["category_id"] for e in got]
    assert [(e["score"], e["segmentations"]) for e in expected] == [(e["score"], e["segmentations"]) for e in got]


def test_online_predictor_rejects_categories_that_do_not_fit_the_model():
    with pytest.raises(CrossVISError, match="2 categories but the model predicts 3"):
        OnlinePredictor(PlannedModel([]), categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])


def test_fast_flag_is_stored():
    assert Predictor(tiny_recipe(), fast=True).fast is True
