"""Dataset bases declare the official categories; annotation files must agree with them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vis_fixtures import write_handmade_vis

from crossvis.cli import main
from crossvis.data.categories import check_declared_categories, declared_categories
from crossvis.errors import CrossVISError
from crossvis.inference.predictor import Predictor
from crossvis.recipes import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
DEMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "ytvis-demo" / "ann_cocovid.json"


@pytest.mark.parametrize("base, count, some", [
    ("youtubevis_2019", 40, {1: "person", 6: "sedan", 11: "hand", 40: "tennis_racket"}),
    ("youtubevis_2021", 40, {1: "airplane", 5: "car", 14: "flying_disc", 26: "person", 40: "zebra"}),
    ("ovis", 25, {1: "Person", 12: "Poultry", 22: "Motorcycle", 25: "Vehical"}),
])
def test_bases_declare_the_official_lists(base, count, some):
    cats = declared_categories(load_recipe(RECIPES / "_base_" / "datasets" / f"{base}.yaml"))
    assert [c["id"] for c in cats] == list(range(1, count + 1))
    assert len({c["name"] for c in cats}) == count
    assert {i: cats[i - 1]["name"] for i in some} == some


def test_ytvis2021_is_another_set_than_2019():
    y19 = {c["name"] for c in declared_categories(load_recipe(RECIPES / "_base_/datasets/youtubevis_2019.yaml"))}
    y21 = {c["name"] for c in declared_categories(load_recipe(RECIPES / "_base_/datasets/youtubevis_2021.yaml"))}
    assert y19 - y21 == {"ape", "eagle", "hand", "owl", "sedan"}
    assert y21 - y19 == {"bird", "car", "flying_disc", "squirrel", "whale"}


@pytest.mark.skipif(not DEMO.is_file(), reason="the YouTube-VIS 2019 demo annotations are not available")
def test_ytvis2019_list_matches_an_official_annotation_file():
    demo = json.loads(DEMO.read_text())["categories"]
    check_declared_categories(declared_categories(load_recipe(RECIPES / "crossvis_R50_1x.yaml")), demo, str(DEMO))


def test_recipe_check_and_predictor_work_without_the_dataset(tmp_path, capsys):
    # the recipe's data paths (datasets/youtubevis/...) do not exist here
    assert not Path("datasets/youtubevis/annotations/train.json").exists()
    assert main(["recipe", "check", str(RECIPES / "crossvis_R50_1x.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    predictor = Predictor(RECIPES / "condinst_vis_R50.yaml", device="cpu")
    assert predictor.model.num_classes == 40 and predictor.class_names[5] == "sedan"
    assert predictor.tracker.assignment == "masktrack"


def test_disagreeing_annotations_are_a_clear_error(tmp_path, capsys):
    ann, images = write_handmade_vis(tmp_path, "train")    # categories 3 box, 7 tall, 12 wide
    args = ["recipe", "check", str(RECIPES / "crossvis_R50_1x.yaml"), "--set", f"data.train.annotations={ann}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.categories" in err and str(ann) in err and len(err.strip().splitlines()) == 1
    assert main(args + ["data.categories=null"]) == 0
    # the same names under YouTube-VIS 2021 ids: refused by name
    y21 = declared_categories(load_recipe(RECIPES / "_base_/datasets/youtubevis_2021.yaml"))
    y19 = declared_categories(load_recipe(RECIPES / "_base_/datasets/youtubevis_2019.yaml"))
    with pytest.raises(CrossVISError, match=r"category id 1 is 'person' but the recipe declares 'airplane'"):
        check_declared_categories(y21, y19, "valid.json")
    # case and "_" vs space do not matter; ids do
    check_declared_categories([{"id": 13, "name": "Giant_panda"}], [{"id": 13, "name": "giant panda"}], "x.json")
    with pytest.raises(CrossVISError, match=r"ids only in the file: \[14\]; ids only in the recipe: \[13\]"):
        check_declared_categories([{"id": 13, "name": "a"}], [{"id": 14, "name": "a"}], "x.json")


def test_training_refuses_annotations_other_than_declared(tmp_path, capsys):
    ann, images = write_handmade_vis(tmp_path, "train")
    rc = main(["train", str(RECIPES / "crossvis_R50_1x.yaml"), "--output", str(tmp_path / "run"), "--set",
               f"data.train.annotations={ann}", f"data.train.images={images}", "model.weights=null",
               "model.allow_random_frozen=true", "solver.max_iter=1"])
    assert rc == 2
    assert "data.categories" in capsys.readouterr().err


def test_malformed_declaration_names_the_key():
    with pytest.raises(CrossVISError, match="data.categories"):
        declared_categories({"data": {"categories": "person"}})
    with pytest.raises(CrossVISError, match=r"data.categories\[0\]"):
        declared_categories({"data": {"categories": [{"name": "person"}]}})
