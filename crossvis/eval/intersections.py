"""Exact pixel intersections of run-length masks, vectorised over many (prediction, ground truth) pairs.

A mask's foreground runs (:func:`crossvis.formats.rle_decode.decode_compressed` with
``intervals=True``) are pixel intervals in column-major order. Cut at column boundaries they
become *pieces*, each inside one image column. A ground-truth mask is stored as a column table:
for every column, the first, second, ... piece in that column (layers); most masks need one
layer, a mask with holes or several parts in a column needs more. The intersection of a predicted
piece ``[s, e)`` in column ``c`` with the ground truth is then ``max(0, min(e, E) - max(s, S))``
summed over the table's layers at column ``c``; summed over the prediction's pieces it is
``|prediction ∩ ground truth|`` exactly, as pycocotools' ``rleIou`` counts it. Only the pieces in
the columns the ground truth covers are visited.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from crossvis.formats.rle import chunk_bounds
from crossvis.formats.rle_decode import DecodedRLE, decode_compressed

__all__ = ["Pieces", "column_pieces", "MaskTable", "intersections"]


@dataclass
class Pieces:
    """Foreground pieces of N masks, each inside one column.

    Attributes:
        starts, ends: int32 [P] (int64 for positions past 2**31), pixel intervals ``[start, end)``
            (column-major pixel index).
        columns: [P], the column of each piece (nondecreasing within a mask), same dtype.
        offsets: int64 [N + 1], mask i's pieces are ``[offsets[i], offsets[i + 1])``.
    """

    starts: np.ndarray
    ends: np.ndarray
    columns: np.ndarray
    offsets: np.ndarray


def column_pieces(decoded: DecodedRLE, heights: Sequence[int] | np.ndarray) -> Pieces:
    """Cut the foreground intervals of ``decoded`` (with intervals) at column boundaries.

    Args:
        decoded: N decoded masks with ``starts``/``ends``/``offsets``.
        heights: int [N], each mask's height h (a column holds h pixels).
    """
    heights = np.asarray(heights, dtype=np.int64)
    starts, ends, offsets = decoded.starts, decoded.ends, decoded.offsets
    nonempty = ends > starts
    if not nonempty.all():  # zero-length runs (valid but unusual encodings) carry no pixels
        offsets = _cumulative(nonempty)[offsets]
        starts, ends = starts[nonempty], ends[nonempty]
    uniform = heights.size > 0 and bool((heights == heights[0]).all())
    height = heights[0] if uniform else np.repeat(heights, np.diff(offsets))
    first = starts // height
    last = (ends - 1) // height
    spans = last - first
    if spans.any():  # intervals that run over several columns (touching the bottom and top rows) are split
        n = spans + 1
        source = np.repeat(np.arange(starts.size), n)
        before = _cumulative(n)
        first = first[source] + np.arange(int(before[-1])) - before[source]
        h = height if uniform else height[source]
        starts, ends = np.maximum(starts[source], first * h), np.minimum(ends[source], (first + 1) * h)
        offsets = before[offsets]
    # 32-bit positions (any mask has fewer than 2**31 pixels) halve the memory the intersections read
    small = np.int32 if ends.size == 0 or (ends.max() < 2 ** 31 and starts.min() >= 0) else np.int64
    return Pieces(starts.astype(small), ends.astype(small), first.astype(small), offsets)


def _concatenate(parts: list[Pieces]) -> Pieces:
    """The pieces of several batches of masks as one."""
    if not parts:
        return Pieces(*(np.zeros(0, np.int64),) * 3, np.zeros(1, np.int64))
    shift = np.cumsum([0] + [p.starts.size for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + k for p, k in zip(parts, shift)])
    return Pieces(np.concatenate([p.starts for p in parts]), np.concatenate([p.ends for p in parts]),
                  np.concatenate([p.columns for p in parts]), offsets)


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """int64 [n + 1]: 0, c0, c0 + c1, ... (index i maps an item to its first slot)."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class MaskTable:
    """Ground-truth masks as per-column tables, for :func:`intersections`.

    Args:
        counts: M compressed RLE strings (valid ones: already checked).
        sizes: their (h, w).

    Attributes:
        height, width: int64 [M].
        first_column, last_column: int64 [M], the columns the mask covers (first > last when empty).
        span: int64 [M], ``last_column - first_column + 1`` (0 when empty).
        layers: int64 [M], pieces per column at most.
        base: int64 [M], where mask m's table starts in ``top``/``bottom``; layer k of column c is at
            ``base[m] + k * span[m] + c - first_column[m]``.
        top, bottom: int32 (as the pieces), the piece ``[top, bottom)`` of every (mask, layer, covered column);
            ``0, 0`` where a column has fewer pieces.
    """

    def __init__(self, counts: Sequence[bytes | str], sizes: Sequence[Sequence[int]]) -> None:
        m = len(counts)
        counts = list(counts)
        self.height = np.array([int(s[0]) for s in sizes], dtype=np.int64).reshape(m)
        self.width = np.array([int(s[1]) for s in sizes], dtype=np.int64).reshape(m)
        lengths = np.fromiter(map(len, counts), dtype=np.int64, count=m)
        parts = []
        for a, b in chunk_bounds(lengths):
            decoded = decode_compressed(counts[a:b], lengths[a:b], intervals=True)
            if decoded.problems.any() or (decoded.sums != self.height[a:b] * self.width[a:b]).any():
                raise ValueError("MaskTable needs valid compressed RLE (check it with check_compressed first)")
            parts.append(column_pieces(decoded, self.height[a:b]))
        pieces = _concatenate(parts)
        per_mask = np.diff(pieces.offsets)
        owner = np.repeat(np.arange(m), per_mask)
        # layer = rank of the piece among the mask's pieces in its column (pieces are in order)
        key = owner * (int(self.width.max(initial=0)) + 1) + pieces.columns
        new_group = np.ones(key.size, dtype=bool)
        new_group[1:] = key[1:] != key[:-1]
        group_start = np.flatnonzero(new_group)
        layer = np.arange(key.size) - np.repeat(group_start, np.diff(np.append(group_start, key.size)))
        self.layers = np.zeros(m, dtype=np.int64)
        np.maximum.at(self.layers, owner, layer + 1)
        self.first_column = np.full(m, 1, dtype=np.int64)
        self.last_column = np.zeros(m, dtype=np.int64)
        has = per_mask > 0
        self.first_column[has] = pieces.columns[pieces.offsets[:-1][has]]
        self.last_column[has] = pieces.columns[pieces.offsets[1:][has] - 1]
        self.span = np.maximum(self.last_column - self.first_column + 1, 0)
        sizes_of = self.layers * self.span
        self.base = np.cumsum(sizes_of) - sizes_of
        self.top = np.zeros(int(sizes_of.sum()), dtype=pieces.starts.dtype)
        self.bottom = np.zeros_like(self.top)
        slot = self.base[owner] + layer * self.span[owner] + pieces.columns - self.first_column[owner]
        self.top[slot] = pieces.starts
        self.bottom[slot] = pieces.ends

    def __len__(self) -> int:
        return self.height.size


def intersections(pieces: Pieces, masks: np.ndarray, table: MaskTable, gt: np.ndarray) -> np.ndarray:
    """``|pred ∩ gt|`` for every pair (``masks[p]``, ``gt[p]``).

    Args:
        pieces: the predicted masks' pieces (:func:`column_pieces`).
        masks: int64 [P], a mask index into ``pieces`` per pair.
        table: the ground-truth masks.
        gt: int64 [P], a mask index into ``table`` per pair; the two masks of a pair must have
            the same size.

    Returns:
        int64 [P] pixel counts.
    """
    masks = np.asarray(masks, dtype=np.int64)
    gt = np.asarray(gt, dtype=np.int64)
    out = np.zeros(masks.size, dtype=np.int64)
    if not masks.size or not pieces.starts.size:
        return out
    # The pieces of each prediction in the columns its ground truth covers: one slice per pair.
    stride = int(max(pieces.columns.max(initial=0), table.last_column.max(initial=0))) + 2
    owner = np.repeat(np.arange(pieces.offsets.size - 1, dtype=np.int64), np.diff(pieces.offsets))
    key = owner * stride + pieces.columns.astype(np.int64)
    lo = np.searchsorted(key, masks * stride + table.first_column[gt])
    hi = np.searchsorted(key, masks * stride + table.last_column[gt], side="right")
    lengths = np.maximum(hi - lo, 0)
    busy = np.flatnonzero(lengths)
    if not busy.size:
        return out
    # batches of about BATCH_PIECES pieces, so that the temporaries stay in the CPU cache
    cuts = np.searchsorted(np.cumsum(lengths[busy]), np.arange(BATCH_PIECES, int(lengths.sum()), BATCH_PIECES)) + 1
    edges = [0, *cuts[np.append(True, cuts[1:] != cuts[:-1])].tolist(), busy.size] if cuts.size else [0, busy.size]
    for a, b in zip(edges[:-1], edges[1:]):
        if a < b:
            part = busy[a:b]
            out[part] = _overlap_sums(pieces, lo[part], lengths[part], table, gt[part])
    return out


#: Pieces intersected at once by :func:`intersections`.
BATCH_PIECES = 1 << 16


def _overlap_sums(pieces: Pieces, lo: np.ndarray, lengths: np.ndarray, table: MaskTable,
                  gt: np.ndarray) -> np.ndarray:
    """Per pair, the overlap of ``pieces[lo:lo + length]`` with ground-truth mask ``gt`` (lengths > 0)."""
    ends_at = np.cumsum(lengths)
    first_element = ends_at - lengths
    piece = np.arange(int(ends_at[-1]), dtype=np.int64) + np.repeat(lo - first_element, lengths)
    starts, ends, columns = pieces.starts[piece], pieces.ends[piece], pieces.columns[piece]
    slot = np.repeat(table.base[gt] - table.first_column[gt], lengths) + columns
    overlap = np.minimum(ends, table.bottom[slot]) - np.maximum(starts, table.top[slot])
    np.maximum(overlap, 0, out=overlap)
    for k in range(1, int(table.layers[gt].max())):  # further pieces in a column
        deeper = np.flatnonzero(np.repeat(table.layers[gt] > k, lengths))
        slot_k = slot[deeper] + k * np.repeat(table.span[gt], lengths)[deeper]
        extra = np.minimum(ends[deeper], table.bottom[slot_k]) - np.maximum(starts[deeper], table.top[slot_k])
        overlap[deeper] += np.maximum(extra, 0)
    return np.add.reduceat(overlap, first_element, dtype=np.int64)
