"""The user-facing error type (no torch import, so light modules and the CLI start fast)."""

__all__ = ["CrossVISError"]


class CrossVISError(Exception):
    """An error caused by the user's input (a file, a recipe key, a checkpoint).

    The command line prints its message as one line, without a traceback, and exits with status 2.
    The message must name the offending file or key and say what to do about it.
    """
