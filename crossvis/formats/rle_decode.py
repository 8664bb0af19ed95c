"""Decoding many COCO compressed RLE strings at once, vectorised with NumPy.

The string format (pycocotools ``maskApi.c`` ``rleFrString``): each run is written as
little-endian groups of 5 bits, one character ``chr(48 + group)`` each; bit 0x20 of a character
means "more groups follow" and bit 0x10 of a run's last group is its sign. From the fourth run on
(index m >= 3) the stored number is the difference to run m - 2.

:func:`decode_compressed` decodes a batch in a fixed number of array passes (no Python loop over
strings or runs) and reports, per string, whether it is a valid mask: every character in
``'0'..'o'``, no run cut off at the end of the string, no run longer than 7 groups, no negative
run. With ``intervals=True`` it also returns each mask's foreground runs as pixel intervals in
column-major order (what :mod:`crossvis.eval.intersections` intersects), so one decoding serves
both the validation and the IoUs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["DecodedRLE", "decode_compressed", "PROBLEM_CODES", "MAX_GROUPS"]

#: 7 groups of 5 bits hold 2**35 > any mask size; a longer run is corrupt.
MAX_GROUPS = 7
#: The problem codes of :attr:`DecodedRLE.problems` (0: none).
PROBLEM_CODES = {
    1: "compressed RLE 'counts' has characters outside '0'..'o' (not a COCO RLE string)",
    2: "compressed RLE 'counts' ends in the middle of a run (truncated string)",
    3: "compressed RLE 'counts' has a run longer than any mask (corrupt string)",
    4: "compressed RLE 'counts' decodes to a negative run length (corrupt string)",
}


@dataclass
class DecodedRLE:
    """N decoded strings.

    Attributes:
        problems: int8 [N], a :data:`PROBLEM_CODES` key per string, 0 when it decodes cleanly.
        sums: int64 [N], the sum of each string's runs (a valid h×w mask has h·w).
        areas: int64 [N], the sum of each string's foreground runs (its pixel count).
        starts, ends: int64 [F], the foreground runs as pixel intervals ``[start, end)`` in
            column-major order (pixel ``(y, x)`` is ``x * h + y``), string after string, in order
            (only with ``intervals=True``; meaningful for strings without a problem).
        offsets: int64 [N + 1], string i's intervals are ``starts[offsets[i]:offsets[i + 1]]``.
    """

    problems: np.ndarray
    sums: np.ndarray
    areas: np.ndarray
    starts: Optional[np.ndarray] = None
    ends: Optional[np.ndarray] = None
    offsets: Optional[np.ndarray] = None


def join_ascii(counts: Sequence[bytes | str]) -> bytes:
    """The strings concatenated as bytes (``str`` items must be ASCII, checked by the caller)."""
    try:
        return "".join(counts).encode("ascii")  # the usual case: every item a str
    except TypeError:
        return b"".join(c.encode("ascii") if isinstance(c, str) else c for c in counts)


def decode_compressed(counts: Sequence[bytes | str], lengths: Optional[np.ndarray] = None, *,
                      intervals: bool | np.ndarray = False) -> DecodedRLE:
    """Decode compressed RLE strings (ASCII ``bytes`` or ``str``).

    Args:
        counts: N strings.
        lengths: int64 [N], their lengths (computed when omitted).
        intervals: also return the foreground intervals (see :class:`DecodedRLE`); a bool [N]
            array asks for those of some strings only (the others get none).

    The work is a few NumPy passes over the characters and the runs: call it on batches of about
    10^5 characters so that the temporaries stay in the CPU cache.
    """
    n = len(counts)
    if lengths is None:
        lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    problems = np.zeros(n, dtype=np.int8)
    sums = np.zeros(n, dtype=np.int64)
    areas = np.zeros(n, dtype=np.int64)
    data = np.frombuffer(join_ascii(counts), dtype=np.uint8) - np.uint8(48)  # wraps: bad characters are > 63
    if not data.size:
        return _result(problems, sums, areas, intervals, np.zeros(0, np.int64), np.zeros(n, np.int64),
                       np.zeros(n, np.int64))
    string_end = np.cumsum(lengths)
    if data.max() > 63:
        bad = np.flatnonzero(data > 63)
        problems[np.searchsorted(string_end, bad, side="right")] = 1
        data[bad] = 0
    nonempty = np.flatnonzero(lengths > 0)
    last = string_end[nonempty] - 1
    _flag(problems, nonempty[data[last] >= 32], 2)
    data[last] &= 0x1F  # so that no run spans two strings
    is_last = data < 32  # the last character of every run
    continued = np.flatnonzero(~is_last)  # the other characters of runs longer than one character
    groups = string_end - np.searchsorted(continued, string_end)  # runs up to the end of each string
    n_runs = np.empty_like(groups)
    n_runs[0] = groups[0]
    np.subtract(groups[1:], groups[:-1], out=n_runs[1:])
    heads = groups - n_runs  # index of each string's first run

    # One-character runs (nearly all): value = c - 32 if the sign bit 0x10 is set. The runs are kept
    # as two streams, the even and the odd run indices (see below), each contiguous.
    last_chars = data[is_last]
    signed = (last_chars ^ np.uint8(16)).view(np.int8) - np.int8(16)
    streams = (signed[0::2].astype(np.int64), signed[1::2].astype(np.int64))
    if continued.size:
        # a longer run ends right after its last continuation character; its index is that end
        # position less the continuation characters before it
        tail = np.flatnonzero(is_last[continued + 1])  # index in `continued` of each run's last one
        end = continued[tail] + 1
        longer = end - (tail + 1)
        begins = np.append(True, continued[1:] != continued[:-1] + 1)  # first continuation char of a run
        size = tail - np.flatnonzero(begins) + 2  # characters of each longer run
        if (size > MAX_GROUPS).any():
            _flag(problems, np.searchsorted(groups, longer[size > MAX_GROUPS], side="right"), 3)
            size = np.minimum(size, MAX_GROUPS)
        top = data[end]
        long_value = top.astype(np.int64)  # the most significant group comes last
        todo = np.arange(longer.size)
        for k in range(1, MAX_GROUPS):
            todo = todo[size[todo] > k]
            if not todo.size:
                break
            long_value[todo] = (long_value[todo] << 5) | (data[end[todo] - k] & 0x1F)
        long_value -= np.left_shift(np.int64(1), 5 * size) * (top >= 16)
        for parity in (0, 1):
            pick = (longer & 1) == parity
            streams[parity][longer[pick] >> 1] = long_value[pick]

    # Runs m >= 3 are differences to run m - 2: per string, the runs of one local parity are the
    # cumulative sums of their differences (run 0 stands alone). The runs of one *global* parity
    # hold, string after string, one such chain per string: a cumulative sum over each global-
    # parity stream, restarted at every string's first element of that stream, gives the runs.
    has_runs = n_runs > 0
    first = heads[has_runs]
    past = groups[has_runs]
    head_values = np.empty(first.size, dtype=np.int64)
    for parity in (0, 1):  # run 0 is not part of a chain
        pick = (first & 1) == parity
        head_values[pick] = streams[parity][first[pick] >> 1]
        streams[parity][first[pick] >> 1] = 0
    total = head_values.copy()
    area = np.zeros(first.size, dtype=np.int64)
    strings = np.flatnonzero(has_runs)
    negative = [strings[head_values < 0]]
    for parity, stream in enumerate(streams):
        begin = first + ((parity - first) & 1)  # each string's first run of this global parity
        present = begin < past
        starts = (begin[present] - parity) // 2
        if not starts.size:
            continue
        segment = np.add.reduceat(stream, starts)  # the stream's total within each string
        stream[starts[1:]] -= segment[:-1]  # restart the cumulative sum at each string's first element
        np.cumsum(stream, out=stream)
        if stream.min() < 0:
            owners = np.searchsorted(starts, np.flatnonzero(stream < 0), side="right") - 1
            negative.append(strings[present][owners])
        part = np.add.reduceat(stream, starts)
        total[present] += part
        foreground = (first[present] & 1) != parity  # odd local index: a run of 1s
        area[np.flatnonzero(present)[foreground]] += part[foreground]
    value = np.zeros(0, dtype=np.int64)
    if intervals is not False:
        value = np.empty(last_chars.size, dtype=np.int64)
        value[0::2], value[1::2] = streams
        value[first] = head_values
    _flag(problems, np.concatenate(negative), 4)
    sums[has_runs] = total
    areas[has_runs] = area
    return _result(problems, sums, areas, intervals, value, heads, n_runs)


def _result(problems: np.ndarray, sums: np.ndarray, areas: np.ndarray, intervals: bool | np.ndarray, runs: np.ndarray,
            heads: np.ndarray, n_runs: np.ndarray) -> DecodedRLE:
    """The :class:`DecodedRLE`; with ``intervals``, ``runs`` (int64 [G], modified) becomes positions."""
    decoded = DecodedRLE(problems, sums, areas)
    if intervals is False:
        return decoded
    # Each string's run ends relative to its own start: one cumulative sum over all runs, with every
    # string's first run lowered by the total of the string before it.
    if runs.size:
        has_runs = n_runs > 0
        runs[heads[has_runs][1:]] -= sums[has_runs][:-1]
        np.cumsum(runs, out=runs)
    per_string = n_runs // 2  # foreground runs: local indices 1, 3, 5, ...
    if intervals is not True:
        per_string = np.where(intervals, per_string, 0)
    offsets = np.zeros(per_string.size + 1, dtype=np.int64)
    np.cumsum(per_string, out=offsets[1:])
    index = 2 * np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(heads + 1 - 2 * offsets[:-1], per_string)
    decoded.starts, decoded.ends = runs[index - 1], runs[index]
    decoded.offsets = offsets
    return decoded


def _flag(problems: np.ndarray, strings: np.ndarray, code: int) -> None:
    """Set ``problems[strings] = code`` where no earlier problem was recorded."""
    if strings.size:
        strings = np.unique(strings)
        strings = strings[problems[strings] == 0]
        problems[strings] = code
