"""Run lengths of a thresholded aligned-bilinear upsample, computed without making the mask.

CondInst's masks are ``aligned_bilinear(probs, 4) > threshold`` cropped to the frame: at 360×640
that is 230k pixels per mask, which pasting writes and the RLE encoder then reads again (together
~15 ms for 86 masks on 2 cores, more than the rest of the post-processing). The run lengths depend only
on where the mask changes along the encoding order, and an upsampled map changes almost only at
the few cells its boundary passes through. :func:`aligned_bilinear_runs` finds those changes from
the low-resolution map.

The upsampled map is made of ``f × f`` *cells*: cell ``(i, j)`` is the bilinear interpolation of
the four samples ``probs[i:i+2, j:j+2]`` (replicate-padded at the far edges) with the in-cell
weights ``r / f`` that ``align_corners=True`` gives (see :func:`~crossvis.heads.upsample.
aligned_bilinear_unshifted`). The weights are convex, so a cell whose four samples all lie above
the threshold is above it everywhere and one whose four all lie at or below it is below it
everywhere (*constant* cells); only the other cells (*boundary* cells) are interpolated, with the
formula and summation order of :func:`~crossvis.heads.upsample.aligned_bilinear_above`. Two
constant cells side by side share two corners, so they always have the same value: along one row
of the mask, the value changes only

* inside or at the left edge of a boundary cell, and at its right edge when the next cell is
  constant (found from the interpolated pixels of the boundary cells),
* at the start of each row, against the end of the previous row (the RLE runs on across rows).

Each pixel has one value (a constant cell's class, or the boundary formula), used by every
decision that reads it, so the changes always describe one consistent mask. A pixel can differ
from thresholding ``F.interpolate``'s output only where its value is within float rounding of the
threshold (a tie), as in :func:`~crossvis.heads.upsample.aligned_bilinear_above`.

Measured on the benchmark model's 86 masks of a 360×640 frame (2 cores, Intel Xeon): see
``benchmarks/README.md`` ("the masks encoded from the low-resolution map").

Everything here is numpy on the CPU (the masks optionally split over threads): the
low-resolution maps are small (5 MB for 86 masks), and per-element torch ops on them cost more
than numpy's.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

__all__ = ["aligned_bilinear_runs", "runs_in_threads", "MIN_MASKS_PER_THREAD"]


def aligned_bilinear_runs(probs: np.ndarray, factor: int, threshold: float, size: tuple[int, int],
                          threads: int = 1) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Run lengths of ``aligned_bilinear(probs, factor)[:, :, :A, :B] > threshold``, read row by row.

    ``aligned_bilinear`` is CondInst's (:func:`~crossvis.heads.upsample.aligned_bilinear`):
    output pixel ``(x, y)`` is the un-shifted upsample's pixel ``(max(x - s, 0), max(y - s, 0))``
    with ``s = factor // 2``. The runs alternate between False and True starting with False (a
    first run of length 0 when the mask starts True), over the mask flattened row-major: for the
    COCO column-major RLE of a mask, pass its transposed map (rows = the mask's columns).

    Args:
        probs: float32 [N, a, b] low-resolution probabilities (C-contiguous or not).
        factor: the integer upsampling factor f ≥ 2.
        threshold: pixels strictly above it are True.
        size: (A, B) rows and columns of the cropped mask, A ≤ f·a and B ≤ f·b.
        threads: split the masks over up to this many threads (numpy releases the GIL in its
            loops, but much of the time holds it: whether two threads pay depends on the machine,
            so the pipeline measures it, see ``crossvis.models.postprocess``).

    Returns:
        ``(counts, offsets)``: uint32 [total] run lengths of all N masks one after another, and
        int64 [N + 1] where mask ``n``'s runs are ``counts[offsets[n]:offsets[n + 1]]``; or None
        when ``size`` is not inside the upsampled map (callers then paste and encode).
    """
    return runs_in_threads(lambda part: _runs(part, factor, threshold, size), np.asarray(probs), threads)


def runs_in_threads(runs: Callable[[np.ndarray], Optional[tuple[np.ndarray, np.ndarray]]], probs: np.ndarray,
                    threads: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``runs(probs)`` with the masks split over up to ``threads`` threads (at least
    :data:`MIN_MASKS_PER_THREAD` masks each), the parts' ``(counts, offsets)`` joined; None if any part is."""
    groups = max(1, min(int(threads), probs.shape[0] // MIN_MASKS_PER_THREAD))
    if groups == 1:
        return runs(probs)
    import threading

    bounds = [round(g * probs.shape[0] / groups) for g in range(groups + 1)]
    parts: list = [None] * groups

    def run(g: int) -> None:
        parts[g] = runs(probs[bounds[g]:bounds[g + 1]])

    helpers = [threading.Thread(target=run, args=(g,), daemon=True) for g in range(1, groups)]
    for helper in helpers:
        helper.start()
    run(0)
    for helper in helpers:
        helper.join()
    if any(part is None for part in parts):
        return None
    counts = np.concatenate([part[0] for part in parts])
    sizes = np.concatenate([np.diff(part[1]) for part in parts])
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return counts, offsets


#: a thread is started for at least this many masks
MIN_MASKS_PER_THREAD = 16


def _runs(probs: np.ndarray, factor: int, threshold: float,
          size: tuple[int, int]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """:func:`aligned_bilinear_runs` on the calling thread."""
    f, s = int(factor), int(factor) // 2
    rows, cols = int(size[0]), int(size[1])
    n, a, b = probs.shape
    if f < 2 or not (s < rows <= f * a and s < cols <= f * b) or probs.dtype != np.float32:
        return None
    area = rows * cols
    stride = area + 1  # key of a change: mask * stride + flat position; mask n's end at n * stride + area
    if n == 0:
        return np.zeros(0, np.uint32), np.zeros(1, np.int64)
    umax, vmax = rows - 1 - s, cols - 1 - s                   # last un-shifted row and column read
    ni, nj = umax // f + 1, vmax // f + 1                     # cell rows and columns read
    # which corner samples lie above, replicate-padded to rows 0..ni and columns 0..nj; computed
    # in the memory order of ``probs`` (a map stored column by column, as the callers' transposed
    # views are, is read as its transpose: twice as fast as a strided read), so that ``code`` may
    # be a transposed view; every later step reads it by index or by its own steps
    swap = probs.strides[1] < probs.strides[2]
    shape = (ni + 1, nj + 1)
    if swap:
        probs_m, shape = probs.transpose(0, 2, 1), shape[::-1]
    else:
        probs_m = probs
    high = np.empty((n, *shape), dtype=bool)
    used = (min(shape[0], probs_m.shape[1]), min(shape[1], probs_m.shape[2]))
    np.greater(probs_m[:, : used[0], : used[1]], threshold, out=high[:, : used[0], : used[1]])
    if used[0] < shape[0]:
        high[:, -1] = high[:, -2]
    if used[1] < shape[1]:
        high[:, :, -1] = high[:, :, -2]
    high = high.view(np.uint8)
    # per cell the number of corners above: 0 wholly below, 4 wholly above, else a boundary cell
    code = high[:, :-1, :-1] + high[:, 1:, :-1]
    code += high[:, :-1, 1:]
    code += high[:, 1:, 1:]
    boundary = (code - np.uint8(1)) < 3                        # 1, 2, 3 (0 - 1 wraps to 255)
    if swap:  # the cells listed in (mask, row, column) order, so that the keys come in long sorted runs
        code, boundary = code.transpose(0, 2, 1), np.ascontiguousarray(boundary.transpose(0, 2, 1))
    bn, bi, bj = _nonzero3(boundary)
    cells = _Cells(probs, code, weights=np.arange(f, dtype=np.float32) / np.float32(f), threshold=threshold)

    keys = [np.arange(n, dtype=np.int64) * stride, np.arange(n, dtype=np.int64) * stride + area]
    # (two constant cells side by side always have the same value: they share two corners, so a
    # change next to a constant cell lies in or at the edge of a boundary cell)

    # (a) inside and at the edges of boundary cells
    if bn.size:
        keys.extend(_boundary_changes(cells, bn, bi, bj, f, s, umax, vmax, rows, cols, stride))

    # (b) the first pixel of each row against the last pixel of the row before
    u = np.arange(umax + 1)
    first = cells.pixels(u, 0, f)                               # [N, umax + 1]
    last = cells.pixels(u, vmax, f)
    line_u = np.maximum(np.arange(rows) - s, 0)
    starts, ends = first[:, line_u], last[:, line_u]
    previous = np.zeros_like(starts)
    previous[:, 1:] = ends[:, :-1]
    where = np.flatnonzero(starts != previous)
    keys.append(where // rows * stride + where % rows * cols)

    ordered = np.sort(np.concatenate(keys), kind="stable")   # timsort merges the nearly sorted parts
    # mask n's runs: the gaps between its keys, from its start key to its end key
    bounds = np.searchsorted(ordered, np.arange(n + 1, dtype=np.int64) * stride)
    gaps = np.diff(ordered)
    inside = np.ones(gaps.size, dtype=bool)
    inside[bounds[1:-1] - 1] = False                            # end of mask n -> start of mask n + 1
    counts = gaps[inside].astype(np.uint32)
    per_mask = np.diff(bounds) - 1
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_mask, out=offsets[1:])
    return counts, offsets


def _nonzero3(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 indices of the True entries of a 3-d bool array."""
    shape = mask.shape
    where = np.flatnonzero(mask)
    if mask.size < 2 ** 31:  # int32 division is about twice as fast
        where = where.astype(np.int32)
    plane = shape[1] * shape[2]
    n, rest = np.divmod(where, plane)
    i, j = np.divmod(rest, shape[2])
    return n.astype(np.int64), i.astype(np.int64), j.astype(np.int64)


class _Cells:
    """The low-resolution map, its cell codes and the in-cell formula, read by flat index.

    Args:
        probs: float32 [N, a, b]; code: uint8 [N, ni, nj] corners above per cell (0 and 4:
        constant); weights: float32 [f] in-cell weights r / f; threshold: as above.
    """

    def __init__(self, probs: np.ndarray, code: np.ndarray, weights: np.ndarray, threshold: float) -> None:
        self.flat, self.steps = _flat_view(probs)
        self.rows, self.cols = probs.shape[1], probs.shape[2]
        self.code = code
        self.code_flat, self.code_steps = _flat_view(code)
        self.weights, self.threshold = weights, threshold

    def offsets(self, n: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
        """int64 [K] each: the flat index of the top-left corner of the K cells ``(n, i, j)`` and
        the steps to the row below and the column to the right (0 at the far edges: the
        replicate padding)."""
        sn, si, sj = self.steps
        top_left = n * sn + i * si + j * sj
        return top_left, np.where(i + 1 < self.rows, si, 0), np.where(j + 1 < self.cols, sj, 0)

    def corners(self, n: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 [K] each: the samples at the four corners of the K cells ``(n, i, j)``
        (top-left, top-right, bottom-left, bottom-right), replicate-padded at the far edges."""
        return self.corners_at(*self.offsets(n, i, j))

    def corners_at(self, top_left: np.ndarray, down: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, ...]:
        """:meth:`corners` from :meth:`offsets`' result."""
        take = self.flat.take
        return take(top_left), take(top_left + right), take(top_left + down), take(top_left + down + right)

    def pixels(self, u: np.ndarray, v: int, f: int) -> np.ndarray:
        """bool [N, len(u)]: un-shifted pixels (u, v) of every mask (a constant cell's class, else
        the formula)."""
        i, r = u // f, u % f
        j, c = v // f, v % f
        code = np.ascontiguousarray(self.code[:, :, j][:, i])       # [N, U]
        value = code == 4
        where = np.flatnonzero((code - np.uint8(1)) < 3)             # in boundary cells
        if where.size:
            n, at = where // u.size, where % u.size
            a, b, c_, d = self.corners(n, i[at], np.full(at.shape, j))
            top = a + (b - a) * self.weights[c]
            bottom = c_ + (d - c_) * self.weights[c]
            value.reshape(-1)[where] = top + (bottom - top) * self.weights[r[at]] > self.threshold
        return value


def _flat_view(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """A 1-d view of ``array``'s memory (a copy if it is not a permuted contiguous array) and the
    element steps of its axes."""
    order = np.argsort(array.strides)[::-1]
    permuted = array.transpose(order)
    if not permuted.flags.c_contiguous:
        array = np.ascontiguousarray(array)
        return array.reshape(-1), tuple(st // array.itemsize for st in array.strides)
    return permuted.reshape(-1), tuple(st // array.itemsize for st in array.strides)


def _boundary_changes(cells: _Cells, bn: np.ndarray, bi: np.ndarray, bj: np.ndarray, f: int, s: int,
                      umax: int, vmax: int, rows: int, cols: int, stride: int) -> list[np.ndarray]:
    """Keys of the changes at the K boundary cells ``(bn, bi, bj)``: inside each cell row, at its
    left edge (against the left neighbour's last column) and at its right edge when the right
    neighbour is constant (a boundary neighbour reports that edge as its left one).

    Each cell row is one integer: bit 0 the left neighbour's last pixel, bits 1..f the row's own
    pixels, bit f + 1 the right neighbour's first; bit c of ``word ^ (word >> 1)`` is then a
    change between in-cell columns c - 1 and c. The cell index K is the last axis of every array,
    so that each numpy loop runs over K elements rather than over f.
    """
    nj = cells.code.shape[2]
    w = cells.weights[:, None]                                   # [f, 1]
    threshold = cells.threshold
    sj = cells.steps[2]
    take = cells.flat.take
    top_left, down, right = cells.offsets(bn, bi, bj)
    a, b, c, d = cells.corners_at(top_left, down, right)
    top = a + (b - a) * w                                        # [f cols, K]
    bottom = c + (d - c) * w
    rise = bottom - top
    word = np.zeros((f, bn.size), dtype=np.uint16)               # [f rows, K]
    for column in range(f):
        own = top[column] + rise[column] * w > threshold         # [f rows, K]
        word |= own.astype(np.uint16) << (column + 1)
    # the left neighbour's last column: its class when constant, else its formula with that
    # cell's own arithmetic (its right corners are this cell's left ones)
    cn, ci, cj = cells.code_steps
    code_at = bn * cn + bi * ci + bj * cj
    left_code = cells.code_flat.take(np.where(bj >= 1, code_at - cj, code_at))
    back = np.where(bj >= 1, sj, 0)
    last = cells.weights[f - 1]
    left_top = (left_a := take(top_left - back)) + (a - left_a) * last
    left_bottom = (left_c := take(top_left - back + down)) + (c - left_c) * last
    left = left_top + (left_bottom - left_top) * w > threshold   # [f rows, K]
    left |= left_code == 4                                       # a wholly-above neighbour
    left &= left_code != 0                                       # a wholly-below one
    word |= left
    # the right neighbour's first column, used only where that neighbour is constant
    has_right = bj + 1 < nj
    right_code = cells.code_flat.take(np.where(has_right, code_at + cj, code_at))
    word |= (right_code == 4).astype(np.uint16) << (f + 1)
    # which changes each cell reports (bit c: in-cell column c): the columns up to the last one
    # read, the left edge (bit 0) from the second cell on, the right edge (bit f) only before a
    # constant cell
    limit = np.minimum(vmax - f * bj, f)                          # >= 0
    allowed = ((np.left_shift(2, limit) - 1) & ((1 << f) - 2)).astype(np.uint16)
    allowed |= (bj >= 1).astype(np.uint16)
    allowed |= ((limit >= f) & has_right & ((right_code == 0) | (right_code == 4))).astype(np.uint16) << f
    change = (word ^ (word >> 1)) & allowed                      # [f rows, K]
    ni = cells.code.shape[1]
    read = umax + 1 - f * (ni - 1)                                # rows of the last cell row read
    if read < f:
        change[read:, bi == ni - 1] = 0
    # key of in-cell column 0 of each cell row; then one key per set bit, bit c at column c
    row_key = bn * stride + (f * bj + s) + (f * bi + s) * cols    # [K]: the cell's first row
    row_key = (row_key + (np.arange(f, dtype=np.int64) * cols)[:, None]).reshape(-1)  # [f rows · K]
    where = np.flatnonzero(change != 0)  # (numpy finds the True entries of a bool array ~5× faster)
    keys = _bit_keys(change.reshape(-1)[where], row_key[where], f + 1)
    # rows 0..s-1 of the mask repeat un-shifted row 0 (cell row 0, in-cell row 0: where < K)
    top = where[: np.searchsorted(where, bn.size)]
    top = top[bi[top] == 0]
    if top.size:
        first = _bit_keys(change.reshape(-1)[top], row_key[top], f + 1)
        keys.extend(k - (s - line) * cols for k in first for line in range(s))
    return keys


def _bit_keys(bits: np.ndarray, base: np.ndarray, width: int) -> list[np.ndarray]:
    """``base[m] + c`` for every set bit c < ``width`` of ``bits[m]`` (unordered)."""
    out = []
    for c in range(width):
        sel = np.flatnonzero((bits & np.uint16(1 << c)) != 0)
        out.append(base[sel] + c if c else base[sel])
    return out
