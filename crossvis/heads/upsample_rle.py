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
formula and summation order of :func:`~crossvis.heads.upsample.aligned_bilinear_above`. Along one
row of the mask, the value changes

* between two constant cells of different value (found on the cell grid, the same for all ``f``
  mask rows of a cell row),
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

from typing import Optional

import numpy as np

__all__ = ["aligned_bilinear_runs"]


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
            loops; measured 1.24× faster on two cores for 86 masks: most of the time holds the GIL).

    Returns:
        ``(counts, offsets)``: uint32 [total] run lengths of all N masks one after another, and
        int64 [N + 1] where mask ``n``'s runs are ``counts[offsets[n]:offsets[n + 1]]``; or None
        when ``size`` is not inside the upsampled map (callers then paste and encode).
    """
    probs = np.asarray(probs)
    groups = max(1, min(int(threads), probs.shape[0] // MIN_MASKS_PER_THREAD))
    if groups == 1:
        return _runs(probs, factor, threshold, size)
    import threading

    bounds = [round(g * probs.shape[0] / groups) for g in range(groups + 1)]
    parts: list = [None] * groups

    def run(g: int) -> None:
        parts[g] = _runs(probs[bounds[g]:bounds[g + 1]], factor, threshold, size)

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
    # which corner samples lie above, replicate-padded to rows 0..ni and columns 0..nj
    # (written row-major whatever the layout of ``probs``: every later pass then runs over rows)
    high = np.greater(probs[:, : min(ni + 1, a), : min(nj + 1, b)], threshold, order="C")
    if ni + 1 > a:
        high = np.concatenate([high, high[:, -1:]], axis=1)
    if nj + 1 > b:
        high = np.concatenate([high, high[:, :, -1:]], axis=2)
    high = high.view(np.uint8)
    # per cell the number of corners above: 0 wholly below, 4 wholly above, else a boundary cell
    code = high[:, :-1, :-1] + high[:, 1:, :-1]
    code += high[:, :-1, 1:]
    code += high[:, 1:, 1:]
    boundary = (code - np.uint8(1)) < 3                        # 1, 2, 3 (0 - 1 wraps to 255)
    cells = _Cells(probs, code, weights=np.arange(f, dtype=np.float32) / np.float32(f), threshold=threshold)

    # lines of the mask per cell row i: x in [first_line[i], end_line[i])
    cell_rows = np.arange(ni)
    first_line = np.where(cell_rows == 0, 0, s + f * cell_rows)
    end_line = np.minimum(s + f * (cell_rows + 1), rows)
    keys = [np.arange(n, dtype=np.int64) * stride, np.arange(n, dtype=np.int64) * stride + area]

    # (a) between two constant cells of different value (codes 0 and 4: x ^ y == 4 only for those)
    edge = (code[:, :, 1:] ^ code[:, :, :-1]) == 4             # [N, ni, nj - 1]: at column f·(j+1)
    en, ei, ej = _nonzero3(edge)
    if en.size:
        lines = end_line[ei] - first_line[ei]
        base = en * stride + (f * (ej + 1) + s) + first_line[ei] * cols
        keys.append(_spread(base, lines, cols))

    # (b) inside and at the edges of boundary cells
    bn, bi, bj = _nonzero3(boundary)
    if bn.size:
        keys.extend(_boundary_changes(cells, bn, bi, bj, f, s, umax, vmax, rows, cols, stride))

    # (c) the first pixel of each row against the last pixel of the row before
    u = np.arange(umax + 1)
    first = cells.pixels(u, 0, f)                               # [N, umax + 1]
    last = cells.pixels(u, vmax, f)
    line_u = np.maximum(np.arange(rows) - s, 0)
    starts, ends = first[:, line_u], last[:, line_u]
    previous = np.zeros_like(starts)
    previous[:, 1:] = ends[:, :-1]
    where = np.flatnonzero(starts != previous)
    keys.append(where // rows * stride + where % rows * cols)

    ordered = np.sort(np.concatenate(keys))
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
    """int64 indices of the True entries of a 3-d bool array (sparse ones: words of 8 bytes first)."""
    shape = mask.shape
    flat = np.ascontiguousarray(mask).reshape(-1)
    if flat.size % 8 == 0 and flat.size:
        words = np.flatnonzero(flat.view(np.uint64))
        hits = np.flatnonzero(flat.view(np.uint8).reshape(-1, 8)[words])
        where = words[hits >> 3] * 8 + (hits & 7)
    else:
        where = np.flatnonzero(flat)
    plane = shape[1] * shape[2]
    return where // plane, (where % plane) // shape[2], where % shape[2]


def _spread(base: np.ndarray, lines: np.ndarray, cols: int) -> np.ndarray:
    """``base[k] + m * cols`` for m in [0, lines[k]), all k: a change repeated on consecutive rows."""
    total = int(lines.sum())
    repeat = np.repeat(np.arange(base.size), lines)
    step = np.arange(total) - np.repeat(np.cumsum(lines) - lines, lines)
    return base[repeat] + step * cols


class _Cells:
    """The low-resolution map, its cell codes and the in-cell formula, read by flat index.

    Args:
        probs: float32 [N, a, b]; code: uint8 [N, ni, nj] corners above per cell (0 and 4:
        constant); weights: float32 [f] in-cell weights r / f; threshold: as above.
    """

    def __init__(self, probs: np.ndarray, code: np.ndarray, weights: np.ndarray, threshold: float) -> None:
        self.flat, self.steps = _flat_view(probs)
        self.rows, self.cols = probs.shape[1], probs.shape[2]
        self.code, self.code_flat = code, code.reshape(-1)
        self.weights, self.threshold = weights, threshold

    def corners(self, n: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
        """float32 [K] each: the samples at the four corners of the K cells ``(n, i, j)``
        (top-left, top-right, bottom-left, bottom-right), replicate-padded at the far edges."""
        sn, si, sj = self.steps
        top_left = n * sn + i * si + j * sj
        down = np.where(i + 1 < self.rows, si, 0)
        right = np.where(j + 1 < self.cols, sj, 0)
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
    sn, si, sj = cells.steps
    take = cells.flat.take
    top_left = bn * sn + bi * si + bj * sj
    down = np.where(bi + 1 < cells.rows, si, 0)                  # replicate padding at the far edges
    a, c = take(top_left), take(top_left + down)
    right = np.where(bj + 1 < cells.cols, sj, 0)
    b, d = take(top_left + right), take(top_left + down + right)
    top = a + (b - a) * w                                        # [f cols, K]
    bottom = c + (d - c) * w
    rise = bottom - top
    word = np.zeros((f, bn.size), dtype=np.uint16)               # [f rows, K]
    for column in range(f):
        own = top[column] + rise[column] * w > threshold         # [f rows, K]
        word |= own.astype(np.uint16) << (column + 1)
    # the left neighbour's last column: its class when constant, else its formula with that
    # cell's own arithmetic (its right corners are this cell's left ones)
    code_at = (bn * cells.code.shape[1] + bi) * nj + bj
    left_code = cells.code_flat.take(np.maximum(code_at - 1, 0))
    back = np.where(bj >= 1, sj, 0)
    last = cells.weights[f - 1]
    left_top = (left_a := take(top_left - back)) + (a - left_a) * last
    left_bottom = (left_c := take(top_left - back + down)) + (c - left_c) * last
    left = left_top + (left_bottom - left_top) * w > threshold   # [f rows, K]
    left_constant = (left_code == 0) | (left_code == 4)
    word |= np.where(left_constant, left_code == 4, left)
    # the right neighbour's first column, used only where that neighbour is constant
    has_right = bj + 1 < nj
    right_code = cells.code_flat.take(np.where(has_right, code_at + 1, code_at))
    word |= (right_code == 4).astype(np.uint16) << (f + 1)
    # which changes each cell reports (bit c: in-cell column c): the columns up to the last one
    # read, the left edge (bit 0) from the second cell on, the right edge (bit f) only before a
    # constant cell
    limit = np.minimum(vmax - f * bj, f)                          # >= 0
    allowed = ((np.left_shift(2, limit) - 1) & ((1 << f) - 2)).astype(np.uint16)
    allowed |= (bj >= 1).astype(np.uint16)
    allowed |= ((limit >= f) & has_right & ((right_code == 0) | (right_code == 4))).astype(np.uint16) << f
    change = (word ^ (word >> 1)) & allowed                      # [f rows, K]
    where = np.flatnonzero(change)
    r, k = where // bn.size, where % bn.size
    u = f * bi[k] + r
    inside = u <= umax
    k, u, bits = k[inside], u[inside], change.reshape(-1)[where[inside]]
    base = bn[k] * stride + (f * bj[k] + s) + (u + s) * cols      # [M]
    # one key per set bit: bit positions from a table of the 2^(f+1) values
    table = np.arange(1 << (f + 1))
    ones = np.array([bin(v).count("1") for v in table])
    positions = np.array([c for v in table for c in range(f + 1) if v >> c & 1], dtype=np.int64)
    many = ones[bits]
    hit = np.repeat(np.arange(bits.size), many)
    first = np.repeat((np.cumsum(ones) - ones)[bits] - (np.cumsum(many) - many), many)
    key = base[hit] + positions[first + np.arange(hit.size)]
    zero = u[hit] == 0
    keys = [key]
    if zero.any():                                               # rows 0..s-1 repeat un-shifted row 0
        keys.append((key[zero][:, None] - s * cols + np.arange(s) * cols).reshape(-1))
    return keys
