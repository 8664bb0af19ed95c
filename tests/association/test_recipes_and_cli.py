"""The new components through the CLI: listed by `crossvis components`, the recipes load, and
quickstart_contrastive trains and evaluates on a YouTube-VIS-format dataset it did not generate."""
import json
from pathlib import Path

import pytest

from vis_fixtures import write_handmade_vis

from crossvis.cli import main
from crossvis.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
NEW_RECIPES = ["quickstart_contrastive.yaml", "crossvis_R50_contrastive_memory_bank.yaml",
               "crossvis_R50_gbe_contrastive.yaml", "crossvis_R50_calibration.yaml",
               "crossvis_R50_contrastive_calibration_ovis.yaml", "crossvis_R50_calibration_ovis.yaml",
               "crossvis_R50_contrastive_memory_bank_ovis.yaml"]


def test_components_json_lists_the_new_components(capsys):
    assert main(["components", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    names = {(e["kind"], e["name"]) for e in entries}
    assert {("loss", "contrastive_embedding"), ("loss", "weighted_embedding_sum"), ("tracker", "memory_bank"),
            ("neck", "temporal_calibration")} <= names


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_recipes_show(name, capsys):
    assert main(["recipe", "show", str(RECIPES / name)]) == 0
    assert "type:" in capsys.readouterr().out


def test_quickstart_contrastive_swaps_loss_and_tracker_only():
    base = load_recipe("crossvis:quickstart_synthetic")
    recipe = load_recipe(RECIPES / "quickstart_contrastive.yaml")
    assert recipe["model"]["embedding_loss"]["type"] == "contrastive_embedding"
    assert recipe["tracker"]["type"] == "memory_bank"
    assert recipe["model"]["backbone"] == base["model"]["backbone"] and recipe["solver"] == base["solver"]


@pytest.mark.slow
def test_quickstart_contrastive_trains_and_evaluates(tmp_path, capsys):
    (train_ann, train_img), (test_ann, test_img) = (write_handmade_vis(tmp_path, "train"),
                                                    write_handmade_vis(tmp_path, "valid"))
    out = tmp_path / "run"
    rc = main(["train", str(RECIPES / "quickstart_contrastive.yaml"), "--output", str(out),
               "--set", f"data.train.annotations={train_ann}", f"data.train.images={train_img}",
               f"data.test.annotations={test_ann}", f"data.test.images={test_img}", "solver.max_iter=2", "solver.amp=false"])
    assert rc == 0
    assert [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AR10"} and all(v == -1 or 0.0 <= v <= 1.0 for v in metrics.values())
    assert "loss_reid" in (out / "metrics.jsonl").read_text()
    rc = main(["eval", str(out / "recipe.yaml"), "--checkpoint", str(out / "checkpoints" / "model_final.pth"),
               "--output", str(tmp_path / "eval")])
    assert rc == 0 and (tmp_path / "eval" / "results.json").is_file()


@pytest.mark.slow
def test_r50_ovis_recipe_with_every_component_builds():
    from crossvis.calibration import TemporalCalibrationNeck
    from crossvis.association import ContrastiveEmbeddingLoss
    from crossvis.models import build_model

    recipe = load_recipe(RECIPES / "crossvis_R50_contrastive_calibration_ovis.yaml")
    model = build_model(recipe, num_classes=25, num_identities=100)
    assert isinstance(model.network.neck, TemporalCalibrationNeck)
    assert sorted(model.network.neck.levels) == ["p3", "p4", "p5", "p6", "p7"]
    assert isinstance(model.embedding_loss, ContrastiveEmbeddingLoss) and model.proxies is None
