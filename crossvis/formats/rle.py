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
from crossvis.formats.rle_decode import PROBLEM_CODES, decode_compressed
from crossvis.formats import rle_encode
from crossvis.parallel import forked_map

__all__ = ["encode_mask", "encode_masks", "encode_runs", "check_size", "check_compressed", "check_uncompressed",
           "describe_problem", "chunk_bounds", "MAX_PIXELS"]

#: how many threads :func:`encode_masks` encodes on, measured in this process
_THREAD_CHOICE = rle_encode.ThreadChoice()

#: pycocotools stores run lengths as 32-bit unsigned ints, so larger masks cannot be encoded.
MAX_PIXELS = 2 ** 31 - 1


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


def encode_masks(masks: Any, threads: int = 1) -> list[dict]:
    """Compressed RLE of N binary masks, bool/uint8 [N, H, W] -> N dicts ``{"size": [H, W], "counts": str}``.

    The masks are encoded with pycocotools' own C encoder, reading only each mask's occupied
    columns (:mod:`crossvis.formats.rle_encode`; the same strings; below
    ``MIN_PIXELS_NATIVE`` pixels on one thread, by ``pycocotools.mask.encode``); ``threads`` > 1
    allows encoding slices of the masks on that many threads, which is used when the first calls
    measured it faster than one thread. Masks stored column-major (the transposed
    view of a contiguous [N, W, H] array) are encoded without a transposing copy.
    """
    masks = _as_numpy(masks)
    if masks.ndim != 3:
        raise CrossVISError(f"encode_masks expects N×H×W masks, got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    binary = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    # pycocotools wants a Fortran-ordered H×W×N array, i.e. N×W×H in C order: one transposing copy
    fortran = np.ascontiguousarray(binary.transpose(0, 2, 1)).transpose(2, 1, 0)
    h, w = int(masks.shape[1]), int(masks.shape[2])
    native = threads > 1 or fortran.size >= rle_encode.MIN_PIXELS_NATIVE
    counts = _THREAD_CHOICE.encode(fortran, threads) if native else None
    if counts is None:
        counts = [r["counts"] for r in mask_utils.encode(fortran)]
    return [{"size": [h, w], "counts": c.decode("ascii")} for c in counts]


def encode_runs(counts: np.ndarray, offsets: np.ndarray, size: Sequence[int]) -> list[dict]:
    """Compressed RLE of N masks given by their run lengths -> N dicts ``{"size": [H, W], "counts": str}``.

    Args:
        counts: uint32 [total] run lengths of all masks one after another (each mask's in COCO
            order: column-major, starting with a run of 0s, summing to H·W).
        offsets: int64 [N + 1]; mask ``i``'s runs are ``counts[offsets[i]:offsets[i + 1]]``.
        size: (H, W) of the masks.

    The strings are ``rleToString``'s (pycocotools' C code, through :mod:`ctypes`), or
    ``pycocotools.mask.frPyObjects``' where that is not callable: the same text either way.
    """
    h, w = int(size[0]), int(size[1])
    strings = rle_encode.strings_from_runs(counts, offsets, h, w)
    if strings is None:
        runs = np.asarray(counts)
        strings = [mask_utils.frPyObjects({"size": [h, w], "counts": runs[a:b].tolist()}, h, w)["counts"]
                   for a, b in zip(np.asarray(offsets)[:-1].tolist(), np.asarray(offsets)[1:].tolist())]
    return [{"size": [h, w], "counts": c.decode("ascii")} for c in strings]


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
    chunks = chunk_bounds(lengths)
    decoded = forked_map(lambda c: decode_compressed([k[0] for k in keys[chunks[c][0]:chunks[c][1]]],
                                                     lengths[chunks[c][0]:chunks[c][1]]),
                         len(chunks), workers if len(chunks) >= PARALLEL_MIN_CHUNKS else 1)
    for (start, stop), result in zip(chunks, decoded):
        expected = pixels[start:stop]
        ok = (result.problems == 0) & (result.sums == expected)
        unique_areas[start:stop] = np.where(ok, result.areas, 0)
        for k in np.flatnonzero(~ok).tolist():
            unique_problems[start + k] = describe_problem(int(result.problems[k]), int(result.sums[k]),
                                                          int(keys[start + k][1]), int(keys[start + k][2]))
    if unique_problems:
        bad = np.flatnonzero(np.isin(first_of, np.fromiter(unique_problems, dtype=np.int64)))
        for i in bad.tolist():
            problems[i] = unique_problems[int(first_of[i])]
    return problems, unique_areas[first_of]


_CHUNK_CHARS = 1 << 17  # characters decoded at once: the temporaries stay in cache (measured fastest)
#: Fewer chunks than this are decoded in-process: a chunk takes ~1-3 ms, too little to split a few.
PARALLEL_MIN_CHUNKS = 24


def chunk_bounds(lengths: np.ndarray, chars: Optional[int] = None) -> list[tuple[int, int]]:
    """Split strings of ``lengths`` (int64 [N]) into consecutive ``(start, stop)`` batches of about
    ``chars`` characters (default :data:`_CHUNK_CHARS`; a longer string is a batch of its own)."""
    chars = chars or _CHUNK_CHARS
    if not lengths.size:
        return []
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(chars, int(lengths.sum()), chars))
    cuts = [0, *(bounds + 1).tolist(), lengths.size]
    return [(start, stop) for start, stop in zip(cuts[:-1], cuts[1:]) if start < stop]


def describe_problem(code: int, total: int, height: int, width: int) -> Optional[str]:
    """The one-line problem of a decoded string (a :data:`~crossvis.formats.rle_decode.PROBLEM_CODES`
    code and the sum of its runs) as an ``height`` × ``width`` mask; None when it is valid."""
    if code:
        return PROBLEM_CODES[code]
    if total != height * width:
        return (f"compressed RLE counts sum to {total}, not h*w = {height}*{width} = {height * width} "
                "(truncated or corrupt string)")
    return None


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (user values quoted in one-line messages)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
