"""The pluggy plugin system: hook specifications, the ``hookimpl`` marker and the plugin manager.

Built-in packages are plugins like any other: each has a ``components`` module implementing
``crossvis_register_components``. Third-party plugins are found through the entry-point group
``crossvis``::

    [project.entry-points.crossvis]
    my_plugin = "my_package.crossvis_plugin"

Environment variables:
    CROSSVIS_LOAD_PLUGINS: comma-separated entry-point names to load; other external plugins are
        skipped. Set it to an empty string to load only the built-ins.
    CROSSVIS_DISABLE_PLUGIN_AUTOLOAD: any non-empty value skips every external plugin.

A plugin that fails to import or whose hook raises is reported on stderr by plugin and distribution
name and skipped; the rest keeps working.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional

import pluggy

from crossvis.registry import Registry

__all__ = ["hookimpl", "hookspec", "PROJECT", "ENTRY_POINT_GROUP", "BUILTIN_PLUGINS",
           "CrossVISPluginManager", "get_plugin_manager", "reset_plugin_manager", "PluginFailure"]

PROJECT = "crossvis"
ENTRY_POINT_GROUP = "crossvis"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Modules of the built-in packages that register components, in registration order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "crossvis.backbones.components",
    "crossvis.heads.components",
    "crossvis.losses.components",
    "crossvis.models.components",
    "crossvis.trackers.components",
    "crossvis.data.components",
    "crossvis.eval.components",
)


class HookSpecs:
    """Hook specifications. Implementations may accept a subset of each hook's arguments."""

    @hookspec
    def crossvis_register_components(self, registry: Registry) -> None:
        """Register components: ``registry.register(kind, name, factory)`` for each one."""

    @hookspec
    def crossvis_add_commands(self, subparsers: Any) -> None:
        """Add sub-commands to the ``crossvis`` CLI (an ``argparse`` subparsers object).

        A command's parser must set ``func=callable(args) -> int`` with ``set_defaults``.
        """

    @hookspec
    def crossvis_train_start(self, trainer: Any) -> None:
        """Called once before the first training iteration (also after a resume)."""

    @hookspec
    def crossvis_after_step(self, trainer: Any, iteration: int, metrics: dict) -> None:
        """Called after every training iteration with the logged scalar metrics."""

    @hookspec
    def crossvis_train_end(self, trainer: Any) -> None:
        """Called once after the last iteration and the final checkpoint."""

    @hookspec(firstresult=True)
    def crossvis_convert_checkpoint(self, state_dict: dict, source: str) -> Optional[dict]:
        """Return a crossvis state dict for a foreign checkpoint format, or None if not yours."""


@dataclass
class PluginFailure:
    plugin: str
    distribution: str
    stage: str  # "import" or the hook name
    error: str

    def message(self) -> str:
        return (f"plugin {self.plugin!r} (from {self.distribution}) failed during {self.stage}: {self.error}; "
                f"it was skipped. Set CROSSVIS_LOAD_PLUGINS to the plugins you want, or fix/uninstall it")


class CrossVISPluginManager(pluggy.PluginManager):
    """A pluggy manager that owns the component registry and remembers plugin provenance."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(HookSpecs)
        self.registry = Registry()
        self.failures: list[PluginFailure] = []
        self.distributions: dict[str, str] = {}  # plugin name -> "dist==version"
        self._components_loaded: set[str] = set()

    # -- loading ----------------------------------------------------------------------------------
    def load_builtins(self) -> None:
        for modname in BUILTIN_PLUGINS:
            try:
                module = importlib.import_module(modname)
            except ModuleNotFoundError as exc:  # a package without components yet
                if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
                    continue
                raise
            self.add_plugin(module, name=modname, distribution=_crossvis_dist())

    def load_entry_points(self) -> None:
        if os.environ.get("CROSSVIS_DISABLE_PLUGIN_AUTOLOAD"):
            return
        allow = os.environ.get("CROSSVIS_LOAD_PLUGINS")
        allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        for ep in _entry_points():
            if allowed is not None and ep.name not in allowed:
                continue
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name}=={ep.dist.version}" if getattr(ep, "dist", None) else ep.value
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not kill the host
                self._fail(ep.name, dist, "import", exc)
                continue
            try:
                self.add_plugin(plugin, name=ep.name, distribution=dist)
            except Exception as exc:  # noqa: BLE001 - e.g. a hook with wrong arguments
                self._fail(ep.name, dist, "registration", exc)

    def add_plugin(self, plugin: Any, name: Optional[str] = None, distribution: Optional[str] = None) -> str:
        """Register ``plugin`` (a module or object) and let it register its components now."""
        registered = self.register(plugin, name=name)
        if registered is None:
            return name or ""
        pname = self.get_name(plugin)
        self.distributions[pname] = distribution or pname
        self._register_components_of(pname)
        return pname

    def remove_plugin(self, name: str) -> None:
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.registry.unregister_provider(_provider_name(name))
        self._components_loaded.discard(name)

    def _register_components_of(self, pname: str) -> None:
        if pname in self._components_loaded:
            return
        self._components_loaded.add(pname)
        for impl in self.hook.crossvis_register_components.get_hookimpls():
            if impl.plugin_name != pname:
                continue
            dist = self.distributions.get(pname, pname)
            try:
                with self.registry.providing(_provider_name(pname), dist):
                    impl.function(registry=self.registry)
            except Exception as exc:  # noqa: BLE001
                if pname.startswith("crossvis."):
                    raise  # a broken built-in is a bug, not a user problem
                self.registry.unregister_provider(_provider_name(pname))
                self._fail(pname, dist, "crossvis_register_components", exc)

    def _fail(self, plugin: str, dist: str, stage: str, exc: BaseException) -> None:
        failure = PluginFailure(plugin, dist, stage, f"{type(exc).__name__}: {exc}")
        self.failures.append(failure)
        print(f"crossvis: warning: {failure.message()}", file=sys.stderr)

    def call_safely(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name``; one that raises is reported by plugin and skipped."""
        results = []
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
            try:
                results.append(impl.function(**args))
            except Exception as exc:  # noqa: BLE001
                if impl.plugin_name.startswith("crossvis."):
                    raise
                self._fail(impl.plugin_name, self.distributions.get(impl.plugin_name, "?"), hook_name, exc)
        return results


def _provider_name(plugin_name: str) -> str:
    return "crossvis" if plugin_name.startswith("crossvis.") else plugin_name


def _crossvis_dist() -> str:
    try:
        return f"crossvis=={metadata.version('crossvis')}"
    except metadata.PackageNotFoundError:
        return "crossvis (source tree)"


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


_lock = threading.Lock()
_manager: Optional[CrossVISPluginManager] = None


def get_plugin_manager() -> CrossVISPluginManager:
    """The process-wide plugin manager: built-ins first, then entry points, then ``check_pending``."""
    global _manager
    with _lock:
        if _manager is None:
            pm = CrossVISPluginManager()
            pm.load_builtins()
            pm.load_entry_points()
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                name = getattr(exc, "plugin", None)
                pname = pm.get_name(name) if name is not None else "?"
                pm._fail(pname, pm.distributions.get(pname, "?"), "validation", exc)
                if name is not None:
                    pm.remove_plugin(pname)
            _manager = pm
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests; after installing a plugin at run time)."""
    global _manager
    with _lock:
        _manager = None


def register_plugin(plugin: ModuleType | Any, name: Optional[str] = None) -> str:
    """Register a plugin object or module at run time, e.g. from another project's code."""
    return get_plugin_manager().add_plugin(plugin, name=name, distribution=name or "user")
