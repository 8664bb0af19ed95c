"""Input conventions travel with the weights: recorded in checkpoints, checked on every load;
frozen layers never train from random initialisation unless a recipe opts in."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet50

from crossvis.checkpoints import load_weights
from crossvis.cli import main
from crossvis.checkpoints.conventions import (TORCHVISION_IMAGENET, check_frozen_initialisation, check_weight_conventions,
                                  model_conventions)
from crossvis.errors import CrossVISError
from crossvis.inference.predictor import Predictor
from crossvis.models import build_model
from crossvis.recipes import load_recipe

HELPERS = Path(__file__).parent / "helpers"
BGR = {"input_format": "BGR", "pixel_mean": [103.53, 116.28, 123.675], "pixel_std": [1.0, 1.0, 1.0]}


def tiny_recipe(**model):
    recipe = load_recipe(HELPERS / "tiny_crossvis.yaml")
    recipe["model"].update(model)
    return recipe


def r50_recipe(**backbone):
    recipe = tiny_recipe()
    recipe["model"]["backbone"] = {"type": "resnet", "depth": 50, "norm": "FrozenBN", "freeze_at": 0,
                                   "out_features": ["res3", "res4", "res5"], **backbone}
    return recipe


def test_model_conventions_read_the_network():
    rgb = model_conventions(build_model(tiny_recipe()))
    assert rgb == {"input_format": "RGB", "pixel_mean": [123.675, 116.28, 103.53],
                   "pixel_std": [58.395, 57.12, 57.375]}            # ResNet-18: no bottleneck, no stride key
    msra = model_conventions(build_model(r50_recipe(stride_in_1x1=True)))
    assert msra["resnet_stride_in_1x1"] is True
    assert model_conventions(build_model(r50_recipe(stride_in_1x1=False)))["resnet_stride_in_1x1"] is False
    assert model_conventions(build_model(tiny_recipe(**BGR))) == BGR


def test_recorded_conventions_that_disagree_are_refused_naming_both_sides_and_the_key():
    model = build_model(tiny_recipe())
    ckpt = {"model": model.state_dict(), "conventions": dict(BGR)}
    with pytest.raises(CrossVISError) as err:
        load_weights(model, ckpt)
    msg = str(err.value)
    assert "input_format BGR" in msg and "input_format RGB" in msg
    assert "pixel_std [1, 1, 1]" in msg and "pixel_std [58.395, 57.12, 57.375]" in msg
    assert "model.input_format" in msg and "model.pixel_std" in msg and "pixel_mean" in msg
    assert "\n" not in msg
    # same conventions: loads
    same = build_model(tiny_recipe(**BGR))
    report = load_weights(same, ckpt, report=False)
    assert not report.skipped and not report.missing


def test_stride_placement_is_a_convention():
    msra = build_model(r50_recipe(stride_in_1x1=True))
    ckpt = {"model": msra.state_dict(), "conventions": model_conventions(msra)}
    with pytest.raises(CrossVISError, match=r"stride in the 1x1 conv.*model\.backbone\.stride_in_1x1"):
        load_weights(build_model(r50_recipe(stride_in_1x1=False)), ckpt)


def test_raw_state_dict_loads_with_a_one_line_note(caplog):
    model = build_model(tiny_recipe())
    target = build_model(tiny_recipe(**BGR))
    with caplog.at_level(logging.INFO, logger="crossvis.checkpoints.conventions"):
        report = load_weights(target, model.state_dict(), report=False)
    assert len(report.loaded) == len(model.state_dict())
    notes = [r.getMessage() for r in caplog.records if r.name == "crossvis.checkpoints.conventions"]
    assert len(notes) == 1 and "not checked" in notes[0] and "\n" not in notes[0]


def test_torchvision_imagenet_resnet_is_recognised_and_loaded_into_the_backbone():
    torch.manual_seed(0)
    state = resnet50().state_dict()          # the layout of torchvision's ImageNet files, random values
    rgb = build_model(r50_recipe(stride_in_1x1=False))
    report = load_weights(rgb, state, report=False)
    backbone = rgb.network.backbone.state_dict()
    assert torch.equal(backbone["layer3.0.conv2.weight"], state["layer3.0.conv2.weight"])
    assert torch.equal(backbone["bn1.running_var"], state["bn1.running_var"])
    assert not report.unexpected and not report.skipped
    msra = build_model(r50_recipe(stride_in_1x1=True))
    caffe = r50_recipe(stride_in_1x1=False)
    caffe["model"].update(BGR)
    with pytest.raises(CrossVISError, match="ResNet stride in the 3x3 conv"):
        load_weights(msra, state, report=False)
    with pytest.raises(CrossVISError, match="expect input_format RGB"):
        load_weights(build_model(caffe), state, report=False)
    assert TORCHVISION_IMAGENET["input_format"] == "RGB"


def test_trained_checkpoint_records_conventions_and_predictor_checks_them(tmp_path, capsys):
    from vis_fixtures import write_handmade_vis

    ann, images = write_handmade_vis(tmp_path, "train")
    out = tmp_path / "run"
    assert main(["train", "crossvis:quickstart_synthetic", "--output", str(out), "--set",
                 f"data.train.annotations={ann}", f"data.train.images={images}", "data.test=null",
                 "solver.max_iter=1", "solver.amp=false"]) == 0
    final = out / "checkpoints" / "model_final.pth"
    ckpt = torch.load(final, weights_only=True)
    assert ckpt["conventions"]["input_format"] == "RGB"
    recipe = load_recipe(out / "recipe.yaml")
    Predictor(recipe, checkpoint=final)      # same conventions: fine
    recipe["model"]["input_format"] = "BGR"
    with pytest.raises(CrossVISError, match="input_format RGB.*input_format BGR"):
        Predictor(recipe, checkpoint=final)
    # and through --set on the command line: one line, no traceback
    capsys.readouterr()
    assert main(["train", str(out / "recipe.yaml"), "--output", str(tmp_path / "again"), "--set",
                 f"model.weights={final}", "model.input_format=BGR", "solver.max_iter=1", "data.test=null"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossvis: error:") and "input_format" in err and "Traceback" not in err


def test_frozen_layers_without_weights_are_refused():
    model = build_model(tiny_recipe(backbone={"type": "resnet", "depth": 18, "norm": "FrozenBN", "freeze_at": 2,
                                              "out_features": ["res3", "res4", "res5"]}))
    with pytest.raises(CrossVISError, match=r"frozen.*model\.weights.*freeze_at: 0.*allow_random_frozen"):
        check_frozen_initialisation(model, None)
    check_frozen_initialisation(model, None, allow=True)
    # weights that cover every frozen tensor: fine; weights that miss some: refused
    report = load_weights(model, model.state_dict(), report=False)
    check_frozen_initialisation(model, report)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("network.backbone.conv1")}
    with pytest.raises(CrossVISError, match="not in"):
        check_frozen_initialisation(model, load_weights(model, partial, report=False))
    # nothing frozen (freeze_at 0, BN): no weights needed
    trainable = build_model(tiny_recipe(backbone={"type": "resnet", "depth": 18, "norm": "BN", "freeze_at": 0,
                                                  "out_features": ["res3", "res4", "res5"]}))
    check_frozen_initialisation(trainable, None)


def test_parameters_off_for_another_reason_are_not_frozen_layers():
    """DLA-34's unused project layers have requires_grad=False beside a trainable BatchNorm: the
    CrossVIS-Lite recipe (random start, BN) is not refused."""
    model = build_model(load_recipe(Path(__file__).parents[1] / "examples/recipes/crossvis_lite_DLA34.yaml"),
                        num_classes=40, num_identities=10)
    assert any(not p.requires_grad for p in model.parameters())
    check_frozen_initialisation(model, None)


def test_training_a_frozen_random_model_is_a_one_line_error(tmp_path, capsys):
    from vis_fixtures import write_handmade_vis

    ann, images = write_handmade_vis(tmp_path, "train")
    args = ["train", str(HELPERS / "tiny_crossvis.yaml"), "--output", str(tmp_path / "run"), "--set",
            f"data.train.annotations={ann}", f"data.train.images={images}", "model.num_classes=null",
            "model.num_identities=null", "model.backbone.freeze_at=2", "solver.max_iter=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "frozen" in err and "model.weights" in err and len(err.strip().splitlines()) == 1
    assert main(args + ["model.allow_random_frozen=true"]) == 0


def test_check_weight_conventions_ignores_models_without_conventions():
    check_weight_conventions(torch.nn.Linear(2, 2), {"conventions": dict(BGR)}, "x.pth")
