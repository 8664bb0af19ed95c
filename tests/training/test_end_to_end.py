"""Training the quickstart recipe on a YouTube-VIS-format dataset the project did not generate,
setting only data.train.*, data.test.*, solver.max_iter (and a zero score threshold, so the barely
trained model reports tracks to score), through the CLI."""
import json

import pycocotools.mask as mask_utils

import pytest
import yaml

from vis_fixtures import write_handmade_vis

from crossvis.cli import main
from crossvis.checkpoints import load_checkpoint
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
               f"data.test.annotations={test_ann}", f"data.test.images={test_img}", "--set", "solver.max_iter=2",
               "model.score_threshold=0.0", "solver.amp=false"])
    assert rc == 0
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["model"]["num_classes"] == 3 and recipe["model"]["num_identities"] == 3
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10"}
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results, "with score_threshold 0 the model reports tracks"
    assert {r["video_id"] for r in results} <= {101, 205}
    assert {r["category_id"] for r in results} <= {3, 7, 12}
    lengths = {v["id"]: v["length"] for v in json.loads(test_ann.read_text())["videos"]}
    assert all(len(r["segmentations"]) == lengths[r["video_id"]] and 0.0 <= r["score"] <= 1.0 for r in results)
    assert "test AP" in capsys.readouterr().out
    # the end-of-training score is the one `crossvis evaluate` gives for the same results file
    assert main(["evaluate", "--annotations", str(test_ann), "--results", str(out / "eval" / "results.json"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    ckpt = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert ckpt["iteration"] == 2 and ckpt["recipe"]["model"]["num_classes"] == 3
    # the run's recipe names the model's categories, so a Predictor needs no annotation file
    assert recipe["data"]["categories"] == [{"id": 3, "name": "box"}, {"id": 7, "name": "tall"},
                                            {"id": 12, "name": "wide"}]
    recipe["data"]["train"]["annotations"] = recipe["data"]["test"]["annotations"] = str(tmp_path / "gone.json")
    predictor = Predictor(recipe, checkpoint=out / "checkpoints" / "model_final.pth")
    assert predictor.class_names == ["box", "tall", "wide"]
    assert predictor.accumulator.category_id(2) == 12


def test_perfect_predictions_score_one_and_a_wrong_category_zero(handmade, tmp_path, capsys):
    """The scorer the end-to-end run relies on, against hand-known values: the ground truth itself
    as predictions is AP = AR10 = 1; the same masks under a category that has no ground truth in
    that video are all false positives (AP 0)."""
    _, (test_ann, _) = handmade
    gt = json.loads(test_ann.read_text())
    sizes = {v["id"]: (v["height"], v["width"]) for v in gt["videos"]}

    def compressed(seg, video_id):
        if seg is None:
            return None
        rle = mask_utils.frPyObjects(seg, *sizes[video_id])
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}

    def predictions(category):
        return [{"video_id": a["video_id"], "category_id": category(a), "score": 1.0,
                 "segmentations": [compressed(s, a["video_id"]) for s in a["segmentations"]]}
                for a in gt["annotations"]]

    scores = {}
    for name, category in (("perfect", lambda a: a["category_id"]),
                           ("wrong", lambda a: {3: 7, 7: 12, 12: 3}[a["category_id"]])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(predictions(category)))
        capsys.readouterr()
        assert main(["evaluate", "--annotations", str(test_ann), "--results", str(path), "--json"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    for key in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert scores["perfect"][key] == pytest.approx(1.0, abs=1e-9), key
    assert scores["wrong"]["AP"] == 0.0 and scores["wrong"]["AR10"] == 0.0


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
