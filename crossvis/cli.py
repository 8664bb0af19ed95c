"""The ``crossvis`` command line.

Verbs live in ``crossvis/commands/*.py`` (each module's ``add_parser(subparsers)``; the modules
import nothing heavy at import time, so ``crossvis --help`` starts without torch) and in plugins
implementing ``crossvis_add_commands``. Plugins are imported only when the command line names a
verb that is not built in, so built-in commands never pay for them.

A :class:`~crossvis.errors.CrossVISError` is printed as one line ``crossvis: error: ...`` and
exits with status 2; no traceback is shown for bad input. Library messages come through the
``crossvis`` logger: info to stdout, warnings to stderr (``-q`` hides info, ``-v`` adds debug).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from typing import Optional, Sequence

from crossvis.errors import CrossVISError

__all__ = ["main", "entry", "build_parser", "configure_logging"]


class _ConsoleHandler(logging.Handler):
    """The CLI's view of the ``crossvis`` logger: info to stdout, warnings and errors to stderr.

    The streams are looked up at each record (not bound at start), so redirected or captured
    ``sys.stdout`` / ``sys.stderr`` receive the messages.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                stream, text = sys.stderr, f"crossvis: {record.levelname.lower()}: {message}"
            elif getattr(record, "plain", False):
                stream, text = sys.stdout, message
            else:
                stream, text = sys.stdout, f"crossvis: {message}"
            tqdm = sys.modules.get("tqdm")
            if tqdm is not None:  # clear any progress bar, write the line, redraw the bar below it
                with tqdm.tqdm.external_write_mode(file=stream):
                    stream.write(text + "\n")
                    stream.flush()
            else:
                stream.write(text + "\n")
                stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the program down
            self.handleError(record)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``crossvis: error:`` line (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CrossVISError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def configure_logging(verbosity: int = 0) -> None:
    """Route the ``crossvis`` logger to the console: 0 = info, 1+ = debug, -1 = warnings only."""
    logger = logging.getLogger("crossvis")
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)


def _command_modules() -> list[str]:
    import crossvis.commands as commands

    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_"))


def build_parser(with_plugins: bool = False, verb: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser: built-in verbs, plus the plugins' verbs when ``with_plugins`` (or when
    ``verb`` is given and is not a built-in one: plugins are loaded only for a verb they may own).

    For a built-in ``verb`` named like its module (``convert-checkpoint`` in
    ``commands/convert_checkpoint.py``) only that verb is built: building every verb costs ~35 ms,
    a tenth of a short ``crossvis evaluate``.
    """
    own = verb.replace("-", "_") if verb is not None else None
    if not with_plugins and own in _command_modules():
        parser, subparsers = _top_parser()
        importlib.import_module(f"crossvis.commands.{own}").add_parser(subparsers)
        if verb in subparsers.choices:
            return parser
    parser, subparsers = _top_parser()
    for name in _command_modules():
        importlib.import_module(f"crossvis.commands.{name}").add_parser(subparsers)
    if with_plugins or (verb is not None and verb not in subparsers.choices):
        from crossvis.plugins import get_plugin_manager

        get_plugin_manager().call("crossvis_add_commands", subparsers=subparsers)
    return parser


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``crossvis`` parser with its global options and an empty set of verbs."""
    parser = _Parser(
        prog="crossvis", description="Fast online video instance segmentation (CrossVIS).",
        epilog="Installed plugins may add commands; `crossvis plugins` lists them.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)


def _verb(argv: Sequence[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from crossvis.threads import set_openmp_defaults

    set_openmp_defaults()  # before any command imports torch
    _exit_at_once[0] = False
    try:
        verb = _verb(argv)
        parser = build_parser(verb=verb)
        args, unknown = parser.parse_known_args(argv)
        if getattr(args, "passthrough", False):
            # a command that hands its arguments to another program (crossvis bench) gets all of
            # them, in order, options included
            args.options = argv[argv.index(args.command) + 1:]
        elif unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        configure_logging(-1 if args.quiet else args.verbose)
        if args.version:
            from crossvis import __version__

            print(f"crossvis {__version__}")
            return 0
        if not getattr(args, "func", None):
            parser.print_help()
            return 1
        code = int(args.func(args) or 0)
        _exit_at_once[0] = bool(getattr(args, "quick_exit", False))
        return code
    except CrossVISError as exc:
        print(f"crossvis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crossvis: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


_exit_at_once = [False]  # set by main() for a finished command that asks for quick_exit


def entry() -> None:
    """The process entry point (the ``crossvis`` console script, ``python -m crossvis``): :func:`main`,
    then exit with its status.

    A command that sets ``quick_exit`` (``crossvis evaluate``, which holds millions of parsed JSON
    objects; measured: ~0.1 s to free them) ends the process without the interpreter's teardown once
    its output is flushed. Commands with files, loggers or workers to close exit normally.
    """
    code = main()
    if _exit_at_once[0]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
