import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from crossvis.recipes import (RecipeError, build, dump_recipe, load_recipe, parse_overrides,
                              recipe_from_dict)
from crossvis.registry import Registry


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_exponent_floats_and_duplicate_keys(tmp_path):
    r = load_recipe(write(tmp_path / "a.yaml", "lr: 1e-4\nwd: 5E-3\nn: 10\ns: '1e-4'\n"))
    assert r["lr"] == pytest.approx(1e-4) and isinstance(r["lr"], float)
    assert isinstance(r["wd"], float) and r["n"] == 10 and r["s"] == "1e-4"
    with pytest.raises(RecipeError, match=r"duplicate key 'lr' at .*b.yaml:3 \(first set at .*b.yaml:1\)"):
        load_recipe(write(tmp_path / "b.yaml", "lr: 1\nx: 2\nlr: 3\n"))


def test_base_inheritance_merge_replace_and_type_change(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "m.yaml", """
        model:
          backbone: {type: resnet, depth: 50, norm: FrozenBN}
          neck: {type: fpn, out_channels: 256, top_levels: 2}
          head: {type: fcos, num_convs: 4}
        solver: {steps: [10, 20], base_lr: 0.01}
    """)
    write(tmp_path / "s.yaml", "solver: {max_iter: 100}\n")
    child = write(tmp_path / "child.yaml", """
        _base_: [base/m.yaml, s.yaml]
        model:
          backbone: {depth: 101}
          neck: {_replace_: true, type: fpn}
          head: {type: other_head}
        solver: {steps: [5]}
    """)
    r = load_recipe(child)
    assert r["model"]["backbone"] == {"type": "resnet", "depth": 101, "norm": "FrozenBN"}
    assert r["model"]["neck"] == {"type": "fpn"}             # _replace_ drops inherited keys
    assert r["model"]["head"] == {"type": "other_head"}       # a new type drops inherited kwargs
    assert r["solver"] == {"steps": [5], "base_lr": 0.01, "max_iter": 100}  # lists replace
    assert r["model"]["backbone"].locations["depth"].endswith("child.yaml:4")
    assert r["model"]["backbone"].locations["norm"].endswith("m.yaml:3")


def test_base_errors(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "_base_: missing.yaml\n")
    with pytest.raises(RecipeError, match="missing.yaml.*included from"):
        load_recipe(tmp_path / "c.yaml")
    write(tmp_path / "d.yaml", "a: [1, 2\n")
    with pytest.raises(RecipeError, match=r"invalid YAML at .*d.yaml:2"):
        load_recipe(tmp_path / "d.yaml")


def test_overrides_and_references(tmp_path):
    p = write(tmp_path / "r.yaml", """
        solver: {base_lr: 0.01, max_iter: 10}
        data: {size: 360}
        model: {min_size_test: "${data.size}", name: "run-${solver.max_iter}"}
    """)
    r = load_recipe(p, ["solver.max_iter=20", "solver.steps=[1, 2]", "runtime.device=cpu",
                        "solver.base_lr=1e-3"])
    assert r["solver"] == {"base_lr": 1e-3, "max_iter": 20, "steps": [1, 2]}
    assert r["runtime"]["device"] == "cpu"
    assert r["model"]["min_size_test"] == 360 and r["model"]["name"] == "run-20"
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_overrides(["nonsense"])
    with pytest.raises(RecipeError, match="not a mapping"):
        load_recipe(p, ["solver.base_lr.x=1"])
    q = write(tmp_path / "q.yaml", "a: ${b}\nb: ${a}\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(q)


recipe_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8).filter(
        lambda s: "${" not in s),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=5), children, max_size=3),
    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=5), recipe_values, max_size=4))
def test_resolved_recipes_round_trip(tmp_path_factory, data):
    recipe = recipe_from_dict(data)
    text = dump_recipe(recipe)
    path = tmp_path_factory.mktemp("rt") / "r.yaml"
    path.write_text(text)
    assert load_recipe(path) == data
    assert yaml.safe_load(text) == data


class Tiny:
    def __init__(self, depth: int, input_shape=None, width: int = 8):
        self.depth, self.input_shape, self.width = depth, input_shape, width


def test_build_validates_and_injects(tmp_path):
    reg = Registry()
    reg.register("backbone", "tiny", Tiny, provider="test")
    p = write(tmp_path / "r.yaml", """
        model:
          backbone: {type: tiny, depth: 3}
          bad: {type: tiny, depht: 3}
          typo: {type: tiy, depth: 3}
    """)
    r = load_recipe(p)
    obj = build("backbone", r["model"]["backbone"], registry=reg, input_shape={"x": 1}, unused=5)
    assert (obj.depth, obj.input_shape, obj.width) == (3, {"x": 1}, 8)
    with pytest.raises(RecipeError) as info:
        build("backbone", r["model"]["bad"], registry=reg)
    msg = str(info.value)
    assert "model.bad.depht" in msg and "r.yaml:4" in msg and "did you mean 'depth'" in msg
    with pytest.raises(RecipeError) as info:
        build("backbone", r["model"]["typo"], registry=reg)
    msg = str(info.value)
    assert "unknown backbone 'tiy'" in msg and "did you mean 'tiny'" in msg and "r.yaml:5" in msg
    with pytest.raises(RecipeError, match="needs argument"):
        build("backbone", {"type": "tiny"}, registry=reg, where="model.backbone")
    # a recipe value wins over an injected one
    assert build("backbone", {"type": "tiny", "depth": 1, "width": 2}, registry=reg, width=9).width == 2


def test_strings_that_our_loader_reads_as_floats_are_dumped_quoted(tmp_path):
    from crossvis.recipes import dump_recipe, load_recipe

    values = {"a": "0E0", "b": "1e-4", "c": 1e-4, "d": "5E+3", "e": "yes", "f": "plain"}
    path = tmp_path / "r.yaml"
    path.write_text(dump_recipe(values))
    assert dict(load_recipe(path)) == values


def test_the_condinst_constants_have_one_home():
    """The official CondInst / R-50-FPN values are written once (the packaged
    official_condinst_common.yaml and official_r50_fpn.yaml): the official CrossVIS recipes and the
    example CondInst / CrossVIS recipes inherit them, and no other recipe file restates them."""
    from pathlib import Path

    from crossvis.recipes import builtin_recipe_dir

    root = Path(__file__).resolve().parents[1]
    homes = {builtin_recipe_dir() / "official_condinst_common.yaml", builtin_recipe_dir() / "official_r50_fpn.yaml"}
    common = {k: v for home in homes for k, v in yaml.safe_load(home.read_text())["model"].items()}
    for name in ("crossvis:official_crossvis_R50", "crossvis:official_crossvis_R101",
                 str(root / "examples/recipes/_base_/models/condinst_R50.yaml"),
                 str(root / "examples/recipes/crossvis_R50_1x.yaml")):
        model = load_recipe(name)["model"]
        for key, value in common.items():
            if key in ("backbone", "head"):  # R-101 changes the depth; CrossVIS adds embed_dim
                assert {k: model[key][k] for k in value if k != "depth"} == \
                    {k: v for k, v in value.items() if k != "depth"}, (name, key)
            else:
                assert model[key] == value, (name, key)
    files = [*builtin_recipe_dir().glob("*.yaml"), *(root / "examples" / "recipes").rglob("*.yaml")]
    for path in files:
        if path in homes:
            continue
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        # the structured values (a scalar such as score_threshold 0.05 may agree by coincidence)
        restated = [k for k, v in model.items() if k in common and v == common[k] and isinstance(v, (dict, list))]
        assert not restated, f"{path.name} restates {restated}: inherit them instead"
