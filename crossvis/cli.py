"""The ``crossvis`` command line.

Verbs live in ``crossvis/commands/*.py`` (discovered automatically) and in plugins implementing
``crossvis_add_commands``. A :class:`~crossvis.structures.CrossVISError` is printed as one line
``crossvis: error: ...`` and exits with status 2; no traceback is shown for bad input.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from crossvis.errors import CrossVISError


def build_parser() -> argparse.ArgumentParser:
    import crossvis.commands as commands

    parser = argparse.ArgumentParser(
        prog="crossvis", description="Fast online video instance segmentation (CrossVIS).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"crossvis.commands.{info.name}")
        module.add_parser(subparsers)
    from crossvis.plugins import get_plugin_manager

    get_plugin_manager().call_safely("crossvis_add_commands", subparsers=subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.version:
            from crossvis import __version__

            print(f"crossvis {__version__}")
            return 0
        if not getattr(args, "func", None):
            parser.print_help()
            return 1
        return int(args.func(args) or 0)
    except CrossVISError as exc:
        print(f"crossvis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crossvis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
