"""Building components from recipe nodes ``{type: name, **kwargs}``."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping, Optional

from crossvis.recipes.loader import RecipeError, RecipeNode
from crossvis.registry import Registry, UnknownComponentError

__all__ = ["build", "check_kwargs", "component_parameters"]


def component_parameters(factory: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters a factory accepts, and whether it takes ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, True
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return params, var_kw


def _where(node: Mapping[str, Any], key: Optional[str], fallback: Optional[str]) -> str:
    if isinstance(node, RecipeNode):
        return node.where(key)
    base = fallback or "<recipe>"
    return f"{base}.{key}" if key else base


def check_kwargs(kind: str, name: str, factory: Any, kwargs: Mapping[str, Any],
                 node: Mapping[str, Any], where: Optional[str] = None,
                 injected: tuple[str, ...] = ()) -> None:
    """Raise a RecipeError for keyword arguments the factory does not accept or still needs."""
    params, var_kw = component_parameters(factory)
    if not var_kw:
        for key in kwargs:
            if key not in params:
                close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                accepted = ", ".join(sorted(p for p in params if p not in injected)) or "none"
                raise RecipeError(
                    f"{_where(node, key, where)}: {kind} {name!r} has no argument {key!r}{hint}; "
                    f"it accepts: {accepted}")
    missing = [n for n, p in params.items()
               if p.default is inspect.Parameter.empty and n not in kwargs and n not in injected]
    if missing:
        raise RecipeError(
            f"{_where(node, None, where)}: {kind} {name!r} needs argument(s) {', '.join(missing)}")


def build(kind: str, node: Mapping[str, Any], *, where: Optional[str] = None,
          registry: Optional[Registry] = None, **inject: Any) -> Any:
    """Build one component from a node ``{type: name, **kwargs}``.

    Args:
        kind: registry kind (``"backbone"``, ``"neck"``, ...).
        node: the recipe mapping; a :class:`RecipeNode` gives file:line in errors.
        where: dotted recipe path used in messages when ``node`` is a plain dict.
        registry: defaults to the process-wide registry filled by the plugins.
        **inject: wiring values (``input_shape``, ``num_classes``, ...) passed when the factory
            accepts a parameter of that name and the node does not set it.

    Returns:
        Whatever the factory returns.
    """
    if not isinstance(node, Mapping):
        raise RecipeError(f"{where or kind}: expected a mapping with a 'type' key, got {node!r}")
    if "type" not in node:
        raise RecipeError(f"{_where(node, None, where)}: a {kind} node needs a 'type' key")
    if registry is None:
        from crossvis.plugins import get_registry

        registry = get_registry()
    name = node["type"]
    try:
        factory = registry.get(kind, name, where=_where(node, "type", where))
    except UnknownComponentError as exc:
        raise RecipeError(str(exc)) from None
    kwargs = {k: v for k, v in node.items() if k != "type"}
    params, var_kw = component_parameters(factory)
    injected = tuple(k for k in inject if (k in params or var_kw) and k not in kwargs)
    check_kwargs(kind, name, factory, kwargs, node, where, injected)
    for key in injected:
        kwargs[key] = inject[key]
    try:
        return factory(**kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{_where(node, None, where)}: cannot build {kind} {name!r}: {exc}") from exc
