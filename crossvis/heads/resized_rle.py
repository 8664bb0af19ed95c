"""Run lengths of masks upsampled and then resized to the frame, computed without making them.

When the frame was resized for the network (a 720×1280 YouTube-VIS frame runs at 360×640), a
CondInst mask is made in two interpolations (AdelaiDet ``CondInst.postprocess``):
``aligned_bilinear(probs, 4)`` cropped to the network's image, then ``F.interpolate(...,
size=frame, mode="bilinear", align_corners=False)``, thresholded. Made like that, 83 masks of a
720p frame write 77M float pixels twice and take ~130 ms on 2 cores, a fifth of the network;
read here, 17–19 ms (``benchmarks/README.md``, "Frames the model resizes").

Both interpolations are separable and convex. Along each axis a frame pixel mixes two
neighbouring crop pixels, each of which mixes two neighbouring low-resolution samples, so a frame
pixel depends on a *window* of 1–3 consecutive samples per axis (:func:`axis_windows`; a tap of
weight 0 is left out), and its value lies between the smallest and the largest sample of its 2-d
window. Frame rows whose
windows are the same form a *band*. For one band of rows and one mask:

* the low-resolution columns where all samples of the band's row window lie above the threshold
  (by a margin) form intervals; a frame column whose column window lies inside one is True in
  every row of the band, and likewise False inside an interval of samples all below it;
* the frame columns in between (*uncertain* segments, where the mask boundary crosses the band)
  are interpolated in float32 with the source positions and weights ``F.interpolate`` computes:
  the column stages once per segment pixel on each of the band's window rows, then each row of
  the band weighs those with its own row weights (:func:`window_weights`: both stages of one
  axis as one weight per window sample).

The runs then change only inside or at the edges of uncertain segments, where two known segments
of different value meet, and at the start of each row against the end of the row before. A pixel
can differ from thresholding the two ``F.interpolate`` calls only where its value is within float
rounding of the threshold (a tie): the same weights, summed in another order.

Everything here is numpy on the CPU, all masks at once.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from crossvis.heads.upsample_rle import runs_in_threads

__all__ = ["resized_runs", "AxisTaps", "aligned_taps", "resize_taps", "axis_windows", "window_weights"]

#: samples within this of the threshold count as neither wholly above nor below it: bilinear
#: weights are convex, and float rounding moves a value by ~1e-7
MARGIN = 1e-5


class AxisTaps(NamedTuple):
    """One axis of a linear interpolation: output ``o`` is ``(1 - w[o])·x[i0[o]] + w[o]·x[i1[o]]``.

    ``i0`` and ``i1`` are int64 [O], nondecreasing, with ``i0 ≤ i1 ≤ i0 + 1``; ``w`` is float32 [O].
    """

    i0: np.ndarray
    i1: np.ndarray
    w: np.ndarray


def aligned_taps(length: int, factor: int, samples: int) -> AxisTaps:
    """The first ``length`` outputs of CondInst's ``aligned_bilinear`` along one axis of ``samples`` samples.

    Output ``x`` is the un-shifted upsample's ``u = max(x - factor // 2, 0)``, which interpolates
    samples ``u // f`` and the next (replicated past the last) with weight ``(u % f) / f``
    (``align_corners=True`` on the map padded by one sample, see
    :func:`~crossvis.heads.upsample.aligned_bilinear`).
    """
    f = int(factor)
    u = np.maximum(np.arange(length, dtype=np.int64) - f // 2, 0)
    i0 = np.minimum(u // f, samples - 1)
    return _taps(i0, (u % f).astype(np.float32) / np.float32(f), samples)


def resize_taps(out_length: int, in_length: int) -> AxisTaps:
    """``F.interpolate(mode="bilinear", align_corners=False, size=...)`` along one axis, as torch computes it.

    The source position of output ``o`` is ``(o + 0.5)·(in / out) − 0.5`` in float32, clamped at 0;
    it interpolates samples ``⌊position⌋`` and the next (the last sample repeated at the end).
    """
    scale = np.float32(in_length) / np.float32(out_length)
    position = (np.arange(out_length, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    position = np.maximum(position, np.float32(0.0))
    i0 = np.minimum(position.astype(np.int64), in_length - 1)
    weight = np.clip(position - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return _taps(i0, weight.astype(np.float32), in_length)


def _taps(i0: np.ndarray, weight: np.ndarray, samples: int) -> AxisTaps:
    """The taps with ``i1 = i0 + 1`` (the last sample repeated at the end), and ``i1 = i0`` where
    the weight is 0: that output is the sample itself, and its window one sample narrower."""
    i1 = np.where(weight > 0, np.minimum(i0 + 1, samples - 1), i0)
    return AxisTaps(i0, i1, weight)


def axis_windows(stage1: AxisTaps, stage2: AxisTaps) -> tuple[np.ndarray, np.ndarray]:
    """int64 [O] ``first``, ``last``: the low-resolution samples output ``o`` of ``stage2 ∘ stage1``
    reads are ``first[o]..last[o]`` (nondecreasing; at most 3 of them)."""
    return stage1.i0[stage2.i0], stage1.i1[stage2.i1]


def window_weights(stage1: AxisTaps, stage2: AxisTaps) -> np.ndarray:
    """float32 [O, 3]: output ``o`` of ``stage2 ∘ stage1`` is ``Σ_d weights[o, d]·x[first[o] + d]``
    (``first`` of :func:`axis_windows`; the products of the two stages' weights, summed per sample)."""
    first, _ = axis_windows(stage1, stage2)
    out = np.zeros((first.size, 3), dtype=np.float32)
    outputs = np.arange(first.size)
    for j, wj in ((stage2.i0, np.float32(1) - stage2.w), (stage2.i1, stage2.w)):
        for i, wi in ((stage1.i0[j], np.float32(1) - stage1.w[j]), (stage1.i1[j], stage1.w[j])):
            np.add.at(out, (outputs, i - first), wj * wi)
    return out


class _Bands(NamedTuple):
    """Runs of consecutive outputs along one axis with the same window: [start, stop), window [first, last]."""

    start: np.ndarray
    stop: np.ndarray
    first: np.ndarray
    last: np.ndarray


def _bands(first: np.ndarray, last: np.ndarray) -> _Bands:
    new = np.flatnonzero((first[1:] != first[:-1]) | (last[1:] != last[:-1])) + 1
    start = np.concatenate(([0], new))
    stop = np.concatenate((new, [first.size]))
    return _Bands(start, stop, first[start], last[start])


def resized_runs(probs: np.ndarray, factor: int, threshold: float, image_size: tuple[int, int],
                 size: tuple[int, int], threads: int = 1) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Run lengths of ``interpolate(aligned_bilinear(probs, factor)[:, :, :h, :w], size) > threshold``, row by row.

    The runs alternate between False and True starting with False (a first run of length 0 when
    a mask starts True), over each mask flattened row-major: for the COCO column-major RLE, pass
    the transposed maps and sizes (rows = the frame's columns), as
    ``CondInstPostProcessor._mask_runs`` does.

    Args:
        probs: float32 [N, a, b] low-resolution probabilities (any strides).
        factor: the integer upsampling factor f ≥ 1 of ``aligned_bilinear``.
        threshold: pixels strictly above it are True.
        image_size: (h, w), the crop of the upsampled map (the resized frame inside the padded
            input), h ≤ f·a and w ≤ f·b.
        size: (H, W), the size the crop is resized to (the frame).
        threads: split the masks over up to this many threads (numpy releases the GIL in its
            larger passes; whether that pays depends on the machine, so the pipeline measures it).

    Returns:
        ``(counts, offsets)``: uint32 [total] run lengths of all N masks one after another and
        int64 [N + 1] where mask ``n``'s runs are ``counts[offsets[n]:offsets[n + 1]]``; or None
        when ``image_size`` is not inside the upsampled map or ``probs`` is not float32 (callers
        then paste and encode).
    """
    probs = np.asarray(probs)
    f = int(factor)
    (h, w), (rows, cols) = (int(v) for v in image_size), (int(v) for v in size)
    if probs.ndim != 3 or probs.dtype != np.float32 or f < 1:
        return None
    n, a, b = probs.shape
    if not (0 < h <= f * a and 0 < w <= f * b) or rows < 1 or cols < 1:
        return None
    return runs_in_threads(lambda part: _runs(part, f, threshold, (h, w), (rows, cols)), probs, threads)


def _runs(probs: np.ndarray, f: int, threshold: float, image_size: tuple[int, int],
          size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resized_runs` on the calling thread (arguments checked)."""
    (h, w), (rows, cols) = image_size, size
    n, a, b = probs.shape
    if n == 0:
        return np.zeros(0, np.uint32), np.zeros(1, np.int64)
    row1, col1 = aligned_taps(h, f, a), aligned_taps(w, f, b)
    row2, col2 = resize_taps(rows, h), resize_taps(cols, w)
    band = _bands(*axis_windows(row1, row2))
    col_first, col_last = axis_windows(col1, col2)
    # the maps replicate-padded by two samples at the far edges, so that the interpolation's reads
    # need no clamping (a sample past a window's last has weight 0); one copy, in any memory order
    padded = np.empty((n, a + 2, b + 2), dtype=np.float32)
    padded[:, :a, :b] = probs
    padded[:, a:, :b] = padded[:, a - 1:a, :b]
    padded[:, :, b:] = padded[:, :, b - 1:b]
    probs = padded[:, :a, :b]
    t = np.float32(threshold)

    # per (mask, row band) "line": which low-resolution columns have their whole row window above
    # (below) the threshold, [n, bands, b]; the window has 1–3 rows: first, first + 1, last
    middle = np.minimum(band.first + 1, band.last)
    segments = []
    for value, known in ((1, probs > t + np.float32(MARGIN)), (0, probs < t - np.float32(MARGIN))):
        line = known[:, band.first] & known[:, middle] & known[:, band.last]
        # its intervals [p, q] of consecutive columns, and the frame columns whose windows lie inside
        edged = np.zeros((n * band.start.size, b + 2), dtype=bool)
        edged[:, 1:-1] = line.reshape(-1, b)
        steps = np.flatnonzero(edged[:, 1:] != edged[:, :-1])         # alternately an interval's start, its end
        g, p = np.divmod(steps[0::2], b + 1)
        q = steps[1::2] % (b + 1) - 1
        c0 = np.searchsorted(col_first, p, side="left")
        c1 = np.searchsorted(col_last, q, side="right")
        some = c0 < c1
        segments.append((g[some], c0[some], c1[some], np.full(int(some.sum()), value, dtype=np.int8)))
    g, c0, c1, value = (np.concatenate(parts) for parts in zip(*segments))
    order = np.lexsort((c0, g))
    g, c0, c1, value = g[order], c0[order], c1[order], value[order]
    # the gaps between known segments of a line (and before the first, after the last) are uncertain
    lines = n * band.start.size
    line_start = np.searchsorted(g, np.arange(lines + 1))
    prev_end = np.zeros(c0.size, dtype=np.int64)
    same = np.ones(c0.size, dtype=bool)
    same[line_start[:-1][line_start[:-1] < c0.size]] = False           # first segment of its line
    prev_end[same] = c1[np.flatnonzero(same) - 1]
    gap = c0 > prev_end
    last_of_line = line_start[1:] - 1
    has = line_start[1:] > line_start[:-1]
    tail_end = np.zeros(lines, dtype=np.int64)
    tail_end[has] = c1[last_of_line[has]]
    tail = tail_end < cols
    u_g = np.concatenate((g[gap], np.flatnonzero(tail)))
    u_c0 = np.concatenate((prev_end[gap], tail_end[tail]))
    u_c1 = np.concatenate((c0[gap], np.full(int(tail.sum()), cols, dtype=np.int64)))

    keys = _Keys(n, rows, cols)
    # (a) two known segments of different value side by side: a change at the second's start
    meet = same & ~gap
    meet[meet] = value[meet] != value[np.flatnonzero(meet) - 1]
    keys.in_band(g[meet], c0[meet], band)
    # known values at the row edges (for (c)): class of the line's first / last segment when known
    first_known = np.full(lines, -1, dtype=np.int8)
    starts_known = has.copy()
    starts_known[has] = c0[line_start[:-1][has]] == 0
    first_known[starts_known] = value[line_start[:-1][starts_known]]
    last_known = np.full(lines, -1, dtype=np.int8)
    last_known[has & ~tail] = value[last_of_line[has & ~tail]]

    # (b) the uncertain segments, row by row: their pixels, and the changes in and at their edges
    edge_first = np.zeros(n * rows, dtype=bool)                      # value of each row's first pixel
    edge_last = np.zeros(n * rows, dtype=bool)
    if u_g.size:
        left = _neighbour_value(u_g, u_c0, g, c1, value)              # the segment ending where it starts
        right = _neighbour_value(u_g, u_c1, g, c0, value)             # the segment starting where it ends
        _uncertain(padded, t, u_g, u_c0, u_c1, left, right, band, (row1, row2, col1, col2), keys,
                   edge_first, edge_last, rows, cols)
    # (c) each row's first pixel against the previous row's last (the runs go on across rows)
    row_line = np.repeat(np.arange(lines).reshape(n, -1), band.stop - band.start, axis=1).reshape(-1)  # [n · rows]
    known_first = first_known[row_line]
    known_last = last_known[row_line]
    firsts = np.where(known_first >= 0, known_first == 1, edge_first)
    lasts = np.where(known_last >= 0, known_last == 1, edge_last)
    before = np.zeros_like(firsts)
    before.reshape(n, rows)[:, 1:] = lasts.reshape(n, rows)[:, :-1]
    where = np.flatnonzero(firsts != before)
    keys.add(where // rows, where % rows * cols)
    return keys.runs()


def _neighbour_value(u_g: np.ndarray, at: np.ndarray, g: np.ndarray, edge: np.ndarray,
                     value: np.ndarray) -> np.ndarray:
    """int8: the value of the known segment of line ``u_g`` whose ``edge`` (its end or its start
    column) is ``at``; -1 where there is none (the row's edge). The known segments tile each line
    with the uncertain ones and are sorted by line and column, so their keys are sorted."""
    out = np.full(u_g.size, -1, dtype=np.int8)
    if g.size == 0:
        return out
    key_known, key = g * (1 << 32) + edge, u_g * (1 << 32) + at
    found = np.minimum(np.searchsorted(key_known, key), g.size - 1)
    ok = key_known[found] == key
    out[ok] = value[found[ok]]
    return out


class _Keys:
    """Change positions collected as ``mask · (H·W + 1) + flat position`` keys; :meth:`runs` reads the gaps."""

    def __init__(self, n: int, rows: int, cols: int) -> None:
        self.n, self.cols = n, cols
        self.area = rows * cols
        self.stride = self.area + 1
        masks = np.arange(n, dtype=np.int64) * self.stride
        self.parts = [masks, masks + self.area]                       # each mask's start and end

    def add(self, mask: np.ndarray, position: np.ndarray) -> None:
        self.parts.append(np.asarray(mask, dtype=np.int64) * self.stride + position)

    def in_band(self, line: np.ndarray, column: np.ndarray, band: _Bands) -> None:
        """A change at ``column`` in every row of the band of each ``line``."""
        mask, which = np.divmod(line, band.start.size)
        count = band.stop[which] - band.start[which]
        row = np.repeat(band.start[which], count) + _ranges(count)
        self.add(np.repeat(mask, count), row * self.cols + np.repeat(column, count))

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        # the parts are sorted runs of keys, or nearly: timsort ("stable") merges them, 9× faster
        # than quicksort here (60k keys of a 720p frame's 87 masks: 0.25 against 2.3 ms)
        ordered = np.sort(np.concatenate(self.parts), kind="stable")
        bounds = np.searchsorted(ordered, np.arange(self.n + 1, dtype=np.int64) * self.stride)
        gaps = np.diff(ordered)
        inside = np.ones(gaps.size, dtype=bool)
        inside[bounds[1:-1] - 1] = False                                # end of mask n -> start of n + 1
        counts = gaps[inside].astype(np.uint32)
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.diff(bounds) - 1, out=offsets[1:])
        return counts, offsets


def _ranges(count: np.ndarray) -> np.ndarray:
    """int64 [sum(count)]: 0..count[k]-1 for each k, one after another."""
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(count)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - count, count)


def _uncertain(padded: np.ndarray, t: np.float32, u_g: np.ndarray, u_c0: np.ndarray, u_c1: np.ndarray,
               left: np.ndarray, right: np.ndarray, band: _Bands, taps: tuple, keys: _Keys,
               edge_first: np.ndarray, edge_last: np.ndarray, rows: int, cols: int) -> None:
    """Interpolate the uncertain segments row by row and add their changes to ``keys``
    (``padded``: float32 [N, a + 2, b + 2], the maps replicate-padded at the far edges).

    The rows of a band read the same (1–3) low-resolution rows, so the column stages run once per
    segment pixel and those rows (``along``); each row of the band then weighs them with its own
    row weights.
    """
    row1, row2, col1, col2 = taps
    n, a, b = padded.shape[0], padded.shape[1] - 2, padded.shape[2] - 2
    col_first, _ = axis_windows(col1, col2)
    # [3, O], so that each tap's weights are gathered from one contiguous row
    row_weights = np.ascontiguousarray(window_weights(row1, row2).T)
    col_weights = np.ascontiguousarray(window_weights(col1, col2).T)
    # the segments, tallest band first: the segments with a k-th row are then a prefix, and so
    # are their pixels
    count = band.stop[u_g % band.start.size] - band.start[u_g % band.start.size]
    order = np.argsort(-count, kind="stable")
    u_g, u_c0, u_c1, left, right, count = u_g[order], u_c0[order], u_c1[order], left[order], right[order], count[order]
    mask, which = np.divmod(u_g, band.start.size)
    # the segments' pixels: [P] frame column
    pixels = u_c1 - u_c0
    starts = np.cumsum(pixels) - pixels                                # each segment's first pixel
    c = np.arange(int(pixels.sum()), dtype=np.int64) - np.repeat(starts - u_c0, pixels)
    # the column stages on each of the band's window rows, float32 [3, P]: the 3×3 samples from
    # the window's first row and column (from the padded maps: no read needs clamping) by the
    # column weights
    flat = padded.reshape(-1)
    pitch = b + 2
    corner = np.repeat(mask * ((a + 2) * pitch) + band.first[which] * pitch, pixels) + col_first[c]
    # consecutive pixels of a segment with the same column window read the same samples: gather
    # them once per run of equal corners and repeat them
    new_run = np.empty(corner.size, dtype=bool)
    new_run[0] = True
    np.not_equal(corner[1:], corner[:-1], out=new_run[1:])
    run_start = np.flatnonzero(new_run)
    run_length = np.diff(np.append(run_start, corner.size))
    samples = flat[(np.arange(3)[:, None] * pitch + np.arange(3)).reshape(9, 1) + corner[run_start]]   # [9, runs]
    weights = [col_weights[dc][c] for dc in range(3)]
    along = np.empty((3, c.size), dtype=np.float32)                    # [3, P]
    for dr in range(3):
        np.multiply(np.repeat(samples[3 * dr], run_length), weights[0], out=along[dr])
        for dc in (1, 2):
            along[dr] += np.repeat(samples[3 * dr + dc], run_length) * weights[dc]
    live_segments = np.searchsorted(-count, -np.arange(int(count[0])), side="left")    # how many have > k rows
    for k in range(int(count[0])):
        m = int(live_segments[k])                                      # segments 0..m-1 have a k-th row
        row = band.start[which[:m]] + k
        spread = pixels[:m]
        sub = slice(0, int(starts[m - 1] + pixels[m - 1]))             # their pixels
        first_at = starts[:m]
        value = np.repeat(row_weights[0][row], spread) * along[0, sub]
        value += np.repeat(row_weights[1][row], spread) * along[1, sub]
        value += np.repeat(row_weights[2][row], spread) * along[2, sub]
        above = value > t                                              # bool [pixels of segments 0..m-1]
        cs = c[sub]
        seg_mask, seg_row, seg_left, seg_right = mask[:m], row, left[:m], right[:m]
        # changes against the pixel before (the known left neighbour at a segment's first pixel)
        previous = np.empty_like(above)
        previous[1:] = above[:-1]
        previous[first_at] = seg_left == 1
        check = np.ones(above.size, dtype=bool)
        check[first_at[seg_left < 0]] = False                          # a row's first pixel: see (c)
        where = np.flatnonzero(check & (above != previous))
        owner = np.searchsorted(first_at, where, side="right") - 1     # its live segment
        keys.add(seg_mask[owner], seg_row[owner] * cols + cs[where])
        # against the known right neighbour after a segment's last pixel
        last_at = first_at + spread - 1
        after = (seg_right >= 0) & (above[last_at] != (seg_right == 1))
        keys.add(seg_mask[after], seg_row[after] * cols + u_c1[:m][after])
        # the row-edge pixels that are uncertain
        at_start, at_end = u_c0[:m] == 0, u_c1[:m] == cols
        edge_first[(seg_mask * rows + seg_row)[at_start]] = above[first_at[at_start]]
        edge_last[(seg_mask * rows + seg_row)[at_end]] = above[last_at[at_end]]
