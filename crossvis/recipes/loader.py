"""Loading YAML recipes: strict parsing, ``_base_`` inheritance, overrides and references.

A recipe is a YAML mapping. Rules:

* ``yaml.safe_load`` semantics, plus: duplicate keys are an error; ``1e-4`` (an exponent without a
  dot) is a float, not a string.
* ``_base_: path`` or ``_base_: [path, ...]`` (relative to the including file; ``crossvis:NAME``
  names a recipe shipped inside the package) is loaded first; bases merge left to right, then the
  file itself. Mappings deep-merge, lists and scalars replace.
* ``_replace_: true`` inside a mapping drops the inherited mapping instead of merging into it.
  Changing ``type:`` of a component node also drops the inherited keyword arguments.
* ``--set a.b=c`` overrides are applied last; values are parsed as YAML scalars.
* ``${a.b}`` references to other values are resolved after merging (a whole-string reference keeps
  the referenced value's type).

Every mapping of a loaded recipe is a :class:`RecipeNode` that remembers its dotted path and the
``file:line`` each key came from, so errors can point at the recipe text.
"""
from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import yaml

from crossvis.errors import CrossVISError

__all__ = ["RecipeNode", "RecipeError", "load_recipe", "parse_overrides", "apply_overrides",
           "to_plain", "dump_recipe", "recipe_from_dict", "builtin_recipe_dir", "location_of"]

PathLike = Union[str, Path]
_REF = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


class RecipeError(CrossVISError):
    """A problem with a recipe file or an override."""


class RecipeNode(dict):
    """A ``dict`` that knows where it sits in a recipe and where each of its keys was written.

    Attributes:
        path: dotted path of this mapping in the recipe (``""`` for the root).
        locations: key → ``"file:line"`` of the text that set it (the last writer wins).
    """

    def __init__(self, *args: Any, path: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = path
        self.locations: dict[str, str] = {}

    def where(self, key: Optional[str] = None) -> str:
        """Human-readable location: ``model.backbone.type (recipe.yaml:7)``."""
        dotted = ".".join(p for p in (self.path, key) if p)
        loc = self.locations.get(key) if key is not None else None
        if loc is None and key is None and self.locations:
            loc = next(iter(self.locations.values()))
        return f"{dotted or '<recipe root>'} ({loc})" if loc else (dotted or "<recipe root>")

    def __deepcopy__(self, memo: dict) -> "RecipeNode":
        new = RecipeNode(path=self.path)
        new.locations = dict(self.locations)
        for k, v in self.items():
            dict.__setitem__(new, k, copy.deepcopy(v, memo))
        return new


def location_of(node: Any, key: Optional[str] = None) -> Optional[str]:
    """``"path (file:line)"`` for a key of a recipe node, or None for a plain dict."""
    return node.where(key) if isinstance(node, RecipeNode) else None


# --------------------------------------------------------------------------------------------------
# strict YAML
# --------------------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-4`` as a float."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class _StrictDumper(yaml.SafeDumper):
    """SafeDumper that resolves scalars like :class:`_StrictLoader`, so a string such as ``'0E0'``
    (a float to our loader, a string to PyYAML's) is written quoted and reads back as a string."""


_StrictDumper.yaml_implicit_resolvers = _StrictLoader.yaml_implicit_resolvers


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> RecipeNode:
    loader.flatten_mapping(node)
    result = RecipeNode()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        line = f"{loader.recipe_file}:{key_node.start_mark.line + 1}"
        if key in result:
            raise RecipeError(
                f"duplicate key {key!r} at {line} (first set at {result.locations[key]}); "
                "remove one of them")
        result[key] = loader.construct_object(value_node, deep=True)
        result.locations[key] = line
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    loader = _StrictLoader(io.StringIO(text))
    loader.recipe_file = source
    try:
        return loader.get_single_data()
    except RecipeError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"invalid YAML at {where}: {problem}") from None
    finally:
        loader.dispose()


def parse_scalar(text: str, source: str = "--set") -> Any:
    """Parse one override value as a YAML scalar (or flow list/mapping) with the strict rules."""
    if text == "":
        return ""
    return _parse_yaml(text, source)


# --------------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------------
def _merge(base: Any, update: Any, path: str) -> Any:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    if not isinstance(update, dict):
        return copy.deepcopy(update)
    replace = bool(update.get("_replace_", False))
    type_changed = (isinstance(base, dict) and "type" in update and "type" in base
                    and update["type"] != base["type"])
    if not isinstance(base, dict) or replace or type_changed:
        out = RecipeNode(path=path)
        base_items: Mapping[str, Any] = {}
    else:
        out = RecipeNode(path=path)
        base_items = base
        for k, v in base.items():
            out[k] = copy.deepcopy(v)
            if isinstance(base, RecipeNode) and k in base.locations:
                out.locations[k] = base.locations[k]
    for k, v in update.items():
        if k == "_replace_":
            continue
        child = f"{path}.{k}" if path else k
        out[k] = _merge(base_items.get(k), v, child)
        if isinstance(update, RecipeNode) and k in update.locations:
            out.locations[k] = update.locations[k]
    return out


def _set_paths(node: Any, path: str = "") -> Any:
    if isinstance(node, RecipeNode):
        node.path = path
        for k, v in node.items():
            _set_paths(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _set_paths(v, f"{path}[{i}]")
    return node


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def builtin_recipe_dir() -> Path:
    """Folder of the recipes shipped inside the package (``crossvis:NAME`` in ``_base_``)."""
    return Path(__file__).resolve().parent / "builtin"


def _resolve_recipe_path(ref: str, relative_to: Optional[Path]) -> Path:
    if ref.startswith("crossvis:"):
        name = ref.split(":", 1)[1]
        candidate = builtin_recipe_dir() / name
        if candidate.suffix not in (".yaml", ".yml"):
            candidate = candidate.with_suffix(".yaml")
        return candidate
    p = Path(ref).expanduser()
    if not p.is_absolute() and relative_to is not None:
        p = relative_to / p
    return p


def _load_file(path: Path, stack: tuple[Path, ...]) -> RecipeNode:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError(f"recipe inheritance cycle: {chain}")
    if not path.is_file():
        parent = f" (included from {stack[-1]})" if stack else ""
        raise RecipeError(f"recipe file not found: {path}{parent}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    data = _parse_yaml(text, _display_path(path))
    if data is None:
        data = RecipeNode()
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"_base_ in {path} must be a path or a list of paths")
    merged: Any = RecipeNode()
    for ref in bases:
        base = _load_file(_resolve_recipe_path(ref, path.parent), (*stack, path))
        merged = _merge(merged, base, "")
    return _merge(merged, data, "")


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_overrides(items: Optional[Iterable[str]]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=[1, 2]"]`` → ``[("a.b", 1), ("c", [1, 2])]`` (values parsed as YAML)."""
    out = []
    for item in items or ():
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise RecipeError(f"override {item!r} has an empty key")
        out.append((key, parse_scalar(value, f"--set {key}")))
    return out


def apply_overrides(recipe: RecipeNode, overrides: Sequence[tuple[str, Any]] | Mapping[str, Any]) -> RecipeNode:
    """Set dotted keys (creating mappings as needed). Dicts given as values are merged."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in items:
        parts = key.split(".")
        node: Any = recipe
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = RecipeNode(path=".".join(parts[: i + 1]))
                node[part] = child
                if isinstance(node, RecipeNode):
                    node.locations[part] = "--set"
            elif not isinstance(child, dict):
                raise RecipeError(
                    f"--set {key}: {'.'.join(parts[: i + 1])} is a {type(child).__name__}, not a mapping")
            node = child
        last = parts[-1]
        node[last] = _merge(node.get(last), value, key) if isinstance(value, dict) else value
        if isinstance(node, RecipeNode):
            node.locations[last] = f"--set {key}"
    return recipe


def _lookup(recipe: Mapping[str, Any], dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted)
    return node


def _resolve_refs(recipe: RecipeNode) -> None:
    def resolve(value: Any, where: str, active: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            for k in list(value):
                value[k] = resolve(value[k], f"{where}.{k}" if where else k, active)
            return value
        if isinstance(value, list):
            return [resolve(v, f"{where}[{i}]", active) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def target(name: str) -> Any:
            if name in active:
                raise RecipeError(f"reference cycle: {' -> '.join((*active, name))}")
            try:
                raw = _lookup(recipe, name)
            except KeyError:
                raise RecipeError(f"{where}: reference ${{{name}}} names no recipe key") from None
            return resolve(copy.deepcopy(raw), name, (*active, name))

        whole = _REF.fullmatch(value)
        if whole:
            return target(whole.group(1))
        return _REF.sub(lambda m: str(target(m.group(1))), value)

    resolve(recipe, "", ())


def load_recipe(path: Union[PathLike, Mapping[str, Any]],
                overrides: Optional[Union[Iterable[str], Mapping[str, Any]]] = None) -> RecipeNode:
    """Load a recipe file (or take a mapping), resolve ``_base_``, overrides and references.

    Args:
        path: a YAML file, ``crossvis:NAME`` for a recipe shipped with the package, or a mapping.
        overrides: ``["a.b=c", ...]`` strings (as on the command line) or a ``{dotted: value}`` mapping.

    Returns:
        The resolved recipe as a :class:`RecipeNode` (a ``dict``).
    """
    if isinstance(path, Mapping):
        recipe = recipe_from_dict(path)
    else:
        ref = str(path)
        recipe = _load_file(_resolve_recipe_path(ref, None), ())
    if overrides:
        parsed = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
        apply_overrides(recipe, parsed)
    _resolve_refs(recipe)
    return _set_paths(recipe)


def recipe_from_dict(data: Mapping[str, Any]) -> RecipeNode:
    """Turn a plain mapping into a recipe (mappings become RecipeNodes, keeping known locations)."""
    def convert(v: Any, path: str) -> Any:
        if isinstance(v, Mapping):
            node = RecipeNode(path=path)
            if isinstance(v, RecipeNode):
                node.locations = dict(v.locations)
            for k, x in v.items():
                node[str(k)] = convert(x, f"{path}.{k}" if path else str(k))
            return node
        if isinstance(v, (list, tuple)):
            return [convert(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return copy.deepcopy(v)

    return convert(data, "")


def to_plain(value: Any) -> Any:
    """Recursively convert RecipeNodes/tuples to plain dicts/lists (YAML- and torch.save-safe)."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """The recipe as YAML text that :func:`load_recipe` reads back to an equal mapping."""
    return yaml.dump(to_plain(recipe), Dumper=_StrictDumper, sort_keys=False, default_flow_style=None, width=100,
                     allow_unicode=True)
