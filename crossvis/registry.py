"""One registry of named components, grouped by kind, with provenance.

Components are registered by plugins (the built-in packages are plugins too) through the
``crossvis_register_components(registry)`` hook. Recipes refer to them as ``{type: name, ...}``.
The registry is a plain data structure: it knows nothing of plugins (the process-wide one is
:func:`crossvis.plugins.get_registry`). Every kind here is built from recipes somewhere:
backbone/neck/head (``model.*``), loss (``model.embedding_loss``, the FCOS loss), model,
tracker (``tracker:``), dataset (``data.*``) and transform (``data.*.transforms``).

Example:
    >>> reg = Registry()
    >>> reg.register("backbone", "toy", dict, provider="mypkg")
    >>> reg.get("backbone", "toy")
    <class 'dict'>
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from crossvis.errors import CrossVISError

__all__ = ["KINDS", "Registry", "RegistryEntry", "UnknownComponentError", "DuplicateComponentError"]

KINDS: tuple[str, ...] = (
    "backbone", "neck", "head", "loss", "model", "tracker", "dataset", "transform",
)


class UnknownComponentError(CrossVISError, KeyError):
    """A recipe or a call names a component that no plugin registered."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


class DuplicateComponentError(CrossVISError):
    """Two plugins registered the same (kind, name)."""


@dataclass(frozen=True)
class RegistryEntry:
    kind: str
    name: str
    obj: Callable[..., Any]
    provider: str          # plugin name, e.g. "crossvis" or "crossvis-toy-plugin"
    distribution: str      # "dist==version" of the package that ships it, or provider

    @property
    def qualname(self) -> str:
        mod = getattr(self.obj, "__module__", "?")
        return f"{mod}.{getattr(self.obj, '__qualname__', repr(self.obj))}"


class Registry:
    """Named factories (classes or functions) by kind.

    ``register`` refuses a (kind, name) that is already taken, naming both providers.
    ``get`` raises :class:`UnknownComponentError` naming the kind, close matches, the available
    names and, when given, where the name came from (``where``, e.g. ``"recipe.yaml:7"``).
    """

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, RegistryEntry]] = {k: {} for k in KINDS}
        self._current_provider: Optional[tuple[str, str]] = None

    # -- registration -------------------------------------------------------------------------
    def register(self, kind: str, name: str, obj: Callable[..., Any], *,
                 provider: Optional[str] = None, distribution: Optional[str] = None) -> Callable[..., Any]:
        """Register ``obj`` under ``kind``/``name`` and return it (usable as a decorator helper)."""
        if kind not in self._entries:
            raise CrossVISError(
                f"cannot register {name!r}: unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if not callable(obj):
            raise CrossVISError(f"cannot register {kind} {name!r}: {obj!r} is not callable")
        if not isinstance(name, str) or not name:
            raise CrossVISError(f"cannot register a {kind} with name {name!r}: names are non-empty strings")
        if provider is None:
            provider, dist = self._current_provider or ("user", "user")
        else:
            dist = distribution or provider
        if distribution is not None:
            dist = distribution
        old = self._entries[kind].get(name)
        if old is not None and old.obj is not obj:
            raise DuplicateComponentError(
                f"{kind} {name!r} is registered twice: by {old.provider} ({old.qualname}, from {old.distribution}) "
                f"and by {provider} ({getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}, "
                f"from {dist}); uninstall one of them or restrict plugins with CROSSVIS_LOAD_PLUGINS")
        self._entries[kind][name] = RegistryEntry(kind, name, obj, provider, dist)
        return obj

    def providing(self, provider: str, distribution: str) -> "_ProviderScope":
        """Context manager: entries registered inside it are attributed to ``provider``."""
        return _ProviderScope(self, (provider, distribution))

    def unregister_provider(self, provider: str) -> None:
        for kind in self._entries:
            for name in [n for n, e in self._entries[kind].items() if e.provider == provider]:
                del self._entries[kind][name]

    # -- lookup -------------------------------------------------------------------------------
    def get(self, kind: str, name: str, where: Optional[str] = None) -> Callable[..., Any]:
        return self.entry(kind, name, where).obj

    def entry(self, kind: str, name: str, where: Optional[str] = None) -> RegistryEntry:
        if kind not in self._entries:
            raise CrossVISError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        table = self._entries[kind]
        if name in table:
            return table[name]
        available = sorted(table)
        close = difflib.get_close_matches(str(name), available, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        loc = f" at {where}" if where else ""
        listing = ", ".join(available) if available else "none registered"
        raise UnknownComponentError(
            f"unknown {kind} {name!r}{loc}{hint}; available {_plural(kind)}: {listing}")

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries.get(kind, {}))

    def entries(self, kind: Optional[str] = None) -> Iterator[RegistryEntry]:
        kinds = [kind] if kind else list(KINDS)
        for k in kinds:
            for name in sorted(self._entries.get(k, {})):
                yield self._entries[k][name]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})


class _ProviderScope:
    def __init__(self, registry: Registry, provider: tuple[str, str]) -> None:
        self.registry, self.provider, self.saved = registry, provider, None

    def __enter__(self) -> Registry:
        self.saved = self.registry._current_provider
        self.registry._current_provider = self.provider
        return self.registry

    def __exit__(self, *exc: object) -> None:
        self.registry._current_provider = self.saved


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")
