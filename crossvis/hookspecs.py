"""The crossvis hook specifications and the ``hookimpl`` marker (pluggy project ``crossvis``).

A plugin is a module or object with functions named like the hooks below and marked with
``@crossvis.hookimpl``; an implementation may accept any subset of a hook's arguments. Plugins are
announced through the entry-point group ``crossvis``::

    [project.entry-points.crossvis]
    my_plugin = "my_package.crossvis_plugin"

Every hook is called through pluggy's hook relay (``plugin_manager.hook.NAME(...)``), so
``tryfirst``/``trylast`` ordering and ``wrapper=True`` implementations work as pluggy documents
(``crossvis_register_components`` is called once per plugin, when the plugin is added).
This module imports only pluggy.
"""
from __future__ import annotations

from typing import Any, Optional

import pluggy

__all__ = ["PROJECT", "hookspec", "hookimpl", "HookSpecs"]

PROJECT = "crossvis"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """Hook specifications. Implementations may accept a subset of each hook's arguments."""

    @hookspec
    def crossvis_register_components(self, registry: Any) -> None:
        """Register components: ``registry.register(kind, name, factory)`` for each one.

        Called once for each plugin when it is added; what it registers is attributed to it.
        """

    @hookspec
    def crossvis_add_commands(self, subparsers: Any) -> None:
        """Add sub-commands to the ``crossvis`` CLI (an ``argparse`` subparsers object).

        A command's parser must set ``func=callable(args) -> int`` with ``set_defaults``. Called only
        when the command line names a verb that is not built in (or for ``crossvis plugins``), so
        built-in commands start without importing plugins.
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
