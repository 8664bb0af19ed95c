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
    rles = mask_utils.encode(np.asfortranarray((masks != 0).astype(np.uint8).transpose(1, 2, 0)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def check_size(size: Any) -> Optional[str]:
    """None when ``size`` is ``[h, w]`` with non-negative ints and h·w ≤ :data:`MAX_PIXELS`, else the problem."""
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


def check_compressed(counts: Sequence[bytes], sizes: Sequence[tuple[int, int]]) -> tuple[list[Optional[str]], np.ndarray]:
    """Validate compressed RLE strings, all at once.

    Args:
        counts: N ``counts`` strings as ASCII bytes.
        sizes: the N masks' (h, w), already checked with :func:`check_size`.

    Returns:
        ``(problems, areas)``: problems[i] is None when string i decodes to non-negative runs that
        add up to h·w, else a one-line description; areas is int64 [N], the pixel count of each
        valid mask (0 for invalid ones).
    """
    n = len(counts)
    pixels = np.array([h * w for h, w in sizes], dtype=np.int64).reshape(n)
    reason = np.zeros(n, dtype=np.int8)
    sums = np.zeros(n, dtype=np.int64)
    areas = np.zeros(n, dtype=np.int64)
    lengths = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
    data = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)  # wraps: bad characters are > 63
    if data.size:
        string_end = np.cumsum(lengths)
        bad_char = np.flatnonzero(data > 63)
        if bad_char.size:
            reason[np.searchsorted(string_end, bad_char, side="right")] = 1
            data = data.copy()
            data[bad_char] = 0
        more = (data & 0x20) != 0
        last = string_end[lengths > 0] - 1
        _flag(reason, np.flatnonzero(lengths > 0)[more[last]], 2)
        more[last] = False  # groups never span two strings
        ends = np.flatnonzero(~more)
        starts = np.concatenate(([0], ends[:-1] + 1))
        group_len = ends - starts + 1
        group_mask = np.searchsorted(string_end, starts, side="right")
        _flag(reason, group_mask[group_len > _MAX_GROUPS], 3)
        value = (data[starts] & 0x1F).astype(np.int64)
        longer = np.flatnonzero(group_len > 1)
        for k in range(1, _MAX_GROUPS):
            if not longer.size:
                break
            value[longer] |= (data[starts[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
            longer = longer[group_len[longer] > k + 1]
        negative = (data[ends] & 0x10) != 0
        value[negative] -= np.int64(1) << (5 * np.minimum(group_len[negative], _MAX_GROUPS))
        groups_per_mask = np.bincount(group_mask, minlength=n)
        first_group = np.concatenate(([0], np.cumsum(groups_per_mask)[:-1]))
        position = np.arange(ends.size) - first_group[group_mask]
        odd = (position & 1) == 1
        runs = value.copy()
        # run m (m >= 3) is stored as the difference to run m - 2: undo with per-mask cumulative sums
        for select in (odd, ~odd & (position >= 2)):
            idx = np.flatnonzero(select)
            if idx.size:
                runs[idx] = _segmented_cumsum(value[idx], group_mask[idx])
        _flag(reason, group_mask[runs < 0], 4)
        has_runs = groups_per_mask > 0
        if has_runs.any():
            sums[has_runs] = np.add.reduceat(runs, first_group[has_runs])
            areas[has_runs] = np.add.reduceat(np.where(odd, runs, 0), first_group[has_runs])
    problems: list[Optional[str]] = []
    for i in range(n):
        if reason[i]:
            problems.append(_PROBLEMS[int(reason[i])])
        elif sums[i] != pixels[i]:
            h, w = sizes[i]
            problems.append(f"compressed RLE counts sum to {int(sums[i])}, not h*w = {h}*{w} = {int(pixels[i])} "
                            "(truncated or corrupt string)")
        else:
            problems.append(None)
    areas[reason != 0] = 0
    return problems, areas


def _flag(reason: np.ndarray, masks: np.ndarray, code: int) -> None:
    """Set ``reason[masks] = code`` where no earlier problem was recorded."""
    if masks.size:
        masks = np.unique(masks)
        masks = masks[reason[masks] == 0]
        reason[masks] = code


def _segmented_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarting wherever ``segment`` (sorted) changes."""
    total = np.cumsum(values)
    first = np.concatenate(([True], segment[1:] != segment[:-1]))
    starts = np.flatnonzero(first)
    base = (total - values)[starts]
    return total - np.repeat(base, np.diff(np.concatenate((starts, [values.size]))))


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (user values quoted in one-line messages)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
