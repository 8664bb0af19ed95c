"""The command line: verbs exist, bad input gives one clear line and a non-zero exit."""
import subprocess
import sys
from pathlib import Path

import pytest

from crossvis.cli import main

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "examples" / "recipes" / "condinst_R50.yaml"


def run(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "crossvis", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def one_line_error(res):
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("crossvis ")
    assert main([]) == 1


def test_components_lists_builtins_with_provider(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()[1:]}
    for kind, name in [("backbone", "resnet"), ("backbone", "dla34"), ("neck", "fpn")]:
        assert (kind, name, "crossvis") in rows


@pytest.mark.parametrize("body, expected", [
    ("model:\n  backbone: {type: resnt, depth: 50}\n",
     ["backbone", "did you mean 'resnet'", "bad.yaml:3"]),
    ("model:\n  backbone:\n    depht: 50\n",
     ["'depht'", "did you mean 'depth'", "bad.yaml:4", "model.backbone.depht"]),
    ("model:\n  neck: {type: fpn}\nmodel:\n  head: {}\n",
     ["duplicate key 'model'", "bad.yaml:4", "bad.yaml:2"]),
])
def test_recipe_errors_are_one_line_with_location(tmp_path, body, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"_base_: {BASE}\n" + body)
    line = one_line_error(run(["recipe", "check", str(recipe), "--num-classes", "40"]))
    assert line.startswith("crossvis: error: ")
    for text in expected:
        assert text in line, line


def test_set_overrides_are_repeatable(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("solver: {max_iter: 1}\n")
    assert main(["recipe", "show", str(recipe), "--set", "solver.max_iter=5", "runtime.seed=3",
                 "--set", "solver.base_lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "max_iter: 5" in out and "seed: 3" in out and "base_lr: 0.001" in out


def test_missing_recipe_file_is_a_clear_error():
    line = one_line_error(run(["recipe", "show", "does/not/exist.yaml"]))
    assert "recipe file not found" in line and "exist.yaml" in line


def test_every_example_recipe_resolves():
    for path in sorted((REPO / "examples" / "recipes").glob("*.yaml")):
        assert main(["recipe", "show", str(path)]) == 0, path
