"""Plugin discovery, isolation of broken plugins, pluggy dispatch (wrappers), and the example plugin."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from crossvis import cli
from crossvis.hookspecs import hookimpl
from crossvis.plugins import CrossVISPluginManager, reset_plugin_manager

REPO = Path(__file__).resolve().parents[1]


def fake_distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Write an importable distribution (dist-info + modules) into ``root`` without pip."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = ["[crossvis]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    return root


@pytest.fixture
def run_crossvis(monkeypatch, capsys):
    """``run(args, pythonpath=None, env=None) -> (exit code, stdout, stderr)``: ``crossvis.cli.main`` in-process,
    with a fresh plugin manager that sees the distributions under ``pythonpath``."""
    monkeypatch.delenv("CROSSVIS_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("CROSSVIS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    added = set()

    def run(args, pythonpath=None, env=None):
        if pythonpath is not None and str(pythonpath) not in added:
            monkeypatch.syspath_prepend(str(pythonpath))
            added.add(str(pythonpath))
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        reset_plugin_manager()
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        for key in env or {}:
            monkeypatch.delenv(key)
        return code, out, err

    yield run
    reset_plugin_manager()
    for name in [m for m in sys.modules if m.endswith("_mod")]:
        del sys.modules[name]


class GoodPlugin:
    @hookimpl
    def crossvis_register_components(self, registry):
        registry.register("tracker", "good_tracker", dict)


class RaisingPlugin:
    @hookimpl
    def crossvis_register_components(self, registry):
        registry.register("tracker", "half_done", dict)
        raise RuntimeError("boom")


def test_builtins_register_through_the_hook():
    pm = CrossVISPluginManager()
    pm.load_builtins()
    names = {name for name, _ in pm.list_name_plugin()}
    assert names, "no built-in plugin registered"
    assert all(n.startswith("crossvis.") for n in names)
    for entry in pm.registry.entries():
        assert entry.provider == "crossvis"


def test_raising_hook_is_reported_and_rolled_back(caplog):
    pm = CrossVISPluginManager()
    pm.add_plugin(GoodPlugin(), name="good", distribution="good==1")
    pm.add_plugin(RaisingPlugin(), name="bad", distribution="bad==2")
    assert ("tracker", "good_tracker") in pm.registry
    assert ("tracker", "half_done") not in pm.registry  # partial registrations are removed
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "plugin 'bad' (from bad==2)" in warnings[0] and "RuntimeError: boom" in warnings[0]
    assert [f.plugin for f in pm.failures] == ["bad"]


class StepCounter:
    def __init__(self):
        self.steps = []

    @hookimpl
    def crossvis_after_step(self, iteration):
        self.steps.append(iteration)


class TimingWrapper:
    """A ``wrapper=True`` implementation: it runs around every other implementation of the hook."""

    def __init__(self, seen):
        self.events, self.seen = [], seen

    @hookimpl(wrapper=True)
    def crossvis_after_step(self, iteration):
        self.events.append(("before", iteration, list(self.seen.steps)))
        result = yield
        self.events.append(("after", iteration, list(self.seen.steps)))
        return result


class RaisingStep:
    calls = 0

    @hookimpl(tryfirst=True)
    def crossvis_after_step(self, iteration):
        RaisingStep.calls += 1
        raise ValueError(f"bad step {iteration}")


def test_wrapper_hookimpl_runs_around_the_others_through_pluggy():
    pm = CrossVISPluginManager()
    counter = StepCounter()
    wrapper = TimingWrapper(counter)
    pm.add_plugin(counter, name="counter")
    pm.add_plugin(wrapper, name="wrapper")
    for it in (1, 2):
        pm.call("crossvis_after_step", trainer=None, iteration=it, metrics={})
    assert counter.steps == [1, 2]
    assert wrapper.events == [("before", 1, []), ("after", 1, [1]), ("before", 2, [1]), ("after", 2, [1, 2])]


def test_a_raising_hook_is_reported_once_and_the_others_keep_running(caplog):
    pm = CrossVISPluginManager()
    counter = StepCounter()
    RaisingStep.calls = 0
    pm.add_plugin(RaisingStep(), name="raiser", distribution="raiser==3")
    pm.add_plugin(counter, name="counter")
    for it in (1, 2, 3):
        pm.call("crossvis_after_step", trainer=None, iteration=it, metrics={})
    assert counter.steps == [1, 2, 3]  # the implementation after the failing one still ran every time
    assert RaisingStep.calls == 1  # a failed hook of a plugin is not called again
    assert [(f.plugin, f.stage) for f in pm.failures] == [("raiser", "crossvis_after_step")]
    assert "ValueError: bad step 1" in pm.failures[0].error


class RaisingWrapper:
    @hookimpl(wrapper=True)
    def crossvis_after_step(self):
        raise KeyError("wrapper broke")
        yield  # noqa: unreachable - makes this a generator


def test_a_raising_wrapper_is_blamed_by_name_and_removed():
    pm = CrossVISPluginManager()
    counter = StepCounter()
    pm.add_plugin(counter, name="counter")
    pm.add_plugin(RaisingWrapper(), name="badwrap", distribution="badwrap==1")
    pm.call("crossvis_after_step", trainer=None, iteration=1, metrics={})
    assert [f.plugin for f in pm.failures] == ["badwrap"]
    pm.call("crossvis_after_step", trainer=None, iteration=2, metrics={})
    assert 2 in counter.steps and pm.get_plugin("badwrap") is None


class ForeignFormat:
    """Converts a made-up foreign layout ``{"weights_v2": {"net/<name>": tensor}}``."""

    @hookimpl
    def crossvis_convert_checkpoint(self, state_dict, source):
        if "weights_v2" not in state_dict:
            return None
        return {k.replace("net/", "", 1): v for k, v in state_dict["weights_v2"].items()}


def test_conversion_hook_translates_a_foreign_checkpoint(tmp_path, monkeypatch):
    from crossvis import plugins
    from crossvis.checkpoints import load_weights

    pm = CrossVISPluginManager()
    pm.add_plugin(ForeignFormat(), name="foreign")
    monkeypatch.setattr(plugins, "_manager", pm)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    weight, bias = torch.arange(6.0).view(2, 3), torch.tensor([7.0, 8.0])
    path = tmp_path / "foreign.pth"
    torch.save({"weights_v2": {"net/0.weight": weight, "net/0.bias": bias}}, path)
    report = load_weights(model, path, report=False)
    assert torch.equal(model[0].weight, weight) and torch.equal(model[0].bias, bias)
    assert not report.missing


def test_broken_import_and_allow_list(tmp_path, run_crossvis):
    fake_distribution(tmp_path, "broken-dist", {"broken": "broken_mod"},
                      {"broken_mod": "raise ImportError('missing dependency xyz')\n"})
    fake_distribution(tmp_path, "fine-dist", {"fine": "fine_mod"}, {"fine_mod": """
        from crossvis import hookimpl

        @hookimpl
        def crossvis_register_components(registry):
            registry.register("tracker", "fine_tracker", dict)

        @hookimpl
        def crossvis_add_commands(subparsers):
            p = subparsers.add_parser("hello", help="a verb added by a plugin")
            p.add_argument("--name", default="world")
            p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)
    """})
    fake_distribution(tmp_path, "typo-dist", {"typo": "typo_mod"}, {"typo_mod": """
        from crossvis import hookimpl

        @hookimpl
        def crossvis_register_component(registry):
            pass
    """})
    code, out, err = run_crossvis(["components", "--json"], pythonpath=tmp_path)
    assert code == 0, err
    rows = json.loads(out)
    assert {"kind": "tracker", "name": "fine_tracker", "provider": "fine"}.items() <= \
        next(r for r in rows if r["name"] == "fine_tracker").items()
    assert "plugin 'broken' (from broken-dist==1.0) failed during import" in err
    assert "missing dependency xyz" in err
    assert "plugin 'typo'" in err and "validation" in err  # check_pending caught the typo
    assert "Traceback" not in err

    code, out, err = run_crossvis(["hello", "--name", "vis"], pythonpath=tmp_path)
    assert code == 0 and out.strip() == "hello vis", err

    code, out, err = run_crossvis(["components", "--json"], pythonpath=tmp_path, env={"CROSSVIS_LOAD_PLUGINS": "fine"})
    assert code == 0 and "broken" not in err
    assert any(r["name"] == "fine_tracker" for r in json.loads(out))
    code, out, err = run_crossvis(["components", "--json"], pythonpath=tmp_path, env={"CROSSVIS_LOAD_PLUGINS": ""})
    assert not any(r["name"] == "fine_tracker" for r in json.loads(out))


def test_built_in_commands_do_not_import_plugins(tmp_path, run_crossvis):
    fake_distribution(tmp_path, "loud-dist", {"loud": "loud_mod"},
                      {"loud_mod": "raise ImportError('imported although no plugin verb was named')\n"})
    code, out, err = run_crossvis(["recipe", "show", "crossvis:quickstart_synthetic"], pythonpath=tmp_path)
    assert code == 0 and "imported although" not in err
    code, out, err = run_crossvis(["plugins"], pythonpath=tmp_path)
    assert code == 0 and "imported although no plugin verb was named" in err


@pytest.mark.slow
def test_example_plugin_installs_and_builds_from_yaml(tmp_path):
    """A real install into a separate site folder, seen by fresh interpreters (the point is the process boundary)."""
    import os

    target = tmp_path / "site"
    source = tmp_path / "plugin-src"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(REPO / "examples" / "plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--quiet", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSVIS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)])
    res = subprocess.run([sys.executable, "-m", "crossvis", "components", "--kind", "backbone", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    row = next(r for r in json.loads(res.stdout) if r["name"] == "toy_convnet")
    assert row["provider"] == "toy" and row["distribution"] == "crossvis-toy-plugin==0.1.0"

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  backbone: {type: toy_convnet, width: 4}\n")
    code = textwrap.dedent(f"""
        import torch
        from crossvis.recipes import build, load_recipe
        net = build("backbone", load_recipe({str(recipe)!r})["model"]["backbone"])
        out = net(torch.zeros(1, 3, 64, 96))
        print({{k: tuple(v.shape) for k, v in out.items()}}, net.output_shape()["res5"].stride)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "'res5': (1, 64, 2, 3)" in res.stdout and res.stdout.strip().endswith("32")
