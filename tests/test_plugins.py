"""Plugin discovery, isolation of broken plugins, and the example plugin end to end."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path


from crossvis.plugins import CrossVISPluginManager, hookimpl

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


def run_crossvis(args, env_extra=None, pythonpath=None):
    env = dict(os.environ)
    env.pop("CROSSVIS_LOAD_PLUGINS", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "crossvis", *args], capture_output=True, text=True,
                          env=env, timeout=120)


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


def test_raising_hook_is_reported_and_rolled_back(capsys):
    pm = CrossVISPluginManager()
    pm.add_plugin(GoodPlugin(), name="good", distribution="good==1")
    pm.add_plugin(RaisingPlugin(), name="bad", distribution="bad==2")
    assert ("tracker", "good_tracker") in pm.registry
    assert ("tracker", "half_done") not in pm.registry  # partial registrations are removed
    err = capsys.readouterr().err
    assert "plugin 'bad' (from bad==2)" in err and "RuntimeError: boom" in err
    assert [f.plugin for f in pm.failures] == ["bad"]


def test_broken_import_and_allow_list(tmp_path):
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
    res = run_crossvis(["components", "--json"], pythonpath=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {"kind": "tracker", "name": "fine_tracker", "provider": "fine"}.items() <= \
        next(r for r in rows if r["name"] == "fine_tracker").items()
    assert "plugin 'broken' (from broken-dist==1.0) failed during import" in res.stderr
    assert "missing dependency xyz" in res.stderr
    assert "plugin 'typo'" in res.stderr and "validation" in res.stderr  # check_pending caught the typo
    assert "Traceback" not in res.stderr

    res = run_crossvis(["hello", "--name", "vis"], pythonpath=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "hello vis", res.stderr

    res = run_crossvis(["components", "--json"], pythonpath=tmp_path,
                       env_extra={"CROSSVIS_LOAD_PLUGINS": "fine"})
    assert res.returncode == 0 and "broken" not in res.stderr
    assert any(r["name"] == "fine_tracker" for r in json.loads(res.stdout))
    res = run_crossvis(["components", "--json"], pythonpath=tmp_path,
                       env_extra={"CROSSVIS_LOAD_PLUGINS": ""})
    assert not any(r["name"] == "fine_tracker" for r in json.loads(res.stdout))


def test_example_plugin_installs_and_builds_from_yaml(tmp_path):
    target = tmp_path / "site"
    source = tmp_path / "plugin-src"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(REPO / "examples" / "plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--quiet", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    res = run_crossvis(["components", "--kind", "backbone", "--json"], pythonpath=target)
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
    env = dict(os.environ, PYTHONPATH=str(target))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "'res5': (1, 64, 2, 3)" in res.stdout and res.stdout.strip().endswith("32")
