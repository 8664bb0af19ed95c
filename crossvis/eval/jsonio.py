"""Reading JSON files with one-line, user-facing errors."""
from __future__ import annotations

import json
import os
from typing import Any

from crossvis.errors import CrossVISError

__all__ = ["read_json"]


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse the JSON file ``path``; ``what`` names it in errors ("annotations file", ...).

    Raises:
        CrossVISError: the file is missing, unreadable or not valid JSON (with line and column).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CrossVISError(f"{what} {path} does not exist; check the path")
    if os.path.isdir(path):
        raise CrossVISError(f"{what} {path} is a directory; pass the JSON file inside it")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise CrossVISError(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CrossVISError(f"{what} {path} cannot be read: {exc}") from None
