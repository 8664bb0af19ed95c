"""run_inference over a video dataset and the ``crossvis eval`` command."""
from __future__ import annotations

import json
import zipfile
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn
from tracking_fixtures import save_checkpoint, single_thread, tiny_recipe  # noqa: F401 (autouse fixture)

from crossvis.cli import main
from crossvis.data import generate_synthetic_dataset
from crossvis.inference.runner import run_inference
from crossvis.inference.predictor import OnlinePredictor, Predictor
from crossvis.eval import METRIC_KEYS, evaluate_ytvis
from crossvis.structures import FrameDetections


class OneBoxModel(nn.Module):
    """Detects one fixed box of label 1 in every frame (so each video is one track)."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def predict(self, images):
        h, w = images[0].shape[1:]
        masks = torch.zeros((1, h, w), dtype=torch.bool)
        masks[0, :2, :3] = True
        return [FrameDetections(torch.tensor([[0.0, 0.0, 3.0, 2.0]]), torch.tensor([0.5]), torch.tensor([1]),
                                (h, w), masks, torch.ones(1, 4))]


class TwoVideos:
    """The YTVISVideoDataset interface: items with video_id, length and [3, H, W] uint8 frames."""

    data = SimpleNamespace(categories=[{"id": 7, "name": "a"}, {"id": 9, "name": "b"}, {"id": 11, "name": "c"}])
    videos = [{"video_id": 11, "length": 2, "frames": [torch.zeros(3, 8, 10, dtype=torch.uint8)] * 2},
              {"video_id": 12, "length": 3, "frames": [torch.zeros(3, 6, 5, dtype=torch.uint8)] * 3}]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        return self.videos[index]


def test_run_inference_streams_every_video_and_maps_categories():
    dataset = TwoVideos()
    predictor = OnlinePredictor(OneBoxModel())
    results = run_inference(predictor, dataset, progress=False)
    assert [(r["video_id"], r["category_id"], len(r["segmentations"])) for r in results] == [(11, 9, 2), (12, 9, 3)]
    assert results[1]["segmentations"][2]["size"] == [6, 5]
    assert predictor.category_name(1) == "b"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    paths = generate_synthetic_dataset(root / "data", num_videos=2, num_frames=3, height=64, width=96,
                                       num_categories=3, max_objects=2, split_name="test")
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe()))
    torch.manual_seed(0)
    ckpt = save_checkpoint(Predictor(tiny_recipe()).model, root / "model.pth")
    return root, paths, recipe_path, ckpt


def test_eval_command_writes_results_zip_and_metrics(setup, capsys):
    root, paths, recipe_path, ckpt = setup
    out = root / "out"
    code = main(["eval", str(recipe_path), "--checkpoint", str(ckpt), "--output", str(out), "--no-progress",
                 "--set", f"data.test.annotations={paths.annotations}", "--set", f"data.test.images={paths.images}",
                 "tracker.type=crossvis"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    gt = json.loads(paths.annotations.read_text())
    lengths = {v["id"]: len(v["file_names"]) for v in gt["videos"]}
    category_ids = {c["id"] for c in gt["categories"]}
    assert results and {r["video_id"] for r in results} <= set(lengths)
    for r in results:
        assert len(r["segmentations"]) == lengths[r["video_id"]] and r["category_id"] in category_ids
    with zipfile.ZipFile(out / "results.zip") as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == results
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics == pytest.approx(evaluate_ytvis(str(paths.annotations), results))
    printed = capsys.readouterr().out
    assert "AP50" in printed and "metrics.json" in printed


def test_eval_without_ground_truth_writes_no_metrics(setup, capsys):
    root, paths, recipe_path, ckpt = setup
    gt = json.loads(paths.annotations.read_text())
    gt["annotations"] = []
    blind = root / "blind.json"
    blind.write_text(json.dumps(gt))
    out = root / "blind_out"
    assert main(["eval", str(recipe_path), "--checkpoint", str(ckpt), "--output", str(out), "--no-progress",
                 "--set", f"data.test.annotations={blind}", f"data.test.images={paths.images}"]) == 0
    assert (out / "results.json").is_file() and (out / "results.zip").is_file()
    assert not (out / "metrics.json").exists()
    assert "evaluation server" in capsys.readouterr().out


def test_eval_errors_are_one_line(setup, capsys):
    root, paths, recipe_path, ckpt = setup
    assert main(["eval", str(recipe_path), "--checkpoint", str(root / "missing.pth"), "--output", str(root)]) == 2
    assert "missing.pth does not exist" in capsys.readouterr().err
    assert main(["eval", str(recipe_path), "--checkpoint", str(ckpt), "--output", str(root)]) == 2
    assert "data.test.annotations" in capsys.readouterr().err
