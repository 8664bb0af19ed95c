"""Reading a JSON file with one-line, user-facing errors (the one JSON reader of crossvis' data files)."""
from __future__ import annotations

import codecs
import json
import mmap
import os
import re
from typing import Any, Optional

import orjson

from crossvis.errors import CrossVISError

__all__ = ["read_json", "read_bytes", "map_file", "parse_json", "array_pieces"]


def read_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Parse the JSON file ``path``; ``what`` names it in errors ("annotation file", "results file", ...).

    JSON's ``NaN`` / ``Infinity`` literals are parsed (as Python does); callers validate values.

    Raises:
        CrossVISError: the file is missing, a folder, unreadable, not UTF-8, nested too deeply or
            not valid JSON (the message gives ``file:line:column``).
    """
    return parse_json(read_bytes(path, what), os.fspath(path), what)


def map_file(path: str | os.PathLike, what: str = "annotation file") -> bytes | mmap.mmap:
    """The file ``path`` memory-mapped read-only (its bytes, read, when it is empty or cannot be
    mapped), with :func:`read_json`'s one-line errors."""
    try:
        with open(path, "rb") as fh:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return read_bytes(path, what)


def read_bytes(path: str | os.PathLike, what: str = "annotation file") -> bytes:
    """The bytes of the file ``path``, with :func:`read_json`'s one-line errors."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CrossVISError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise CrossVISError(f"{what} {path} is a folder; pass the JSON file inside it") from None
    except OSError as exc:
        raise CrossVISError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def parse_json(raw: bytes, path: str, what: str = "annotation file") -> Any:
    """Parse the bytes ``raw`` read from ``path`` (see :func:`read_json`)."""
    try:  # orjson first (SIMD string scanning: ~1.5x faster on RLE-heavy results files)
        return orjson.loads(raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw)
    except orjson.JSONDecodeError:
        pass  # NaN/Infinity literals, integers beyond 64 bits, lone surrogates, bad UTF-8: json decides and explains
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise CrossVISError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON in the {what} ({exc.msg}); "
                            "fix or re-export the file") from None
    except UnicodeDecodeError as exc:
        raise CrossVISError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "is it a JSON file?") from None
    except RecursionError:
        raise CrossVISError(f"{what} {path} nests JSON arrays/objects too deeply to be a VIS file") from None


# "}" "," "{" '"key"': a boundary between two objects; group 1 is the next object's first key
_OBJECT_BOUNDARY = re.compile(rb'\}\s*,\s*(\{)\s*"([^"\\]*)"')


def array_pieces(raw: bytes | mmap.mmap, parts: int,
                 inner_keys: tuple[bytes, ...] = ()) -> Optional[list[tuple[int, int]]]:
    """Cut a JSON array of objects into ``parts`` byte ranges of consecutive elements, to parse apart.

    ``raw[a:b]`` of each range ``(a, b)``, wrapped in ``[`` ``]``, is a JSON array of some of the
    elements, in order, *if* each cut fell between two top-level elements. A cut is placed at the
    first object boundary ``}, {`` after the target position whose next object does not start with
    one of ``inner_keys`` (the first keys of the objects nested inside the elements, e.g. the
    ``size``/``counts`` of a results file's masks). That is a guess: the caller must treat a range
    that does not parse as "cut in the wrong place" and parse the whole text instead (a range
    that does parse is correct, since only a cut at the top level leaves both sides balanced).

    ``raw`` may be a memory-mapped file (only the pieces are ever copied).

    Returns:
        The ranges, or None when the text is not ``[{...}, ...]`` or no cut was found.
    """
    head = bytes(raw[:64])
    start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    start += len(head[start:]) - len(head[start:].lstrip())
    tail = bytes(raw[max(0, len(raw) - 64):])
    stop = len(raw) - (len(tail) - len(tail.rstrip()))
    if parts < 2 or raw[start:start + 1] != b"[" or raw[stop - 1:stop] != b"]":
        return None
    cuts, position = [], start + 1
    for k in range(1, parts):
        target = max(position, start + (stop - start) * k // parts)
        for match in _OBJECT_BOUNDARY.finditer(raw, target, stop):
            if match.group(2) not in inner_keys:
                cuts.append(match.start(1))
                position = match.end()
                break
        else:
            break
    if not cuts:
        return None
    edges = [start + 1, *cuts, stop - 1]
    pieces = []
    for a, b in zip(edges[:-1], edges[1:]):
        end = raw.rfind(b"}", a, b) + 1 if b != stop - 1 else b  # drop the "," before the next piece
        pieces.append((a, end))
    return pieces
