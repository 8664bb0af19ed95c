"""The association and calibration components plugged into a CrossVIS model and a Predictor."""
import pytest
import torch

from tracking_fixtures import single_thread, synthetic_frames, tiny_recipe  # noqa: F401 (autouse fixture)

from crossvis.association import ContrastiveEmbeddingLoss
from crossvis.inference.predictor import Predictor
from crossvis.models import build_model

CALIBRATED_NECK = {"type": "temporal_calibration", "max_displacement": 1, "hidden_channels": 8,
                   "inner": {"type": "fpn", "in_features": ["res3", "res4", "res5"], "out_channels": 64}}


def _frame(ids, offset):
    """A 64x64 frame with one 24x24 square per identity (different places), uint8 masks."""
    image = torch.full((3, 64, 64), 90, dtype=torch.uint8)
    masks, boxes = [], []
    for k, _ in enumerate(ids):
        x0, y0 = 4 + 32 * k + offset, 8 + 20 * k
        m = torch.zeros(64, 64, dtype=torch.uint8)
        m[y0:y0 + 24, x0:x0 + 24] = 1
        image[:, y0:y0 + 24, x0:x0 + 24] = torch.tensor([200, 40 + 100 * k, 60])[:, None, None]
        masks.append(m)
        boxes.append([x0, y0, x0 + 24, y0 + 24])
    return {"image": image, "instances": {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                          "labels": torch.zeros(len(ids), dtype=torch.int64),
                                          "masks": torch.stack(masks), "ids": torch.tensor(ids)}}


class RecordingLoss(ContrastiveEmbeddingLoss):
    def forward(self, *args, **kwargs):
        self.inputs = args
        return super().forward(*args, **kwargs)


@pytest.mark.parametrize("crossover", [True, False])
def test_contrastive_loss_gets_every_location_with_its_identity(crossover):
    torch.manual_seed(0)
    loss = RecordingLoss()
    model = build_model(tiny_recipe(neck=CALIBRATED_NECK, crossover=crossover))
    model.embedding_loss = loss
    batch = [{"anchor": _frame([3, 5], 0), "reference": _frame([5, 3], 2)},
             {"anchor": _frame([1], 4), "reference": _frame([1, 6], 0)}]
    losses = model(batch)
    assert ("loss_cross_over" in losses) == crossover
    assert torch.isfinite(losses["loss_reid"]) and losses["loss_reid"] > 0
    key_emb, key_ids, ref_emb, ref_ids = loss.inputs
    assert key_emb.shape[:2] == key_ids.shape and key_emb.shape[0] == 2 and key_emb.shape[2] == 16
    assert set(key_ids[0].unique().tolist()) == {-1, 3, 5} and set(key_ids[1].unique().tolist()) == {-1, 1}
    assert set(ref_ids[1].unique().tolist()) == {-1, 1, 6}
    sum(losses.values()).backward()
    align = model.network.neck.align["shared"]
    for weight in (align.offset_net[-1].weight, align.weight):  # the offset net's last layer starts at 0
        assert weight.grad is not None and torch.count_nonzero(weight.grad) > 0


def test_weighted_sum_with_gbe_trains_the_proxies():
    torch.manual_seed(0)
    embedding = {"type": "weighted_embedding_sum", "weights": [1.0, 0.5],
                 "losses": [{"type": "global_focal_embedding"}, {"type": "contrastive_embedding"}]}
    model = build_model(tiny_recipe(embedding_loss=embedding, num_identities=8))
    assert model.proxies is not None
    losses = model([{"anchor": _frame([3, 5], 0), "reference": _frame([5, 3], 2)}])
    losses["loss_reid"].backward()
    assert model.proxies.weight.grad is not None and torch.count_nonzero(model.proxies.weight.grad) > 0


def test_predictor_resets_the_calibration_stream_per_video():
    recipe = tiny_recipe(neck=CALIBRATED_NECK)
    recipe["tracker"] = {"type": "memory_bank", "start_score_threshold": 0.0}
    torch.manual_seed(0)
    predictor = Predictor(recipe)
    frames = synthetic_frames(3, 64, 80)
    first = [(t.scores.clone(), t.track_ids.clone()) for t in predictor.track(frames)]
    second = [(t.scores.clone(), t.track_ids.clone()) for t in predictor.track(frames)]
    for (s1, i1), (s2, i2) in zip(first, second):
        assert torch.equal(s1, s2) and torch.equal(i1, i2)
    # the stream matters: frame 2 after frame 1 differs from frame 2 as the first frame of a video
    alone = list(predictor.track(frames[1:2]))[0]
    assert not torch.equal(alone.scores, first[1][0])
    assert len(first[0][1]) > 0


def test_the_fast_path_keeps_the_calibration_stream(caplog):
    """inference.fast on a model with a temporal neck: its backends would run copies of the network
    whose state the per-video reset does not reach; it runs the model's own network instead, with a
    warning, and tracks exactly as the default path."""
    recipe = tiny_recipe(neck=CALIBRATED_NECK)
    recipe["tracker"] = {"type": "memory_bank", "start_score_threshold": 0.0}
    torch.manual_seed(0)
    plain = Predictor(recipe)
    fast = Predictor({**recipe, "inference": {"fast": True, "cache": False}})
    fast.model.load_state_dict(plain.model.state_dict())
    assert "per-video state (TemporalCalibrationNeck)" in caplog.text
    videos = [synthetic_frames(3, 64, 80, seed=s) for s in (0, 1)]
    for frames in videos:
        for a, b in zip(plain.track(frames), fast.track(frames)):
            assert torch.equal(a.scores, b.scores) and torch.equal(a.track_ids, b.track_ids)
            assert torch.equal(a.masks, b.masks)
