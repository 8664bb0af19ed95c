"""Official checkpoint conversion, on state dicts with exactly the official names and shapes.

The key lists in ``fixtures/`` are the official model's ``state_dict()`` dumps (copied from
../shared/data/official-checkpoint-keys); the values are random.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossvis.cli import main as cli_main
from crossvis.deploy.convert import convert_checkpoint, map_official_key, read_official_checkpoint
from crossvis.models import build_model
from crossvis.recipes import load_recipe, to_plain
from crossvis.errors import CrossVISError

FIXTURES = Path(__file__).parent / "fixtures"
_LINE = re.compile(r"^(\S+) \(([\d, ]*)\) (\w+)$")
EPS = 1e-5


def official_keys(name: str) -> "OrderedDict[str, tuple[tuple[int, ...], str]]":
    out = OrderedDict()
    for line in (FIXTURES / f"crossvis_{name}_state_dict.txt").read_text().splitlines():
        m = _LINE.match(line.strip())
        if m:
            out[m.group(1)] = (tuple(int(x) for x in m.group(2).replace(" ", "").split(",") if x), m.group(3))
    return out


def random_state(name: str, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, (shape, dtype) in official_keys(name).items():
        if dtype == "int64":
            state[key] = torch.randint(0, 100, shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module", params=["r50", "r101", "dla"])
def converted(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    state = random_state(request.param)
    torch.save({"model": state, "iteration": 23000}, tmp / "official.pth")
    report = convert_checkpoint(tmp / "official.pth", tmp / "converted.pth", verbose=False)
    # the recipe written next to the checkpoint rebuilds a model the checkpoint loads into strictly
    model = build_model(load_recipe(tmp / "converted.yaml")).eval()
    model.load_state_dict(torch.load(tmp / "converted.pth", weights_only=True)["model"], strict=True)
    return request.param, state, report, tmp / "converted.pth", model


def test_every_official_key_is_mapped_and_loads_strictly(converted):
    name, state, report, dst, model = converted
    expected_arch = {"r50": "r50", "r101": "r101", "dla": "dla34"}[name]
    assert report.arch == expected_arch
    weights = [k for k in state if not k.startswith("mask_head.")]
    assert sorted(report.renamed) == sorted(weights)
    assert sorted(report.dropped) == ["mask_head._iter", "mask_head.sizes_of_interest"]
    assert len(set(report.renamed.values())) == len(weights)
    assert not report.load.skipped and not report.load.missing and not report.load.unexpected
    assert model.num_classes == 40 and model.proxies.weight.shape == (3774, 256)
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt["model"]) == set(model.state_dict())
    own = model.state_dict()
    for key, new in report.renamed.items():
        assert own[new].shape == state[key].shape, key
        assert torch.equal(own[new], state[key].to(own[new].dtype)), key
    assert ckpt["recipe"]["model"]["input_format"] == "BGR"
    assert ckpt["converted_from"].endswith("official.pth")


def _frozen_bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    """detectron2 FrozenBatchNorm2d written out from the official buffers."""
    scale = state[prefix + "weight"] / torch.sqrt(state[prefix + "running_var"] + EPS)
    shift = state[prefix + "bias"] - state[prefix + "running_mean"] * scale
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def test_converted_model_computes_the_official_layers(converted):
    name, state, _, _, model = converted
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 256, 5, 7, generator=g)
    with torch.no_grad():
        # controller: the official 3x3 conv, output channel order (the 169-parameter layout) unchanged
        ctrl = F.conv2d(feat, state["controller.weight"], state["controller.bias"], padding=1)
        assert torch.allclose(model.network.controller(feat), ctrl, atol=1e-5)
        # embedding: reid_pred (1x1) then reid_pred_bn in eval mode
        head = "proposal_generator.fcos_head."
        emb = F.conv2d(feat, state[head + "reid_pred.weight"], state[head + "reid_pred.bias"])
        emb = _frozen_bn(emb, state, head + "reid_pred_bn.")
        ours = model.network.head.embed_norm(model.network.head.embed_pred(feat))
        assert torch.allclose(ours, emb, atol=1e-4)
        # classifier on the cls tower's first conv + GroupNorm
        x = F.conv2d(feat, state[head + "cls_tower.0.weight"], state[head + "cls_tower.0.bias"], padding=1)
        x = F.group_norm(x, 32, state[head + "cls_tower.1.weight"], state[head + "cls_tower.1.bias"])
        assert torch.allclose(model.network.head.cls_tower[:2](feat), x, atol=1e-4)
        # the backbone stem: conv + (Frozen)BN + ReLU written out from the official tensors
        image = torch.randn(1, 3, 32, 32, generator=g)
        body = model.network.backbone
        if name == "dla":
            ref = F.conv2d(image, state["backbone.bottom_up.base_layer.0.weight"], padding=3)
            ref = torch.relu(_frozen_bn(ref, state, "backbone.bottom_up.base_layer.1."))
            assert torch.allclose(body.base_layer(image), ref, atol=1e-4)
        else:
            ref = F.conv2d(image, state["backbone.bottom_up.stem.conv1.weight"], stride=2, padding=3)
            ref = torch.relu(_frozen_bn(ref, state, "backbone.bottom_up.stem.conv1.norm."))
            assert torch.allclose(body.relu(body.bn1(body.conv1(image))), ref, atol=1e-4)


def test_condinst_80_class_checkpoint_into_40_class_crossvis(tmp_path, caplog):
    caplog.set_level("INFO", logger="crossvis")
    state = OrderedDict((k, v) for k, v in random_state("dla", seed=3).items()
                        if ".reid_" not in k and not k.startswith("cls."))
    head = "proposal_generator.fcos_head."
    state[head + "cls_logits.weight"] = torch.randn(80, 256, 3, 3)
    state[head + "cls_logits.bias"] = torch.randn(80)
    torch.save(state, tmp_path / "condinst.pth")  # bare state dict, no "model" key
    report = convert_checkpoint(tmp_path / "condinst.pth", tmp_path / "out.pth")
    assert report.load.skipped == {"network.head.cls_logits.weight": ((80, 256, 3, 3), (40, 256, 3, 3)),
                                   "network.head.cls_logits.bias": ((80,), (40,))}
    assert {k.split(".")[0] + "." + k.split(".")[-2] for k in report.load.missing} >= {"proxies.proxies"}
    assert any(k.startswith("network.head.embed_tower.") for k in report.load.missing)
    assert {"network.head.embed_pred.weight", "network.head.embed_norm.running_var", "proxies.weight",
            "proxies.bias"} <= set(report.load.missing)
    assert not report.load.unexpected
    assert sorted(report.dropped) == ["mask_head._iter", "mask_head.sizes_of_interest"]
    out = caplog.text   # the conversion table is logged (the CLI prints it)
    assert "80 classes in the checkpoint and 40 in the model" in out
    ckpt = torch.load(tmp_path / "out.pth", weights_only=True)
    model = build_model(load_recipe(tmp_path / "out.yaml"))
    model.load_state_dict(ckpt["model"], strict=True)
    # the skipped classifier keeps the prior-probability bias −ln(99)
    assert torch.allclose(ckpt["model"]["network.head.cls_logits.bias"], torch.full((40,), -np.log(99.0)), atol=1e-5)


def test_detectron2_pkl_with_module_prefix_reads_like_pth(tmp_path):
    state = random_state("dla", seed=5)
    arrays = {"module." + k: v.numpy() for k, v in state.items()}
    with open(tmp_path / "official.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "detectron2"}, f)
    read = read_official_checkpoint(tmp_path / "official.pkl")
    assert list(read) == list(state)
    assert all(torch.equal(read[k], state[k]) for k in state)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_bad_files_raise_crossvis_error_naming_the_file(tmp_path, capsys):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": {"a": _Evil()}}))
    with pytest.raises(CrossVISError, match="evil.pkl"):
        read_official_checkpoint(tmp_path / "evil.pkl")
    assert "pwned" not in capsys.readouterr().out
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CrossVISError, match="junk.pth"):
        read_official_checkpoint(tmp_path / "junk.pth")
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CrossVISError, match="other.pth"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "x.pth", verbose=False)
    with pytest.raises(CrossVISError, match="missing.pth"):
        read_official_checkpoint(tmp_path / "missing.pth")


def test_cli_convert_and_arch_mismatch(tmp_path, capsys):
    torch.save({"model": random_state("dla", seed=7)}, tmp_path / "official.pth")
    assert cli_main(["convert-checkpoint", str(tmp_path / "official.pth"), str(tmp_path / "cv.pth")]) == 0
    out = capsys.readouterr().out
    assert "358 loaded, 0 skipped" in out and (tmp_path / "cv.yaml").is_file()
    assert cli_main(["convert-checkpoint", str(tmp_path / "official.pth"), str(tmp_path / "cv2.pth"),
                     "--arch", "r50"]) == 2
    assert "dla34" in capsys.readouterr().err


@pytest.mark.parametrize("key, expected", [
    ("proposal_generator.fcos_head.reid_tower.9.weight", "network.head.embed_tower.9.weight"),
    ("proposal_generator.fcos_head.reid_pred_bn.num_batches_tracked", "network.head.embed_norm.num_batches_tracked"),
    ("proposal_generator.fcos_head.scales.4.scale", "network.head.scales.4.scale"),
    ("backbone.bottom_up.res5.0.shortcut.norm.running_var", "network.backbone.layer4.0.downsample.1.running_var"),
    ("backbone.top_block.p7.weight", "network.neck.top_block.p7.weight"),
    ("cls.weight", "proxies.weight"),
    ("mask_head._iter", None),
])
def test_key_mapping_table(key, expected):
    assert map_official_key(key) == expected


#: parameters of the official models with 40 classes and 3774 identity proxies (the official code, instantiated)
OFFICIAL_PARAMETERS = {"r50": 37_417_569, "r101": 56_357_473, "dla": 27_365_199}
PACKAGED = {"r50": "crossvis:official_crossvis_R50", "r101": "crossvis:official_crossvis_R101",
            "dla": "crossvis:official_crossvis_DLA34"}


def test_converted_recipe_is_the_packaged_official_one(converted):
    arch, state, _, ckpt, model = converted
    written = to_plain(load_recipe(ckpt.with_suffix(".yaml")))
    packaged = to_plain(load_recipe(PACKAGED[arch]))
    assert state["cls.weight"].shape[0] == packaged["model"]["num_identities"] == 3774
    assert written == packaged
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS[arch]
    m = written["model"]
    # Base-CrossVIS.yaml / test_vis.py of the official code
    assert (m["input_format"], m["pixel_mean"], m["pixel_std"]) == ("BGR", [103.53, 116.28, 123.675], [1.0, 1.0, 1.0])
    assert (m["min_size_test"], m["max_size_test"], m["score_threshold"], m["nms_threshold"],
            m["pre_nms_topk"], m["max_detections"]) == (360, 640, 0.05, 0.6, 1000, 100)
    assert m["fcos_loss"] == {"type": "fcos", "focal_alpha": 0.25, "focal_gamma": 2.0}
    assert m["backbone_grad_scale"] == 0.1 and m["crossover"] is True
    assert written["tracker"] == {"type": "crossvis", "new_track_threshold": 0.4}
    assert m["sizes_of_interest"] == ([64, 128] if arch == "dla" else [64, 128, 256, 512])


def test_packaged_r101_is_r50_with_a_deeper_resnet():
    r50, r101 = (to_plain(load_recipe(PACKAGED[a])) for a in ("r50", "r101"))
    assert r101["model"]["backbone"] == {**r50["model"]["backbone"], "depth": 101}
    assert r50["model"]["backbone"]["stride_in_1x1"] is True and r50["model"]["backbone"]["norm"] == "FrozenBN"
    r101["model"]["backbone"]["depth"] = 50
    assert r101 == r50
