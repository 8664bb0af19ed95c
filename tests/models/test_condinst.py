"""CondInst end to end: losses, empty ground truth, overfitting, inference sizes, recipes."""
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from crossvis.models import build_model
from crossvis.recipes import load_recipe
from crossvis.structures import CrossVISError, FrameDetections
from model_toys import empty_frame, frame, tiny_condinst

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
TWO_FRAMES = [
    dict(objects=[("rect", (8, 8, 32, 40), 0, 0), ("rect", (36, 16, 60, 56), 1, 1)], seed=1),
    dict(objects=[("rect", (8, 12, 40, 32), 1, 2), ("rect", (36, 36, 60, 60), 0, 3)], seed=2),
]


def _frames():
    return [frame(64, 64, **f) for f in TWO_FRAMES]


def test_training_losses_keys_and_backward():
    torch.manual_seed(0)
    model = tiny_condinst()
    losses = model(_frames())
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
    sum(losses.values()).backward()
    assert model.network.controller.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(v) for v in losses.values())


def test_empty_ground_truth_gives_exact_zero_box_ctr_mask_losses():
    torch.manual_seed(0)
    model = tiny_condinst()
    losses = model([empty_frame(seed=3), empty_frame(seed=4)])
    for key in ("loss_fcos_loc", "loss_fcos_ctr", "loss_mask"):
        assert losses[key].item() == 0.0
        assert losses[key].requires_grad
    assert torch.isfinite(losses["loss_fcos_cls"]) and losses["loss_fcos_cls"] > 0
    sum(losses.values()).backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_mixed_empty_and_annotated_frames():
    torch.manual_seed(0)
    losses = tiny_condinst()([empty_frame(seed=3), _frames()[0]])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] > 0


def _mask_iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


def test_overfits_two_synthetic_images():
    torch.manual_seed(0)
    model = tiny_condinst()
    frames = _frames()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = None
    for _ in range(200):
        losses = model(frames)
        total = sum(losses.values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first
    for f, det in zip(frames, model.predict([f["image"] for f in frames])):
        gt = f["instances"]
        for k in range(len(gt["labels"])):
            overlaps = box_iou(gt["boxes"][k:k + 1], det.boxes)[0]
            # the best-scored detection of the right class on this object (detections are score-sorted)
            match = [j for j in range(len(det)) if det.labels[j] == gt["labels"][k] and overlaps[j] > 0.5]
            assert match, f"object {k} not detected"
            assert _mask_iou(det.masks[match[0]], gt["masks"][k].bool()) >= 0.8


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (101, 30), (1, 1)])
def test_predict_returns_original_size(size):
    torch.manual_seed(0)
    model = tiny_condinst(score_threshold=0.0, max_detections=7).train()
    image = torch.randint(0, 255, (3, *size), dtype=torch.uint8)
    (det,) = model.predict([image])
    assert model.training  # predict restores the mode
    assert isinstance(det, FrameDetections)
    assert det.image_size == size
    assert det.masks.shape == (len(det), *size) and det.masks.dtype == torch.bool
    assert len(det) <= 7 and det.embeddings is None
    assert (det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= size[1]).all()
    assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
    assert (det.scores[:-1] >= det.scores[1:]).all()


def test_predict_with_default_threshold_keeps_scores_above_sqrt_threshold():
    torch.manual_seed(0)
    model = tiny_condinst(score_threshold=0.01)
    det = model.predict([torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8)])[0]
    assert (det.scores > 0.1).all()


def test_bad_frame_is_a_crossvis_error():
    model = tiny_condinst()
    bad = _frames()[0]
    del bad["instances"]["masks"]
    with pytest.raises(CrossVISError, match="masks"):
        model([bad])
    bad = _frames()[0]
    bad["instances"]["labels"] = torch.tensor([0, 5])
    with pytest.raises(CrossVISError, match="num_classes"):
        model([bad])


def test_r50_recipe_builds_and_predicts_360x640():
    torch.manual_seed(0)
    recipe = load_recipe(RECIPES / "condinst_R50.yaml", overrides=["model.score_threshold=0.0"])
    model = build_model(recipe, num_classes=40)
    net = model.network
    assert sum(p.numel() for p in net.controller.parameters()) == 389_545
    assert sum(p.numel() for p in net.mask_branch.parameters()) == 1_477_384
    assert sum(p.numel() for p in net.head.parameters()) == 4_828_466
    (det,) = model.predict([torch.randint(0, 255, (3, 360, 640), dtype=torch.uint8)])
    assert det.masks.shape[1:] == (360, 640) and 0 < len(det) <= 100


def test_build_model_needs_num_classes():
    recipe = load_recipe(RECIPES / "condinst_R50.yaml", ["data.categories=null"])
    with pytest.raises(CrossVISError, match="num_classes"):
        build_model(recipe)
    # the dataset base declares YouTube-VIS 2019's 40 categories
    assert build_model(load_recipe(RECIPES / "condinst_R50.yaml")).num_classes == 40


def test_class_agnostic_nms_keeps_one_detection_per_box():
    """Random weights give many same-box detections of different classes: class-aware NMS (the
    official rule) keeps them, class-agnostic NMS leaves no two boxes above the IoU threshold."""
    torch.manual_seed(0)
    image = [torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)]
    aware = tiny_condinst(score_threshold=0.001, nms_threshold=0.5).eval()
    agnostic = tiny_condinst(score_threshold=0.001, nms_threshold=0.5, class_agnostic_nms=True).eval()
    agnostic.load_state_dict(aware.state_dict())
    with torch.no_grad():
        det_aware, det_agnostic = aware.predict(image)[0], agnostic.predict(image)[0]
    iou = box_iou(det_aware.boxes, det_aware.boxes).fill_diagonal_(0)
    assert (iou > 0.5).any()  # the class-aware result has overlapping boxes (of different classes)
    iou = box_iou(det_agnostic.boxes, det_agnostic.boxes).fill_diagonal_(0)
    assert len(det_agnostic) > 0 and not (iou > 0.5).any()
    # the best detection survives either way
    assert float(det_agnostic.scores[0]) == float(det_aware.scores[0])
