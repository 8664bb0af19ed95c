"""All-or-nothing file writes: the one home for writing a file so that a crash never leaves it half written.

Every writer in crossvis (checkpoints, results, metrics, recipes, overlays' side files) goes
through :func:`atomic_write`: the data goes to a temporary file in the target's folder, is
fsynced, moved into place with ``os.replace`` and the folder is fsynced, so a reader sees either
the old file or the new one. Temporary files are named ``.NAME.*.tmp``; :func:`remove_stale_temporaries`
deletes the ones a killed process left behind. This module does not import torch.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_write_json",
           "remove_stale_temporaries"]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Create or replace ``path`` with what ``write(file_object)`` writes, all-or-nothing.

    Args:
        path: the destination; its folder is created when missing.
        write: called once with the open temporary file (opened with ``mode``).
        mode: ``"wb"`` for bytes, ``"w"`` for text (UTF-8).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a written file gets the usual mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` all-or-nothing."""
    atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` all-or-nothing."""
    atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_json(path: PathLike, obj: Any, indent: Union[int, None] = None) -> None:
    """Write ``obj`` as JSON (a trailing newline) to ``path`` all-or-nothing."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files an interrupted :func:`atomic_write` left in ``folder``; return them.

    Only call this for a folder whose writer is not running (e.g. a run folder being resumed).
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed
