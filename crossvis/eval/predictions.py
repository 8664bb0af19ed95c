"""Turning a YouTube-VIS results list into predicted tracks scored against the ground truth.

This is the official ``loadRes`` plus the mask half of ``computeIoU``, done in one pass: every
predicted mask is decoded once (:func:`crossvis.formats.rle_decode.decode_compressed`), which both
validates it and gives its area and its foreground runs, and the runs are intersected right away
with the ground-truth masks of the same video, category and frame
(:mod:`crossvis.eval.intersections`). Identical strings (often the empty mask) are decoded once and
an identical (string, ground-truth mask) pair is intersected once. The work is split into slices of
predictions, which forked workers can score in parallel; the result does not depend on the split.
"""
from __future__ import annotations

import mmap
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import orjson

from crossvis.errors import CrossVISError
from crossvis.eval.annotations import GroundTruth, GroundTruthMasks
from crossvis.eval.intersections import column_pieces, intersections
from crossvis.eval.tracks import Track
from crossvis.formats.jsonfile import array_pieces, map_file, parse_json, read_bytes
from crossvis.formats.results import (ResultEntry, ScannedResults, check_results_list, report_results, rle_error,
                                      scan_results)
from crossvis.formats.rle import chunk_bounds, describe_problem
from crossvis.formats.rle_decode import decode_compressed
from crossvis.parallel import forked_map

__all__ = ["prepare_predictions", "prepare_predictions_file", "PARALLEL_MIN_PREDICTIONS", "PARALLEL_MIN_BYTES"]

#: Fewer predictions than this are scored in-process: splitting them would cost more than it saves.
PARALLEL_MIN_PREDICTIONS = 400
#: Slices per worker (dealt out in turn, so that a file whose cost varies along it is shared evenly).
_SLICES_PER_WORKER = 4


def prepare_predictions(results: list[dict], gt: GroundTruth, source: str = "results", allow_empty: bool = False,
                        exact_length: bool = False, workers: int = 1) -> dict[tuple, list[Track]]:
    """Group predictions by (video_id, category_id), in results order; ``results`` is not modified.

    ``results`` is validated as :func:`crossvis.formats.validate_results` does (every mask's RLE is
    checked, frame counts and scores as documented there; the same errors and warnings). Per frame
    the area is the RLE pixel count (0 where the entry is falsy); ``avg_area`` is the mean of the
    non-zero areas, 0 if none (ytvos ``loadRes``). Each track's ``overlaps``/``lost`` hold its
    intersections with the ground-truth tracks of its video and category. Predictions in categories
    that the ground truth does not list are dropped, as officially, with a warning. ``workers``:
    processes for large inputs (the result does not depend on it).

    Raises:
        CrossVISError: not a list (or empty without ``allow_empty``), missing keys, a non-finite
            score, a video id absent from the ground truth, a mask that is not valid compressed RLE,
            and with ``exact_length`` (OVIS) a frame count that differs from the video's.
    """
    check_results_list(results, source, allow_empty)
    masks = gt.masks()
    n = len(results)
    workers = workers if n >= PARALLEL_MIN_PREDICTIONS else 1
    count = 1 if workers <= 1 else min(n, workers * _SLICES_PER_WORKER)
    cuts = np.linspace(0, n, count + 1).round().astype(int).tolist()
    slices = forked_map(lambda k: _score_slice(results, cuts[k], cuts[k + 1], gt, masks, source), count, workers)
    for part in slices:  # the first structural problem in results order, then the first bad mask
        if part.error is not None:
            raise part.error
    for part in slices:
        if part.rle_error is not None:
            raise part.rle_error
    return _tracks(slices, gt, source, exact_length)


def prepare_predictions_file(path: str | os.PathLike, gt: GroundTruth, source: str, allow_empty: bool = False,
                             exact_length: bool = False, workers: int = 1) -> dict[tuple, list[Track]]:
    """:func:`prepare_predictions` of a results JSON file.

    With ``workers`` > 1 and a large file, the JSON text is cut between predictions
    (:func:`crossvis.formats.jsonfile.array_pieces`) and each worker parses and scores its own
    pieces, so the parsing is parallel too; should a piece not parse, or hold a bad prediction, the
    file is read again as a whole (which gives the error messages, numbered in the whole file).
    """
    raw = map_file(path, "results file") if workers > 1 else read_bytes(path, "results file")
    try:
        pieces = array_pieces(raw, workers * _SLICES_PER_WORKER, _MASK_KEYS) \
            if workers > 1 and len(raw) >= PARALLEL_MIN_BYTES else None
        if pieces:
            # each worker builds the ground-truth masks its pieces need (results usually come video by video)
            slices = forked_map(lambda k: _score_piece(raw, pieces[k], gt, None, source), len(pieces), workers)
            if all(part is not None for part in slices):
                offset = 0
                for part in slices:  # number the predictions in the whole file
                    for entry in part.entries:
                        entry.index += offset
                    offset += len(part.entries)
                return _tracks(slices, gt, source, exact_length)
        text = raw if isinstance(raw, bytes) else raw[:]
    finally:
        if isinstance(raw, mmap.mmap):
            raw.close()
    return prepare_predictions(parse_json(text, os.fspath(path), "results file"), gt, source, allow_empty,
                               exact_length, workers)


#: Below this many bytes a results file is parsed in one piece.
PARALLEL_MIN_BYTES = 4 << 20
_MASK_KEYS = (b"size", b"counts")  # the first key of a mask object (not of a prediction)


def _score_piece(raw: bytes, piece: tuple[int, int], gt: GroundTruth, masks: Optional[GroundTruthMasks],
                 source: str) -> Optional["_Slice"]:
    """Parse and score the predictions in ``raw[piece[0]:piece[1]]``; None if it does not parse, is
    not a list of predictions or holds a bad one (the caller then reads the whole file)."""
    try:
        results = orjson.loads(b"[" + raw[piece[0]:piece[1]] + b"]")
    except orjson.JSONDecodeError:
        return None
    part = _score_slice(results, 0, len(results), gt, masks, source)
    return None if part.error is not None or part.rle_error is not None else part


def _tracks(slices: list["_Slice"], gt: GroundTruth, source: str, exact_length: bool) -> dict[tuple, list[Track]]:
    """The predicted tracks of scored slices, grouped by (video_id, category_id) in results order."""
    entries = [e for part in slices for e in part.entries]
    offsets = np.cumsum([0] + [len(part.entries) for part in slices])
    report_results(source, entries, [int(o) + i for part, o in zip(slices, offsets) for i in part.wrong_length],
                   [int(o) + i for part, o in zip(slices, offsets) for i in part.out_of_range],
                   gt.frame_counts, exact_length, stacklevel=5)
    categories = set(gt.category_ids)
    grouped: dict[tuple, list[Track]] = {}
    dropped = 0
    for part in slices:
        for entry, present, overlaps, lost, mismatch in zip(part.entries, part.present, part.overlaps, part.lost,
                                                            part.mismatch):
            if entry.category_id not in categories:
                dropped += 1
                continue
            areas = entry.mask_areas
            nonzero = areas[areas > 0]
            grouped.setdefault((entry.video_id, entry.category_id), []).append(Track(
                video_id=entry.video_id, category_id=entry.category_id, segs=None, present=present, areas=areas,
                avg_area=float(nonzero.mean()) if nonzero.size else 0.0, score=entry.score, index=entry.index,
                overlaps=overlaps, lost=lost, size_mismatch=mismatch))
    if dropped:
        warnings.warn(f"{source}: {dropped} prediction(s) in categories absent from the annotations "
                      f"{gt.source} were ignored", stacklevel=4)
    return grouped


@dataclass(eq=False)
class _Slice:
    """What scoring ``results[start:stop]`` gives back (small: no masks travel between processes)."""

    entries: list[ResultEntry] = field(default_factory=list)  # segmentations replaced by [None] * L
    present: list = field(default_factory=list)  # bool [L] per entry: which frames have a mask
    overlaps: list = field(default_factory=list)  # int64 [G] per entry
    lost: list = field(default_factory=list)
    mismatch: list = field(default_factory=list)
    wrong_length: list = field(default_factory=list)
    out_of_range: list = field(default_factory=list)
    error: Optional[CrossVISError] = None
    rle_error: Optional[CrossVISError] = None


def _score_slice(results: list, start: int, stop: int, gt: GroundTruth, masks: Optional[GroundTruthMasks],
                 source: str) -> _Slice:
    """Validate predictions ``results[start:stop]``, decode their masks and intersect them with the
    ground truth (see the module docstring); ``masks`` None: those of the groups these predictions
    need (all of ``gt.masks()`` when that is most of them)."""
    out = _Slice()
    try:
        scanned = scan_results(results, source, gt.frame_counts, start, stop)
    except CrossVISError as exc:
        out.error = exc
        return out
    entries = out.entries = scanned.entries
    out.wrong_length, out.out_of_range = scanned.wrong_length, scanned.out_of_range
    if masks is None:
        needed = {key for key in ((e.video_id, e.category_id) for e in entries) if key in gt.tracks}
        masks = gt.masks() if 2 * len(needed) > len(gt.tracks) else GroundTruthMasks(
            {key: tracks for key, tracks in gt.tracks.items() if key in needed})
    # Per entry: its frames in one flat array (areas, presence) and its ground-truth group's row of
    # overlaps in another.
    frames = np.array([len(e.segmentations) for e in entries], dtype=np.int64)
    frame_row = np.cumsum(frames) - frames
    group = np.array([masks.group.get((e.video_id, e.category_id), -1) for e in entries], dtype=np.int64)
    width = masks.tracks_in[group]  # 0 for group -1
    row = np.cumsum(width) - width
    areas = np.zeros(int(frames.sum()), dtype=np.int64)
    present = np.zeros(areas.size, dtype=bool)
    overlaps = np.zeros(int(width.sum()), dtype=np.int64)
    lost = np.zeros_like(overlaps)
    mismatch = np.zeros(len(entries), dtype=bool)
    if scanned.counts:
        entry_of = np.array(scanned.mask_entry, dtype=np.int64)
        frame_of = np.array(scanned.mask_frame, dtype=np.int64)
        present[frame_row[entry_of] + frame_of] = True
        strings, string_of, heights, widths = _distinct_strings(scanned)
        pairs = _pairs(masks, group[entry_of], frame_of, string_of, heights, widths)
        cell = row[entry_of[pairs.mask]] + pairs.track  # where each pair's value is summed
        if not pairs.same.all():
            mismatch[np.unique(entry_of[pairs.mask[~pairs.same]])] = True
        string_areas, values, bad = _decode_and_intersect(strings, heights, widths, pairs, masks)
        if bad is not None:
            k = int(np.flatnonzero(string_of == bad[0])[0])  # the string's first use
            out.rle_error = rle_error(source, entries[entry_of[k]], int(frame_of[k]), bad[1])
            return out
        areas[frame_row[entry_of] + frame_of] = string_areas[string_of]
        np.add.at(overlaps, cell[pairs.same], values[pairs.distinct_of])
        other = ~pairs.same
        if other.any():
            np.add.at(lost, cell[other], string_areas[pairs.string[other]] + masks.areas[pairs.truth[other]])
    for k, entry in enumerate(entries):
        entry.mask_areas = areas[frame_row[k]:frame_row[k] + frames[k]]
        entry.segmentations = [None] * int(frames[k])  # the masks stay in this process
        out.present.append(present[frame_row[k]:frame_row[k] + frames[k]])
        out.overlaps.append(overlaps[row[k]:row[k] + width[k]])
        out.lost.append(lost[row[k]:row[k] + width[k]])
        out.mismatch.append(bool(mismatch[k]))
    return out


def _distinct_strings(scanned: ScannedResults) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (string, size) masks, in order of first use: identical masks are decoded once.

    Returns:
        ``(strings, string_of, heights, widths)``: the distinct strings, int64 [M] the distinct
        mask of every mask, and int64 [S] the height and width of each distinct mask.
    """
    table = scanned.size_table
    if table is not None and (table == table[0]).all():  # one frame size (the usual case): by string
        strings = list(dict.fromkeys(scanned.counts))
        number = dict(zip(strings, range(len(strings))))
        string_of = np.fromiter(map(number.__getitem__, scanned.counts), dtype=np.int64, count=len(scanned.counts))
        return (strings, string_of, np.full(len(strings), table[0, 0], dtype=np.int64),
                np.full(len(strings), table[0, 1], dtype=np.int64))
    unique: dict[tuple, int] = {}
    string_of = np.array([unique.setdefault((c, s[0], s[1]), len(unique))
                          for c, s in zip(scanned.counts, scanned.sizes)], dtype=np.int64)
    keys = list(unique)
    return ([k[0] for k in keys], string_of, np.array([k[1] for k in keys], dtype=np.int64),
            np.array([k[2] for k in keys], dtype=np.int64))


@dataclass(eq=False)
class _Pairs:
    """Every (predicted mask, ground-truth mask) pair of the same video, category and frame.

    Per pair: ``mask`` (index of the predicted mask), ``track`` (the ground-truth track's index in
    its group), ``truth`` (the ground-truth mask in the table), ``string`` (the predicted mask's
    distinct string) and ``same`` (both have the same size). The same-size pairs map to
    ``distinct_string``/``distinct_truth`` (sorted by string) through ``distinct_of``.
    """

    mask: np.ndarray
    track: np.ndarray
    truth: np.ndarray
    string: np.ndarray
    same: np.ndarray
    distinct_string: np.ndarray
    distinct_truth: np.ndarray
    distinct_of: np.ndarray


def _pairs(masks: GroundTruthMasks, group: np.ndarray, frame: np.ndarray, string_of: np.ndarray,
           heights: np.ndarray, widths: np.ndarray) -> _Pairs:
    """The pairs of predicted masks (their group, frame and string, int64 [N] each) with the
    ground-truth masks; ``heights``/``widths``: int64 [S], the size of each distinct string."""
    per_mask = np.where(frame < masks.frames_in[group], masks.tracks_in[group], 0)
    first = np.cumsum(per_mask) - per_mask
    mask = np.repeat(np.arange(per_mask.size), per_mask)
    track = np.arange(int(per_mask.sum())) - first[mask]
    g = group[mask]
    truth = masks.slot[masks.base[g] + track * masks.frames_in[g] + frame[mask]]
    both = truth >= 0  # the ground truth has a mask in that frame
    mask, track, truth = mask[both], track[both], truth[both]
    string = string_of[mask]
    same = (heights[string] == masks.table.height[truth]) & (widths[string] == masks.table.width[truth])
    code = string[same] * len(masks.table) + truth[same]
    distinct, distinct_of = np.unique(code, return_inverse=True)
    return _Pairs(mask, track, truth, string, same, distinct // len(masks.table), distinct % len(masks.table),
                  distinct_of)


def _decode_and_intersect(strings: list, heights: np.ndarray, widths: np.ndarray, pairs: _Pairs,
                          masks: GroundTruthMasks) -> tuple[np.ndarray, np.ndarray, Optional[tuple[int, str]]]:
    """Decode the distinct masks ``strings`` (their sizes ``heights``/``widths``) in cache-sized
    batches and intersect each with the ground-truth masks of its pairs.

    The strings with pairs are decoded in batches of their own, with their foreground intervals;
    the others (predictions in a category absent from their video: often most of them) only for
    their validity and area, which skips the cumulative sum that turns runs into positions.

    Returns:
        ``(areas, values, bad)``: int64 [len(strings)] areas, int64 [distinct pairs] intersections,
        and for the first invalid string (index, problem), else None (the rest of its group of
        strings is then not decoded).
    """
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    areas = np.zeros(len(strings), dtype=np.int64)
    values = np.zeros(pairs.distinct_string.size, dtype=np.int64)
    wanted = np.zeros(len(strings), dtype=bool)
    wanted[pairs.distinct_string] = True
    bad: list[tuple[int, str]] = []
    for group in (np.flatnonzero(wanted), np.flatnonzero(~wanted)):
        with_pairs = group.size > 0 and bool(wanted[group[0]])
        for a, b in chunk_bounds(lengths[group]):
            index = group[a:b]  # increasing string numbers
            decoded = decode_compressed(list(map(strings.__getitem__, index.tolist())), lengths[index],
                                        intervals=with_pairs)
            ok = (decoded.problems == 0) & (decoded.sums == heights[index] * widths[index])
            if not ok.all():
                k = int(np.flatnonzero(~ok)[0])
                s = int(index[k])
                bad.append((s, describe_problem(int(decoded.problems[k]), int(decoded.sums[k]),
                                                int(heights[s]), int(widths[s]))))
                break
            areas[index] = decoded.areas
            if with_pairs:
                lo, hi = np.searchsorted(pairs.distinct_string, [index[0], index[-1] + 1])
                pieces = column_pieces(decoded, heights[index])
                values[lo:hi] = intersections(pieces, np.searchsorted(index, pairs.distinct_string[lo:hi]),
                                              masks.table, pairs.distinct_truth[lo:hi])
    # strings are numbered in order of first use: the first bad one is the one reported
    return areas, values, (min(bad) if bad else None)
