"""The paper's training path end to end, as a user runs it: an AdelaiDet COCO CondInst R-50
checkpoint → ``crossvis convert-checkpoint`` → ``crossvis train crossvis_R50_1x.yaml`` with
``model.weights`` set, on YouTube-VIS-format data; the run keeps the weights' conventions, and a
recipe with other conventions is refused."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml

from vis_fixtures import write_handmade_vis

from crossvis.cli import main

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "recipes" / "crossvis_R50_1x.yaml"
YTVIS_DEMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "ytvis-demo" / "ann_cocovid.json"


def condinst_coco_r50(keys: dict) -> "OrderedDict[str, torch.Tensor]":
    """Random tensors in AdelaiDet's COCO CondInst R-50 layout: the official CrossVIS R-50 keys without
    the reid branch and the identity classifier, and an 80-class classifier."""
    g = torch.Generator().manual_seed(0)
    state = OrderedDict()
    for key, (shape, dtype) in keys.items():
        if ".reid_" in key or key.startswith("cls."):
            continue
        if key.endswith("cls_logits.weight"):
            shape = (80, *shape[1:])
        elif key.endswith("cls_logits.bias"):
            shape = (80,)
        if dtype == "int64":
            state[key] = torch.tensor([64, 128, 256, 512, 1024]) if key.endswith("sizes_of_interest") \
                else torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("norm.weight", ".1.weight")) and len(shape) == 1:
            state[key] = torch.ones(shape)
        else:
            state[key] = torch.randn(shape, generator=g) * 0.02
    return state


def _ytvis19_categories() -> list[dict]:
    if YTVIS_DEMO.is_file():   # an independent copy of the official list (the mmtracking demo file)
        return [{"id": c["id"], "name": c["name"]} for c in json.loads(YTVIS_DEMO.read_text())["categories"]]
    return yaml.safe_load((RECIPE.parent / "_base_" / "datasets" / "youtubevis_2019.yaml").read_text())[
        "data"]["categories"]


@pytest.mark.slow
def test_condinst_coco_r50_converted_trains_crossvis_r50_and_keeps_conventions(official_keys, tmp_path, capsys):
    keys = {k: v for k, v in _key_dtypes(official_keys).items()}
    src = tmp_path / "CondInst_MS_R_50_1x.pth"
    torch.save({"model": condinst_coco_r50(keys), "iteration": 90000}, src)
    converted = tmp_path / "CondInst_MS_R_50_1x.crossvis.pth"
    assert main(["convert-checkpoint", str(src), str(converted)]) == 0
    assert torch.load(converted, weights_only=True)["conventions"]["input_format"] == "BGR"

    ann, images = write_handmade_vis(tmp_path, "train")
    data = json.loads(ann.read_text())
    data["categories"] = _ytvis19_categories()          # ids 3, 7, 12 of the fixture are YouTube-VIS ids
    ann.write_text(json.dumps(data))
    small = ["data.test=null", "solver.max_iter=1", "solver.ims_per_batch=2", "runtime.num_workers=0",
             "runtime.device=cpu", f"data.train.annotations={ann}", f"data.train.images={images}",
             "data.train.transforms=[]"]    # the fixture's 64x96 frames as they are: fast on a CPU
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(RECIPE), "--output", str(out), "--set", f"model.weights={converted}", *small]) == 0
    printed = capsys.readouterr().out
    assert "loaded" in printed
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    model = recipe["model"]
    assert model["weights"] == str(converted)
    assert model["input_format"] == "BGR" and model["backbone"]["stride_in_1x1"] is True
    assert model["pixel_mean"] == [103.53, 116.28, 123.675] and model["pixel_std"] == [1.0, 1.0, 1.0]
    final = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert final["conventions"]["input_format"] == "BGR" and final["conventions"]["resnet_stride_in_1x1"] is True

    rc = main(["train", str(RECIPE), "--output", str(tmp_path / "rgb"), "--set", f"model.weights={converted}",
               "model.input_format=RGB", "model.pixel_std=[58.395,57.12,57.375]", *small])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("crossvis: error:") and "input_format BGR" in err and "input_format RGB" in err
    assert "model.input_format" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _key_dtypes(official_keys) -> dict:
    """{key: (shape, dtype)} from the official R-50 key list (the fixture gives shapes; dtypes by name)."""
    shapes = official_keys("r50")
    return {k: (s, "int64" if k.endswith(("num_batches_tracked", "sizes_of_interest")) else "float32")
            for k, s in shapes.items()}
