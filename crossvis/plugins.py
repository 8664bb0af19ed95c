"""The plugin manager: built-in and third-party plugins, loaded through pluggy.

Built-in packages are plugins like any other: each has a ``components`` module implementing
``crossvis_register_components`` (listed in :data:`BUILTIN_PLUGINS`). Third-party plugins are found
through the entry-point group ``crossvis`` (see :mod:`crossvis.hookspecs`).

Environment variables:
    CROSSVIS_LOAD_PLUGINS: comma-separated entry-point names to load; other external plugins are
        skipped. Set it to an empty string to load only the built-ins.
    CROSSVIS_DISABLE_PLUGIN_AUTOLOAD: any non-empty value skips every external plugin.

Failures: every hook is called through pluggy's relay (``pm.hook.NAME``). Each implementation of
a third-party plugin runs inside a guard: when it raises, the plugin is reported by plugin and
distribution name (a ``logging`` warning), that hook of that plugin is not called again, and the
other implementations go on. A failing ``crossvis_register_components`` also rolls back what the
plugin had registered. Built-in implementations are not guarded: their errors are bugs and
propagate.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata as metadata
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pluggy

from crossvis.hookspecs import PROJECT, HookSpecs, hookimpl, hookspec
from crossvis.registry import Registry

__all__ = ["hookimpl", "hookspec", "PROJECT", "ENTRY_POINT_GROUP", "BUILTIN_PLUGINS",
           "CrossVISPluginManager", "get_plugin_manager", "get_registry", "reset_plugin_manager",
           "register_plugin", "PluginFailure", "entry_point_names"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "crossvis"
_REGISTER = "crossvis_register_components"

#: Modules of the built-in packages that register components, in registration order.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "crossvis.backbones.components",
    "crossvis.heads.components",
    "crossvis.losses.components",
    "crossvis.models.components",
    "crossvis.trackers.components",
    "crossvis.data.components",
    "crossvis.association.components",
    "crossvis.calibration.components",
)


@dataclass
class PluginFailure:
    """One plugin failure: which plugin, from which distribution, at which stage, and the error."""

    plugin: str
    distribution: str
    stage: str  # "import", "registration", "validation" or the hook name
    error: str

    def message(self) -> str:
        return (f"plugin {self.plugin!r} (from {self.distribution}) failed during {self.stage}: {self.error}; "
                f"it was skipped. Set CROSSVIS_LOAD_PLUGINS to the plugins you want, or fix/uninstall it")


def _is_builtin(plugin_name: str) -> bool:
    return plugin_name.startswith("crossvis.")


def _provider_name(plugin_name: str) -> str:
    return "crossvis" if _is_builtin(plugin_name) else plugin_name


class CrossVISPluginManager(pluggy.PluginManager):
    """A pluggy manager that owns the component registry and remembers plugin provenance.

    Attributes:
        registry: the :class:`~crossvis.registry.Registry` the plugins fill.
        failures: every :class:`PluginFailure` so far (also logged as warnings).
        distributions: plugin name -> ``"dist==version"``.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(HookSpecs)
        self.registry = Registry()
        self.failures: list[PluginFailure] = []
        self.distributions: dict[str, str] = {}
        self._broken: set[tuple[str, str]] = set()  # (plugin, hook) pairs not called again

    # -- loading ----------------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Add the built-in packages' ``components`` modules as plugins."""
        for modname in BUILTIN_PLUGINS:
            module = importlib.import_module(modname)
            self.add_plugin(module, name=modname, distribution=_crossvis_dist())

    def load_entry_points(self) -> None:
        """Import and add the ``crossvis`` entry points the environment allows."""
        if os.environ.get("CROSSVIS_DISABLE_PLUGIN_AUTOLOAD"):
            return
        allowed = _allowed_names()
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
            except pluggy.PluginValidationError as exc:  # e.g. a hook with wrong arguments
                self._fail(ep.name, dist, "registration", exc)

    def add_plugin(self, plugin: Any, name: Optional[str] = None, distribution: Optional[str] = None) -> str:
        """Register ``plugin`` (a module or object) and let it register its components now.

        Returns:
            The plugin's name in the manager.
        """
        registered = self.register(plugin, name=name)
        if registered is None:  # blocked or already registered
            return name or ""
        pname = self.get_name(plugin)
        self.distributions[pname] = distribution or pname
        self._guard_implementations(plugin, pname)
        caller = self.subset_hook_caller(_REGISTER, remove_plugins=[p for p in self.get_plugins() if p is not plugin])
        caller(registry=self.registry)
        return pname

    def remove_plugin(self, name: str) -> None:
        """Unregister plugin ``name`` and drop the components it registered."""
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.registry.unregister_provider(_provider_name(name))

    # -- calling ------------------------------------------------------------------------------------
    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """``self.hook.<hook_name>(**kwargs)``; a failing third-party *wrapper* is reported and skipped.

        (Ordinary implementations are guarded one by one, see the module docstring.)
        """
        try:
            return getattr(self.hook, hook_name)(**kwargs)
        except Exception as exc:  # noqa: BLE001
            culprit = self._culprit(exc, hook_name)
            if culprit is None or _is_builtin(culprit):
                raise
            self._fail(culprit, self.distributions.get(culprit, culprit), hook_name, exc)
            self._broken.add((culprit, hook_name))
            self.remove_plugin(culprit)
            return None

    # -- internals ------------------------------------------------------------------------------------
    def _guard_implementations(self, plugin: Any, pname: str) -> None:
        """Wrap each non-wrapper hook implementation of ``plugin`` in an error guard."""
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin or impl.hookwrapper or impl.wrapper:
                    continue
                impl.function = self._guarded(impl.function, pname, caller.name)

    def _guarded(self, function: Callable[..., Any], pname: str, hook_name: str) -> Callable[..., Any]:
        manager = self

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if (pname, hook_name) in manager._broken:
                return None
            provider = _provider_name(pname)
            try:
                if hook_name == _REGISTER:
                    with manager.registry.providing(provider, manager.distributions.get(pname, pname)):
                        return function(*args, **kwargs)
                return function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not kill the host
                if _is_builtin(pname):
                    raise  # a broken built-in is a bug, not a user problem
                manager._broken.add((pname, hook_name))
                if hook_name == _REGISTER:
                    manager.registry.unregister_provider(provider)
                manager._fail(pname, manager.distributions.get(pname, pname), hook_name, exc)
                return None

        return guarded

    def _culprit(self, exc: BaseException, hook_name: str) -> Optional[str]:
        """The plugin whose hook implementation raised ``exc`` (found on the traceback), if any."""
        codes = {}
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            function = getattr(impl.function, "__wrapped__", impl.function)
            code = getattr(function, "__code__", None)
            if code is not None:
                codes[code] = impl.plugin_name
        tb = exc.__traceback__
        found = None
        while tb is not None:
            found = codes.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found

    def _fail(self, plugin: str, dist: str, stage: str, exc: BaseException) -> None:
        failure = PluginFailure(plugin, dist, stage, f"{type(exc).__name__}: {exc}")
        self.failures.append(failure)
        logger.warning(failure.message())


def _crossvis_dist() -> str:
    try:
        return f"crossvis=={metadata.version('crossvis')}"
    except metadata.PackageNotFoundError:
        return "crossvis (source tree)"


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _allowed_names() -> Optional[set[str]]:
    allow = os.environ.get("CROSSVIS_LOAD_PLUGINS")
    return None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}


def entry_point_names() -> list[str]:
    """Names of the external plugins that would load (read from package metadata, nothing imported)."""
    if os.environ.get("CROSSVIS_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    allowed = _allowed_names()
    return sorted({ep.name for ep in _entry_points() if allowed is None or ep.name in allowed})


_lock = threading.RLock()
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
                plugin = getattr(exc, "plugin", None)
                pname = pm.get_name(plugin) if plugin is not None else "?"
                pm._fail(pname or "?", pm.distributions.get(pname, "?"), "validation", exc)
                if pname:
                    pm.remove_plugin(pname)
            _manager = pm
        return _manager


def get_registry() -> Registry:
    """The process-wide registry, filled by the plugins on first use."""
    return get_plugin_manager().registry


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests; after installing a plugin at run time)."""
    global _manager
    with _lock:
        _manager = None


def register_plugin(plugin: Any, name: Optional[str] = None) -> str:
    """Register a plugin object or module at run time, e.g. from another project's code."""
    return get_plugin_manager().add_plugin(plugin, name=name, distribution=name or "user")
