"""The model API seams: CrossVIS forwards CondInst's keywords, typed network outputs, a swappable FCOS loss."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from tracking_fixtures import tiny_recipe

from crossvis.hookspecs import hookimpl
from crossvis.losses.fcos import FCOSLoss
from crossvis.models import (CondInst, CondInstCriterion, CondInstPostProcessor, CrossVIS, NetworkOutputs, build_model,
                             forwards_keywords)
from crossvis.plugins import register_plugin, reset_plugin_manager
from crossvis.recipes import RecipeError, check_kwargs
from model_toys import frame, tiny_condinst, tiny_crossvis, tiny_parts


def _keyword_only(factory) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(factory).parameters.items() if p.kind is p.KEYWORD_ONLY}


# -- one home for CondInst's settings --------------------------------------------------------------
def test_crossvis_signature_lists_every_condinst_setting_with_its_default():
    crossvis = inspect.signature(CrossVIS).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in crossvis.values())
    condinst = _keyword_only(CondInst)
    assert set(condinst) == {  # the model-node recipe keys besides the component nodes
        "fcos_loss", "sizes_of_interest", "center_sampling_radius", "max_proposals", "mask_head_channels",
        "mask_head_layers", "rel_coords", "backbone_grad_scale", "pixel_mean", "pixel_std", "input_format",
        "size_divisibility", "min_size_test", "max_size_test", "score_threshold", "pre_nms_topk", "nms_threshold",
        "max_detections", "mask_threshold", "class_agnostic_nms"}
    for name, param in condinst.items():
        assert crossvis[name].default == param.default and crossvis[name].kind is param.KEYWORD_ONLY, name
    own = [n for n in crossvis if n not in condinst]
    assert own == ["backbone", "neck", "head", "mask_branch", "embedding_loss", "num_identities", "crossover"]


def test_settings_given_to_crossvis_reach_condinst_parts():
    loss = FCOSLoss(focal_alpha=0.4)
    model = tiny_crossvis(score_threshold=0.3, nms_threshold=0.5, center_sampling_radius=2.0, max_proposals=7,
                          mask_head_layers=2, fcos_loss=loss, min_size_test=80)
    assert model.postprocessor.score_threshold == 0.3 and model.postprocessor.nms_threshold == 0.5
    assert model.criterion.assigner.radius == 2.0 and model.criterion.max_proposals == 7
    assert model.criterion.fcos_loss is loss and model.preprocessor.min_size_test == 80
    # two dynamic layers on 8 mask features + 2 relative coordinates: (10·8 + 8) + (8·1 + 1)
    assert model.mask_head.num_params == 97 and model.network.controller.out_channels == 97
    assert tiny_crossvis().mask_head.num_params == 169  # the official three layers


def test_a_mistyped_setting_is_an_error_in_python_and_in_recipes():
    with pytest.raises(TypeError, match="scor_threshold"):
        CrossVIS(*tiny_parts(embed_dim=16), scor_threshold=0.1)
    with pytest.raises(RecipeError, match=r"model 'crossvis' has no argument 'scor_threshold' \(did you mean "
                                          r"'score_threshold'\?\)"):
        build_model(tiny_recipe(scor_threshold=0.1))
    with pytest.raises(RecipeError, match=r"did you mean 'center_sampling_radius'"):
        build_model(tiny_recipe(center_sampling_radus=2.0))


def test_forwards_keywords_serves_a_plugin_subclass():
    class WiderCondInst(CondInst):
        @forwards_keywords(CondInst.__init__)
        def __init__(self, backbone, neck, head, mask_branch=None, *, width: int = 2, **settings):
            super().__init__(backbone, neck, head, mask_branch, **settings)
            self.width = width

    params = inspect.signature(WiderCondInst).parameters
    assert list(params)[:5] == ["backbone", "neck", "head", "mask_branch", "width"] and "max_detections" in params
    parts = ("backbone", "neck", "head")
    check_kwargs("model", "wider", WiderCondInst, {"width": 3, "max_detections": 5}, {}, injected=parts)
    with pytest.raises(RecipeError, match="did you mean 'max_detections'"):
        check_kwargs("model", "wider", WiderCondInst, {"max_detection": 5}, {}, injected=parts)
    model = WiderCondInst(*tiny_parts(), width=3, max_detections=5)
    assert model.width == 3 and model.postprocessor.max_detections == 5


def test_criterion_and_post_processor_take_their_settings_by_keyword_only():
    model = tiny_condinst()
    head, strides = model.mask_head, model.network.strides
    with pytest.raises(TypeError):
        CondInstPostProcessor(strides, head, 8, 0.5)
    with pytest.raises(TypeError):
        CondInstCriterion(2, strides, [64.0, 128.0], head, None, 8, 1.5)
    for factory, first_setting in ((CondInstPostProcessor, "mask_feat_stride"), (CondInstCriterion, "fcos_loss")):
        params = list(inspect.signature(factory).parameters.values())
        index = [p.name for p in params].index(first_setting)
        assert all(p.kind is p.KEYWORD_ONLY for p in params[index:]), factory
    criterion = CondInstCriterion(2, strides, [64.0, 128.0], head, max_proposals=3, center_sampling_radius=2.5)
    sample = criterion.subsample(torch.arange(10, 20))
    assert criterion.assigner.radius == 2.5 and sample.numel() == 3 and len(set(sample.tolist())) == 3
    assert all(10 <= i < 20 for i in sample.tolist())
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = model.network(torch.randn(1, 3, 64, 64))
    (every,) = CondInstPostProcessor(strides, head, score_threshold=0.0)(outputs, [(64, 64)], [(64, 64)])
    (two,) = CondInstPostProcessor(strides, head, score_threshold=0.0, max_detections=2)(outputs, [(64, 64)],
                                                                                        [(64, 64)])
    assert len(every) > 2 and 1 <= len(two) <= 2  # the two best after NMS, less any empty after clipping
    assert torch.equal(two.boxes, every.boxes[:len(two)]) and torch.equal(two.scores, every.scores[:len(two)])


# -- typed network outputs -------------------------------------------------------------------------
def test_network_outputs_hold_the_documented_shapes_and_dtypes():
    torch.manual_seed(0)
    model = tiny_crossvis(num_classes=3).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        dense, sparse = model.network(images), model.network(images, dense=False)
    assert isinstance(dense, NetworkOutputs) and dense.num_levels == 3 and dense.has_embeddings
    assert set(dense.present()) == {"cls_logits", "bbox_reg", "ctrness", "controller", "embeddings", "mask_feats"}
    assert set(sparse.present()) == {"cls_logits", "bbox_reg", "ctrness", "bbox_features", "embed_features",
                                     "mask_feats"}
    for level, stride in enumerate((8, 16, 32)):
        hw = (64 // stride, 96 // stride)
        assert dense.cls_logits[level].shape == (2, 3, *hw)
        assert dense.bbox_reg[level].shape == (2, 4, *hw) and (dense.bbox_reg[level] >= 0).all()
        assert dense.ctrness[level].shape == (2, 1, *hw)
        assert dense.controller[level].shape == (2, 169, *hw)
        assert dense.embeddings[level].shape == (2, 16, *hw)
        assert sparse.bbox_features[level].shape == sparse.embed_features[level].shape == (2, 32, *hw)
    assert dense.mask_feats.shape == (2, 8, 8, 12)
    assert all(t.dtype == torch.float32 for v in dense.present().values() for t in (v if isinstance(v, list) else [v]))
    condinst = tiny_condinst().eval()
    with torch.no_grad():
        plain = condinst.network(images)
    assert not plain.has_embeddings and plain.embeddings is None and plain.embed_features is None


def test_network_outputs_select_is_the_network_on_those_images_and_map_keeps_absent_fields():
    torch.manual_seed(0)
    model = tiny_crossvis().eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        whole, alone = model.network(images).select(slice(1, 3)), model.network(images[1:3])
    for name, value in alone.present().items():
        got = whole.present()[name]
        for a, b in zip(got if isinstance(got, list) else [got], value if isinstance(value, list) else [value]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    doubled = alone.map(lambda t: t.double())
    assert doubled.mask_feats.dtype == torch.float64 and doubled.controller[2].dtype == torch.float64
    assert doubled.bbox_features is None and alone.controller[0].dtype == torch.float32


# -- the FCOS loss from the registry ---------------------------------------------------------------
class ScaledFCOSLoss(nn.Module):
    """A plugin detection loss: the FCOS losses times ``scale``, plus the fraction of positive locations."""

    def __init__(self, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.scale, self.inner = num_classes, scale, FCOSLoss()

    def forward(self, cls_logits, bbox_reg, ctrness, labels, reg_targets):
        assert cls_logits.shape[1] == self.num_classes
        losses = {k: self.scale * v for k, v in self.inner(cls_logits, bbox_reg, ctrness, labels, reg_targets).items()}
        losses["loss_positive_fraction"] = (labels != self.num_classes).float().mean()
        return losses


class ScaledLossPlugin:
    @hookimpl
    def crossvis_register_components(self, registry):
        registry.register("loss", "test_scaled_fcos", ScaledFCOSLoss)


@pytest.fixture
def scaled_loss_plugin():
    reset_plugin_manager()
    register_plugin(ScaledLossPlugin(), name="test_scaled_fcos_plugin")
    yield
    reset_plugin_manager()


def _pair_batch():
    anchor = frame(64, 64, [("rect", (8, 8, 32, 40), 0, 0), ("rect", (36, 16, 60, 56), 1, 1)], seed=1)
    reference = frame(64, 64, [("rect", (30, 20, 54, 60), 1, 1), ("rect", (4, 36, 28, 60), 0, 2)], seed=2)
    return [{"anchor": anchor, "reference": reference}]


def _losses(recipe):
    torch.manual_seed(0)
    model = build_model(recipe)
    torch.manual_seed(1)  # the same mask-loss subsamples
    return model, {k: v.detach() for k, v in model(_pair_batch()).items()}


def test_a_plugin_fcos_loss_replaces_the_detection_loss(scaled_loss_plugin):
    default_model, default = _losses(tiny_recipe(num_identities=8))
    model, scaled = _losses(tiny_recipe(num_identities=8, fcos_loss={"type": "test_scaled_fcos", "scale": 3.0}))
    assert isinstance(model.criterion.fcos_loss, ScaledFCOSLoss) and model.criterion.fcos_loss.num_classes == 3
    assert model.state_dict().keys() == default_model.state_dict().keys()  # checkpoints stay interchangeable
    assert set(scaled) == set(default) | {"loss_positive_fraction"}
    for key in ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"):
        torch.testing.assert_close(scaled[key], 3.0 * default[key])
    for key in ("loss_mask", "loss_cross_over", "loss_reid"):
        assert torch.equal(scaled[key], default[key]), key
    assert 0 < scaled["loss_positive_fraction"] < 0.5


def test_the_fcos_node_with_todays_values_is_the_default_and_is_checked():
    _, default = _losses(tiny_recipe(num_identities=8))
    _, explicit = _losses(tiny_recipe(num_identities=8, fcos_loss={"type": "fcos", "focal_alpha": 0.25,
                                                                   "focal_gamma": 2.0}))
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    _, gentler = _losses(tiny_recipe(num_identities=8, fcos_loss={"type": "fcos", "focal_gamma": 0.0}))
    assert gentler["loss_fcos_cls"] > default["loss_fcos_cls"]  # γ = 0: easy negatives are no longer damped
    with pytest.raises(RecipeError, match=r"model.fcos_loss.*did you mean 'focal_gamma'"):
        build_model(tiny_recipe(fcos_loss={"type": "fcos", "focal_gama": 1.0}))
