"""CrossVIS on frame pairs: crossover loss, embedding losses, gradient paths, recipes."""
from pathlib import Path

import pytest
import torch

from crossvis.losses.embedding import PairwiseEmbeddingLoss
from crossvis.models import build_model
from crossvis.recipes import load_recipe
from crossvis.errors import CrossVISError
from model_toys import empty_frame, frame, tiny_crossvis

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
KEYS = {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask", "loss_cross_over", "loss_reid"}


def _pair(shift=6, anchor_ids=(0, 1), reference_ids=(1, 2)):
    anchor = frame(64, 64, [("rect", (8, 8, 32, 40), 0, anchor_ids[0]), ("rect", (36, 16, 60, 56), 1, anchor_ids[1])], seed=1)
    reference = frame(64, 64, [("rect", (36 - shift, 20, 60 - shift, 60), 1, reference_ids[0]),
                               ("rect", (4, 36, 28, 60), 0, reference_ids[1])], seed=2)
    return {"anchor": anchor, "reference": reference}


def test_loss_keys_and_finite():
    torch.manual_seed(0)
    losses = tiny_crossvis()([_pair()])
    assert set(losses) == KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cross_over"] > 0  # identity 1 is in both frames


def test_crossover_equals_static_mask_loss_when_reference_is_anchor():
    # Without relative coordinates the drawn partner location does not matter, and with all positives
    # used (max_proposals = -1) both directions see exactly the static samples.
    torch.manual_seed(0)
    model = tiny_crossvis(rel_coords=False, max_proposals=-1)
    anchor = _pair()["anchor"]
    losses = model([{"anchor": anchor, "reference": anchor}])
    torch.testing.assert_close(losses["loss_cross_over"], losses["loss_mask"])


def test_no_shared_identity_and_empty_frame_are_finite_and_crossover_zero():
    torch.manual_seed(0)
    model = tiny_crossvis()
    losses = model([_pair(anchor_ids=(0, 1), reference_ids=(2, 3)),
                    {"anchor": empty_frame(seed=5), "reference": _pair()["reference"]}])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cross_over"].item() == 0.0
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_crossover_gradient_paths():
    torch.manual_seed(0)
    model = tiny_crossvis(embedding_loss=None)
    captured = {}
    network_forward = model.network.forward

    def recording_forward(images):
        out = network_forward(images)
        for t in [*out.controller, out.mask_feats]:
            t.retain_grad()
        captured["outputs"] = out
        return out

    model.network.forward = recording_forward
    pair = _pair()
    model([pair])["loss_cross_over"].backward()
    # anchor = batch item 0, reference = batch item 1
    _, targets = model.prepare_frames([pair["anchor"]])
    outputs = captured["outputs"]
    assignment = model.criterion.assign(outputs.select(slice(0, 1)), targets)
    grads = torch.cat([g.grad[0].flatten(1) for g in outputs.controller], dim=1).abs().sum(0)  # [L]
    positive_gt = assignment.gt_inds[assignment.positives]
    shared = assignment.positives[positive_gt == 1]  # anchor GT 1 (identity 1) is in the reference
    assert shared.numel() > 0 and grads[shared].gt(0).all()
    others = torch.ones_like(grads, dtype=torch.bool)
    others[shared] = False
    assert grads[others].abs().max() == 0  # only positives of an instance present in frame t+δ
    assert outputs.mask_feats.grad[1].abs().sum() > 0  # frame t+δ mask features


def test_identity_out_of_range_is_a_crossvis_error():
    model = tiny_crossvis(num_identities=3)
    with pytest.raises(CrossVISError, match="identity id 7"):
        model([_pair(reference_ids=(1, 7))])


def test_training_without_num_identities_is_a_crossvis_error():
    model = tiny_crossvis(num_identities=None)
    assert model.proxies is None
    with pytest.raises(CrossVISError, match="num_identities"):
        model([_pair()])


def test_pairwise_embedding_needs_no_proxies():
    torch.manual_seed(0)
    model = tiny_crossvis(embedding_loss=PairwiseEmbeddingLoss(), crossover=False)
    assert model.proxies is None
    losses = model([_pair()])
    assert "loss_cross_over" not in losses and torch.isfinite(losses["loss_reid"])


def test_backbone_gradient_scaling():
    def grads(scale):
        torch.manual_seed(0)
        model = tiny_crossvis(backbone_grad_scale=scale, max_proposals=-1, crossover=False)
        sum(model([_pair()]).values()).backward()
        return model.network.backbone.stem[0][0].weight.grad, model.network.head.cls_logits.weight.grad

    (b1, h1), (b2, h2) = grads(1.0), grads(0.1)
    torch.testing.assert_close(b2, 0.1 * b1, rtol=1e-3, atol=1e-4 * b1.abs().max().item())
    torch.testing.assert_close(h2, h1)


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = tiny_crossvis()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = [_pair(), _pair(shift=10, anchor_ids=(3, 4), reference_ids=(4, 5))]
    totals = []
    for _ in range(15):
        total = sum(model(batch).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.7 * totals[0]


def test_predict_fills_embeddings():
    torch.manual_seed(0)
    det = tiny_crossvis(score_threshold=0.0).predict([torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8)])[0]
    assert det.embeddings.shape == (len(det), 16) and len(det) > 0


@pytest.mark.parametrize("name, count", [("crossvis_R50_1x", 37_417_569), ("crossvis_R101_1x", 56_357_473),
                                         ("crossvis_lite_DLA34", 27_365_199)])
def test_official_parameter_counts(name, count):
    model = build_model(load_recipe(RECIPES / f"{name}.yaml"), num_classes=40, num_identities=3774)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("name", ["condinst_vis_R50", "crossvis_R50_no_crossover", "crossvis_R50_pairwise_ce",
                                  "crossvis_R50_pairwise_focal", "crossvis_R50_softmax_embed"])
def test_ablation_recipes_build(name):
    model = build_model(load_recipe(RECIPES / f"{name}.yaml"), num_classes=40, num_identities=3774)
    assert model.crossover == (name not in ("condinst_vis_R50", "crossvis_R50_no_crossover"))
