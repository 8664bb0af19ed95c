"""Training the quickstart recipe on a YouTube-VIS-format dataset the project did not generate,
setting only data.train.*, data.test.* and solver.max_iter, through the CLI."""
import json

import pytest
import yaml

from vis_fixtures import write_handmade_vis

from crossvis.cli import main
from crossvis.checkpoint import load_checkpoint
from crossvis.inference.predictor import Predictor


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("handmade")
    return write_handmade_vis(root, "train"), write_handmade_vis(root, "valid")


def test_train_on_foreign_dataset_writes_eval_metrics(handmade, tmp_path, capsys):
    (train_ann, train_img), (test_ann, test_img) = handmade
    out = tmp_path / "run"
    rc = main(["train", "crossvis:quickstart_synthetic", "--output", str(out),
               "--set", f"data.train.annotations={train_ann}", f"data.train.images={train_img}",
               f"data.test.annotations={test_ann}", f"data.test.images={test_img}", "--set", "solver.max_iter=2"])
    assert rc == 0
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["model"]["num_classes"] == 3 and recipe["model"]["num_identities"] == 3
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"}
    assert all(v == -1 or 0.0 <= v <= 1.0 for v in metrics.values())
    results = json.loads((out / "eval" / "results.json").read_text())
    assert {r["video_id"] for r in results} <= {101, 205}
    assert {r["category_id"] for r in results} <= {3, 7, 12}
    assert [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    ckpt = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert ckpt["iteration"] == 2 and ckpt["recipe"]["model"]["num_classes"] == 3
    assert "test AP" in capsys.readouterr().out
    # the run's recipe names the model's categories, so a Predictor needs no annotation file
    assert recipe["data"]["categories"] == [{"id": 3, "name": "box"}, {"id": 7, "name": "tall"},
                                            {"id": 12, "name": "wide"}]
    recipe["data"]["train"]["annotations"] = recipe["data"]["test"]["annotations"] = str(tmp_path / "gone.json")
    predictor = Predictor(recipe, checkpoint=out / "checkpoints" / "model_final.pth")
    assert predictor.class_names == ["box", "tall", "wide"]
    assert predictor.accumulator.category_id(2) == 12


def test_missing_training_data_is_a_one_line_error(tmp_path, capsys):
    rc = main(["train", "crossvis:quickstart_synthetic", "--output", str(tmp_path / "run"),
               "--set", f"data.train.annotations={tmp_path / 'nope.json'}", f"data.train.images={tmp_path}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("crossvis: error:") and "nope.json" in err and len(err.strip().splitlines()) == 1


def test_weights_that_are_not_a_checkpoint_are_a_one_line_error(handmade, tmp_path, capsys):
    (train_ann, train_img), _ = handmade
    bogus = tmp_path / "bogus.pth"
    bogus.write_text("not a checkpoint")
    rc = main(["train", "crossvis:quickstart_synthetic", "--output", str(tmp_path / "run"),
               "--set", f"data.train.annotations={train_ann}", f"data.train.images={train_img}",
               f"model.weights={bogus}", "data.test=null", "solver.max_iter=1"])
    assert rc == 2
    assert "bogus.pth" in capsys.readouterr().err
