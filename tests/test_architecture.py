"""The package map of docs/architecture.md, checked on the source: who may import whom, no print(),
small packages, and the light entry points (CLI help and the evaluator start without torch)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "crossvis"

#: component packages: usable alone; they may import only the small shared modules
COMPONENTS = ("backbones", "heads", "losses", "trackers", "data", "eval", "formats")
SHARED = {"crossvis", "crossvis.errors", "crossvis.structures", "crossvis.registry", "crossvis.hookspecs",
          "crossvis.atomic", "crossvis.distributed", "crossvis.formats", "crossvis.parallel"}
#: what may never be imported by a component package
FORBIDDEN_FOR_COMPONENTS = ("crossvis.training", "crossvis.inference", "crossvis.deploy", "crossvis.cli",
                            "crossvis.commands", "crossvis.models")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(rel.parts), path


def _imports(path: Path, modname: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    package = modname.rsplit(".", 1)[0] if not path.name == "__init__.py" else modname
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "crossvis" or m.startswith("crossvis.")}


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_packages_import_no_higher_layer(component):
    offenders = []
    for modname, path in _modules():
        if not modname.startswith(f"crossvis.{component}.") and modname != f"crossvis.{component}":
            continue
        for imported in _imports(path, modname):
            if imported.startswith(FORBIDDEN_FOR_COMPONENTS):
                offenders.append(f"{modname} imports {imported}")
            other = imported.split(".")[1] if imported.count(".") >= 1 else None
            if other in COMPONENTS and other != component and imported not in SHARED \
                    and not imported.startswith("crossvis.formats"):
                offenders.append(f"{modname} imports another component package's internals: {imported}")
    assert not offenders, "\n".join(offenders)


def test_registry_knows_nothing_of_plugins():
    assert _imports(PACKAGE / "registry.py", "crossvis.registry") <= {"crossvis.errors"}


def test_no_print_in_library_code():
    offenders = []
    for modname, path in _modules():
        if modname == "crossvis.cli" or modname.startswith("crossvis.commands"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, "print() in library code (use logging): " + ", ".join(offenders)


def test_no_package_holds_more_than_twelve_modules():
    """Every package, the top level included, counts its .py files (``__init__`` and ``__main__`` too)."""
    packages = [PACKAGE, *[d for d in PACKAGE.rglob("*") if d.is_dir() and (d / "__init__.py").exists()]]
    sizes = {p.relative_to(PACKAGE.parent).as_posix(): len(list(p.glob("*.py"))) for p in packages}
    assert sizes and max(sizes.values()) <= 12, {k: v for k, v in sizes.items() if v > 12}


def test_comments_cite_no_outside_document():
    offenders = [f"{path.relative_to(PACKAGE.parent)}" for _, path in _modules()
                 if "reference §" in path.read_text() or "../shared" in path.read_text()]
    assert not offenders, offenders


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_cli_help_and_evaluator_do_not_load_torch():
    help_modules = _loaded_after(
        "import contextlib, io\nfrom crossvis.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help']) if False else None\n"
        "import crossvis.cli as c\nc.build_parser()")
    assert "torch" not in help_modules
    assert not any(m.startswith("crossvis.training") or m.startswith("crossvis.models") for m in help_modules)
    assert "torch" not in _loaded_after("import crossvis.eval")
    assert "torch" not in _loaded_after("from crossvis.data import check_annotations, load_vis_annotations, "
                                        "generate_synthetic_dataset")


def test_inference_does_not_load_the_training_stack():
    loaded = _loaded_after("import crossvis.inference.predictor, crossvis.inference.runner, crossvis.inference.fast\n"
                           "from crossvis import Predictor")
    assert "torch" in loaded  # the check is meaningful: inference did load its own stack
    assert not [m for m in loaded if m.startswith("crossvis.training")]
