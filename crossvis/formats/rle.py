"""COCO run-length encoding: encode masks, and validate RLE before pycocotools ever reads it.

A mask of ``size`` [h, w] is a list of run lengths over its pixels in column-major order, starting
with a run of 0s. Uncompressed RLE stores them as a JSON list of ints; compressed RLE as a string
(pycocotools ``maskApi.c`` ``rleToString``): each run is the difference to the run two places
before it (from the fourth run on), written as little-endian groups of 5 bits, one character
``chr(48 + group)`` each, with bit 0x20 meaning "more groups follow" and bit 0x10 of the last group
the sign.

pycocotools trusts its input: a string that ends inside a run is read past its end, negative or
oversized runs write past the mask buffer or make ``area``/``iou`` loop practically forever. So
every RLE read from a file goes through :func:`check_compressed` / :func:`check_uncompressed`
once, at load time: the counts must decode, be non-negative and add up to h × w. Both are
vectorised with numpy (the compressed check takes a whole list of strings at once).
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError
from crossvis.parallel import forked_map

__all__ = ["encode_mask", "encode_masks", "check_size", "check_compressed", "check_uncompressed",
           "MAX_PIXELS"]

#: pycocotools stores run lengths as 32-bit unsigned ints, so larger masks cannot be encoded.
MAX_PIXELS = 2 ** 31 - 1
#: 7 groups of 5 bits hold 2**35 > MAX_PIXELS; a longer run is corrupt (and overflows pycocotools' shift).
_MAX_GROUPS = 7


def encode_mask(mask: Any) -> dict:
    """Compressed RLE of one binary mask.

    Args:
        mask: bool or 0/1 integer array [H, W] (anything ``np.asarray`` takes; a tensor's
            ``.detach().cpu().numpy()`` is used when present).

    Returns:
        ``{"size": [H, W], "counts": str}`` (COCO column-major compressed RLE, counts as ASCII text).
    """
    mask = _as_numpy(mask)
    if mask.ndim != 2:
        raise CrossVISError(f"encode_mask expects one H×W mask, got shape {tuple(mask.shape)}")
    return encode_masks(mask[None])[0]


def encode_masks(masks: Any) -> list[dict]:
    """Compressed RLE of N binary masks, bool/uint8 [N, H, W] -> N dicts ``{"size": [H, W], "counts": str}``."""
    masks = _as_numpy(masks)
    if masks.ndim != 3:
        raise CrossVISError(f"encode_masks expects N×H×W masks, got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    binary = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    # pycocotools wants a Fortran-ordered H×W×N array, i.e. N×W×H in C order: one transposing copy
    rles = mask_utils.encode(np.ascontiguousarray(binary.transpose(0, 2, 1)).transpose(2, 1, 0))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def check_size(size: Any) -> Optional[str]:
    """None when ``size`` is ``[h, w]`` with non-negative ints and h·w ≤ :data:`MAX_PIXELS`, else the problem."""
    if type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int:  # the usual case, fast
        if size[0] < 0 or size[1] < 0 or size[0] * size[1] > MAX_PIXELS:
            return f"RLE 'size' {list(size)} is negative or too large"
        return None
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)):
        return f"RLE 'size' must be [height, width] (two ints), got {short_repr(size)}"
    if size[0] < 0 or size[1] < 0 or size[0] * size[1] > MAX_PIXELS:
        return f"RLE 'size' {list(size)} is negative or too large"
    return None


def check_uncompressed(counts: Any, height: int, width: int) -> tuple[Optional[str], int]:
    """Validate uncompressed RLE counts for an h×w mask.

    Returns:
        ``(problem, area)``: problem is None when ``counts`` is a list of non-negative ints adding
        up to h·w; area is the mask's pixel count (0 when invalid).
    """
    if not isinstance(counts, list):
        return f"RLE 'counts' must be a list of ints or a string, got {type(counts).__name__}", 0
    try:
        runs = np.asarray(counts) if counts else np.zeros(0, dtype=np.int64)
    except (ValueError, OverflowError):
        runs = np.zeros(0, dtype=object)
    if runs.ndim != 1 or runs.dtype.kind not in "iu":
        return "uncompressed RLE 'counts' must be a flat list of ints", 0
    runs = runs.astype(np.int64)
    if (runs < 0).any():
        return "uncompressed RLE has a negative run length", 0
    total = int(runs.sum())
    if total != height * width:
        return (f"uncompressed RLE counts sum to {total}, not h*w = {height}*{width} = {height * width} "
                "(truncated or corrupt counts)"), 0
    return None, int(runs[1::2].sum())


_PROBLEMS = {
    1: "compressed RLE 'counts' has characters outside '0'..'o' (not a COCO RLE string)",
    2: "compressed RLE 'counts' ends in the middle of a run (truncated string)",
    3: "compressed RLE 'counts' has a run longer than any mask (corrupt string)",
    4: "compressed RLE 'counts' decodes to a negative run length (corrupt string)",
}


def check_compressed(counts: Sequence[bytes | str], sizes: Sequence[Sequence[int]],
                     workers: int = 1) -> tuple[list[Optional[str]], np.ndarray]:
    """Validate compressed RLE strings, all at once.

    Args:
        counts: N ``counts`` strings, as ASCII bytes or ASCII ``str``.
        sizes: the N masks' (h, w) (pairs or lists), already checked with :func:`check_size`.
        workers: with more than one and at least :data:`PARALLEL_MIN_CHUNKS` chunks of
            :data:`_CHUNK_CHARS` characters, the chunks are decoded by that many forked
            processes (:func:`crossvis.parallel.forked_map`); the result is the same.

    Returns:
        ``(problems, areas)``: problems[i] is None when string i decodes to non-negative runs that
        add up to h·w, else a one-line description; areas is int64 [N], the pixel count of each
        valid mask (0 for invalid ones).
    """
    n = len(counts)
    problems: list[Optional[str]] = [None] * n
    if n == 0:
        return problems, np.zeros(0, dtype=np.int64)
    unique: dict[tuple, int] = {}  # identical masks (often the empty one) are checked once
    first_of = np.fromiter((unique.setdefault((c, size[0], size[1]), len(unique)) for c, size in zip(counts, sizes)),
                           dtype=np.int64, count=n)
    keys = list(unique)
    lengths = np.fromiter((len(k[0]) for k in keys), dtype=np.int64, count=len(keys))
    pixels = np.fromiter((int(k[1]) * int(k[2]) for k in keys), dtype=np.int64, count=len(keys))
    unique_areas = np.zeros(len(keys), dtype=np.int64)
    unique_problems: dict[int, str] = {}
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(_CHUNK_CHARS, int(lengths.sum()), _CHUNK_CHARS))
    chunks = [(start, stop) for start, stop in zip([0, *(bounds + 1).tolist()], [*(bounds + 1).tolist(), len(keys)])
              if start < stop]  # (a string longer than a chunk already ended the previous one)
    decoded = forked_map(lambda c: _decode_chunk([k[0] for k in keys[chunks[c][0]:chunks[c][1]]],
                                                 lengths[chunks[c][0]:chunks[c][1]]),
                         len(chunks), workers if len(chunks) >= PARALLEL_MIN_CHUNKS else 1)
    for (start, stop), (reason, sums, chunk_areas) in zip(chunks, decoded):
        expected = pixels[start:stop]
        ok = (reason == 0) & (sums == expected)
        unique_areas[start:stop] = np.where(ok, chunk_areas, 0)
        for k in np.flatnonzero(~ok).tolist():
            code, h, w = int(reason[k]), int(keys[start + k][1]), int(keys[start + k][2])
            unique_problems[start + k] = _PROBLEMS[code] if code else (
                f"compressed RLE counts sum to {int(sums[k])}, not h*w = {h}*{w} = {h * w} "
                "(truncated or corrupt string)")
    if unique_problems:
        bad = np.flatnonzero(np.isin(first_of, np.fromiter(unique_problems, dtype=np.int64)))
        for i in bad.tolist():
            problems[i] = unique_problems[int(first_of[i])]
    return problems, unique_areas[first_of]


_CHUNK_CHARS = 1 << 17  # characters decoded at once: the temporaries stay in cache (measured fastest)
#: Fewer chunks than this are decoded in-process: a chunk takes ~1-3 ms, starting two workers 20-40 ms.
PARALLEL_MIN_CHUNKS = 24


def _join_ascii(counts: list[bytes | str]) -> bytes:
    """The strings concatenated as bytes (``str`` items are ASCII, checked by the caller)."""
    try:
        return "".join(counts).encode("ascii")  # the usual case: every item a str
    except TypeError:
        return b"".join(c.encode("ascii") if isinstance(c, str) else c for c in counts)


def _decode_chunk(counts: list[bytes | str], lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode compressed strings (``lengths``: int64 [N] their lengths): per string a problem code
    (0 = none), the sum of its runs and its area."""
    n = len(counts)
    reason = np.zeros(n, dtype=np.int8)
    sums = np.zeros(n, dtype=np.int64)
    areas = np.zeros(n, dtype=np.int64)
    data = np.frombuffer(_join_ascii(counts), dtype=np.uint8) - np.uint8(48)  # wraps: bad characters are > 63
    if not data.size:
        return reason, sums, areas
    string_end = np.cumsum(lengths)
    if data.max() > 63:
        bad = np.flatnonzero(data > 63)
        reason[np.searchsorted(string_end, bad, side="right")] = 1
        data[bad] = 0
    nonempty = lengths > 0
    last = string_end[nonempty] - 1
    _flag(reason, np.flatnonzero(nonempty)[data[last] >= 32], 2)
    data[last] &= 0x1F  # groups never span two strings
    ends = np.flatnonzero(data < 32)  # the last character of every 5-bit group sequence
    groups = np.searchsorted(ends, string_end)  # cumulative number of runs at the end of each string
    groups_per_mask = np.diff(groups, prepend=0)
    first = groups - groups_per_mask
    group_len = np.diff(ends, prepend=-1)
    long_groups = np.flatnonzero(group_len > _MAX_GROUPS)
    if long_groups.size:
        _flag(reason, np.searchsorted(groups, long_groups, side="right"), 3)
    value = (data[ends] & 0x1F).astype(np.int64)
    # the sign bit of the last group: value - 2**(5 * group length)
    sign = np.left_shift(np.int64(1), 5 * np.minimum(group_len, _MAX_GROUPS)) * (value >= 16)
    longer = np.flatnonzero(group_len > 1)
    for k in range(1, _MAX_GROUPS):  # value = sum of chunk_j << 5j, chunk 0 first; built from the last
        if not longer.size:
            break
        value[longer] = (value[longer] << 5) | (data[ends[longer] - k] & 0x1F)
        longer = longer[group_len[longer] > k + 1]
    value -= sign
    # Run m >= 3 is stored as the difference to run m - 2, so per mask the runs of one local
    # parity are cumulative sums of their differences (runs 1, 3, 5, ... and runs 2, 4, ...; run 0
    # stands alone). The groups of one *global* parity hold, mask after mask, one local-parity chain
    # of each mask: a segmented cumulative sum over each global-parity stream gives the runs.
    has_runs = groups_per_mask > 0
    heads = first[has_runs]
    head_values = value[heads]
    chain = value
    chain[heads] = 0  # run 0 is not part of the even chain
    last_group = groups[has_runs]  # one past each mask's last group
    masks = np.flatnonzero(has_runs)
    negative = [masks[head_values < 0]]
    total = head_values.copy()
    area = np.zeros(heads.size, dtype=np.int64)
    for parity in (0, 1):
        stream = chain[parity::2]
        begin = heads + ((parity - heads) & 1)  # the mask's first group of this global parity
        present = begin < last_group
        starts = (begin[present] - parity) // 2
        if not starts.size:
            continue
        cum = np.cumsum(stream)
        before = np.zeros(starts.size, dtype=np.int64)
        before[1:] = cum[starts[1:] - 1]
        stream = stream.copy()
        stream[starts[1:]] -= np.diff(before)
        runs = np.cumsum(stream, out=stream)  # per mask: its runs of this global parity
        if runs.min() < 0:
            negative.append(masks[present][np.searchsorted(starts, np.flatnonzero(runs < 0), side="right") - 1])
        part = np.add.reduceat(runs, starts)
        total[present] += part
        odd = (heads[present] & 1) != parity  # local index = global index - head: odd runs are the 1s
        area[np.flatnonzero(present)[odd]] += part[odd]
    _flag(reason, np.concatenate(negative), 4)
    sums[has_runs] = total
    areas[has_runs] = area
    return reason, sums, areas


def _flag(reason: np.ndarray, masks: np.ndarray, code: int) -> None:
    """Set ``reason[masks] = code`` where no earlier problem was recorded."""
    if masks.size:
        masks = np.unique(masks)
        masks = masks[reason[masks] == 0]
        reason[masks] = code


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (user values quoted in one-line messages)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
