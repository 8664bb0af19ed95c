"""The command line: verbs exist, bad input gives one clear line and a non-zero exit.

Commands run in-process through ``crossvis.cli.main`` (captured with capsys); one test starts a
real ``python -m crossvis --help`` to check that the entry point works and imports no torch.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from crossvis.cli import main

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "examples" / "recipes" / "condinst_R50.yaml"


def one_line_error(capsys, args):
    """Run ``crossvis ARGS`` in-process; assert exit 2 and one ``crossvis: error:`` line; return it."""
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 2, (captured.out, captured.err)
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["evaluate", "--help"], ["demo", "--help"]])
def test_help_and_version_import_neither_torch_nor_numpy(argv):
    """Start-up stays light: the verbs' parsers are built without importing torch, numpy or the
    model packages (each command imports what it needs when it runs)."""
    snippet = (f"import sys, runpy; sys.argv = ['crossvis', *{argv!r}]\n"
               "try:\n    runpy.run_module('crossvis', run_name='__main__')\n"
               "except SystemExit as exit:\n    code = exit.code\n"
               "heavy = sorted(m for m in ('torch', 'numpy', 'crossvis.models', 'crossvis.eval') if m in sys.modules)\n"
               "print('HEAVY', heavy, code)")
    res = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "HEAVY [] 0", res.stdout
    assert ("usage: crossvis" in res.stdout) == ("--help" in argv)


def test_help_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "crossvis", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert res.returncode == 0 and "usage: crossvis" in res.stdout and "train" in res.stdout, res.stderr


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
def test_recipe_errors_are_one_line_with_location(tmp_path, capsys, body, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"_base_: {BASE}\n" + body)
    line = one_line_error(capsys, ["recipe", "check", str(recipe), "--num-classes", "40"])
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


def test_missing_recipe_file_is_a_clear_error(capsys):
    line = one_line_error(capsys, ["recipe", "show", "does/not/exist.yaml"])
    assert "recipe file not found" in line and "exist.yaml" in line


def test_every_example_recipe_resolves():
    for path in sorted((REPO / "examples" / "recipes").glob("*.yaml")):
        assert main(["recipe", "show", str(path)]) == 0, path


@pytest.mark.parametrize("action", ["show", "check"])
@pytest.mark.parametrize("body, key, hint", [
    ("solver:\n  max_itr: 5\n", "solver.max_itr", "did you mean solver.max_iter"),
    ("runtime:\n  num_wrkers: 1\n", "runtime.num_wrkers", "did you mean runtime.num_workers"),
])
def test_recipe_show_and_check_reject_unknown_solver_and_runtime_keys_like_train(tmp_path, capsys, action, body,
                                                                                  key, hint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("_base_: crossvis:quickstart_synthetic\n" + body)
    line = one_line_error(capsys, ["recipe", action, str(recipe), "--num-classes", "3", "--num-identities", "3"]
                          if action == "check" else ["recipe", action, str(recipe)])
    assert f"unknown recipe key {key} ({recipe}:3)" in line and hint in line
    # the same text as training reports (one schema: crossvis/recipes/sections.py)
    train = one_line_error(capsys, ["train", str(recipe), "--output", str(tmp_path / "run")])
    assert line == train


@pytest.mark.parametrize("argv", [["demo", "in.mp4", "--fps", "abc"], ["no-such-verb"], ["recipe"],
                                  ["evaluate", "--annotations"]])
def test_argument_errors_are_one_line(argv, capsys):
    from crossvis.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossvis: error: ") and "--help" in lines[0], err
    assert "usage:" not in err and "Traceback" not in err


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from crossvis.atomic import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_bench_passes_every_option_to_the_benchmark(capsys):
    """`crossvis bench --arch r50 ...` hands the options to benchmarks/bench_latency.py in order
    (they are the script's, not the CLI's); the script's own errors come back as one line."""
    line = one_line_error(capsys, ["bench", "--arch", "r7", "--frames", "1"])
    assert "--arch r7 is unknown" in line
    assert main(["bench", "--help-bench"]) == 0
    out = capsys.readouterr().out
    assert "--guard-from" in out and "--arch" in out and "--accuracy" in out
    line = one_line_error(capsys, ["evaluate", "--annotations", "a.json", "--results", "b.json", "--zzz"])
    assert "unrecognized arguments: --zzz" in line
