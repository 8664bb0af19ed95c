"""The one validator of YouTube-VIS / OVIS results files (what the evaluator and the server read).

A results file is a JSON list of predictions ``{"video_id": int, "category_id": int, "score":
float, "segmentations": [mask or null per frame]}`` whose masks are compressed RLE
``{"size": [h, w], "counts": str}`` at the video's original size.

What the official evaluation (youtubevos/cocoapi ``ytvoseval.py`` ``loadRes``/``evaluateVid``)
does with doubtful input, and what :func:`validate_results` does instead:

* **score NaN or ±inf**: officially only used to sort (``np.argsort(-score)``), so NaN ranks last
  and +inf first, silently. Here: an **error** (a non-finite score is a bug in the writer).
* **score < 0 or > 1**: officially ranked like any other. Here: accepted and ranked the same, with
  one **warning** (the evaluation only uses the order, but such scores usually mean logits).
* **fewer or more ``segmentations`` than the video has frames**: ytvoseval silently walks the
  shorter of the two lists; the OVIS evaluation asserts equal lengths. Here: a **warning** for
  YouTube-VIS (scored as officially), an **error** with ``exact_length`` (OVIS).
* **corrupt compressed RLE** (truncated or altered counts): pycocotools reads past the string or
  loops practically forever. Here: an **error** naming the prediction and frame, before any
  pycocotools call. Uncompressed RLE and polygons are errors too (the official code fails on them).
* an empty list is an error (the official code crashes on it) unless ``allow_empty``; a video id
  absent from the ground truth is an error (the official assert).
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from itertools import chain
from typing import Any, Mapping, Optional

import numpy as np

from crossvis.errors import CrossVISError
from crossvis.formats.rle import MAX_PIXELS, check_compressed, check_size, short_repr

__all__ = ["ResultEntry", "REQUIRED_RESULT_KEYS", "validate_results", "ScannedResults", "check_results_list",
           "scan_results", "rle_error", "report_results"]

REQUIRED_RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")
_ENCODE_HINT = "encode masks with pycocotools.mask.encode or crossvis.eval.encode_mask and store counts as a string"


@dataclass(eq=False)
class ResultEntry:
    """One validated prediction.

    Attributes:
        index: its position in the results list.
        segmentations: per frame the validated compressed RLE or None (falsy entries): the input's
            own dict when it already is ``{"size": [h, w], "counts": str}`` (other keys kept),
            else a new ``{"size": [h, w], "counts": bytes}``. pycocotools reads both.
        mask_areas: int64 [L], pixel count of each frame's mask (0 where absent).
    """

    index: int
    video_id: Any
    category_id: Any
    score: float
    segmentations: list[Optional[dict]]
    mask_areas: np.ndarray


def validate_results(results: Any, source: str = "results", *, frame_counts: Optional[Mapping[Any, int]] = None,
                     exact_length: bool = False, allow_empty: bool = False, workers: int = 1) -> list[ResultEntry]:
    """Validate a results list (the input is not modified) and return its predictions.

    Args:
        results: the parsed results JSON.
        source: names the results in messages.
        frame_counts: video id -> number of frames of the ground truth; when given, every
            prediction's video must be listed and its frame count is compared.
        exact_length: a frame count that differs from the video's is an error (OVIS), not a warning.
        allow_empty: accept an empty list.
        workers: processes for the RLE checks of large inputs (see
            :func:`~crossvis.formats.rle.check_compressed`); the result does not depend on it.

    Raises:
        CrossVISError: naming the first offending prediction (index, video, frame) and what to do.
    """
    check_results_list(results, source, allow_empty)
    scanned = scan_results(results, source, frame_counts)
    if scanned.counts:
        problems, areas = check_compressed(scanned.counts, scanned.sizes, workers)
        if any(problems):
            k = next(k for k, p in enumerate(problems) if p)
            raise rle_error(source, scanned.entries[scanned.mask_entry[k]], scanned.mask_frame[k], problems[k])
        for n, f, area in zip(scanned.mask_entry, scanned.mask_frame, areas.tolist()):
            scanned.entries[n].mask_areas[f] = area
    report_results(source, scanned.entries, scanned.wrong_length, scanned.out_of_range, frame_counts, exact_length)
    return scanned.entries


@dataclass(eq=False)
class ScannedResults:
    """Predictions whose structure is checked, with their masks not yet decoded.

    Attributes:
        entries: the predictions (``mask_areas`` still 0).
        mask_entry, mask_frame: the position in ``entries`` and the frame of every mask, in order.
        counts: each mask's RLE string (``str`` or ``bytes``); sizes: its ``[h, w]``.
        out_of_range: positions of predictions whose score is outside [0, 1].
        wrong_length: positions of predictions whose frame count differs from their video's.
        size_table: int64 [M, 2], ``sizes`` as an array (None unless every mask had the usual form).
    """

    entries: list[ResultEntry]
    mask_entry: list[int]
    mask_frame: list[int]
    counts: list
    sizes: list
    out_of_range: list[int]
    wrong_length: list[int]
    size_table: Optional[np.ndarray] = None


def check_results_list(results: Any, source: str, allow_empty: bool) -> None:
    """Raise unless ``results`` is a list (non-empty unless ``allow_empty``)."""
    if not isinstance(results, list):
        raise CrossVISError(f"{source} must be a JSON list of predictions, got {type(results).__name__}")
    if not results and not allow_empty:
        raise CrossVISError(f"{source} has no predictions; the official evaluation cannot score an empty list "
                            "(pass allow_empty=True to score it as all misses)")


def scan_results(results: list, source: str, frame_counts: Optional[Mapping[Any, int]] = None,
                 start: int = 0, stop: Optional[int] = None) -> ScannedResults:
    """Check the structure of predictions ``results[start:stop]`` (keys, ids, scores, the form of
    every mask) and collect their masks; prediction numbers in messages count from 0 in ``results``.

    Results whose masks all have the usual form (``null`` or ``{"size": [h, w] ints, "counts": ASCII
    str}``) are checked in a few passes over all masks at once; anything else is checked mask by
    mask, which gives the first problem in results order.

    Raises:
        CrossVISError: the first prediction whose structure is wrong.
    """
    stop = len(results) if stop is None else stop
    scanned = _scan_usual(results, source, frame_counts, start, stop)
    return scanned if scanned is not None else _scan_each(results, source, frame_counts, start, stop)


def _new_entry(out: ScannedResults, res: Any, n: int, source: str,
               frame_counts: Optional[Mapping[Any, int]]) -> tuple[ResultEntry, int]:
    """Check prediction ``n``'s keys and score, note a score or a frame count out of line; the
    entry and its position in ``out.entries``."""
    entry = _entry(res, n, source, frame_counts)
    position = len(out.entries)
    if not 0.0 <= entry.score <= 1.0:
        out.out_of_range.append(position)
    if frame_counts is not None and len(entry.segmentations) != frame_counts[entry.video_id]:
        out.wrong_length.append(position)
    out.entries.append(entry)
    return entry, position


def _scan_usual(results: list, source: str, frame_counts: Optional[Mapping[Any, int]], start: int,
                stop: int) -> Optional[ScannedResults]:
    """:func:`scan_results` when every mask has the usual form, else None (also on any error: the
    mask-by-mask scan then finds the first one in results order)."""
    out = ScannedResults([], [], [], [], [], [], [])
    masks: list = []
    try:
        for n in range(start, stop):
            res = results[n]
            entry, position = _new_entry(out, res, n, source, frame_counts)
            segs = res["segmentations"]
            frames = [f for f, seg in enumerate(segs) if seg is not None]
            if frames:
                here = [segs[f] for f in frames]
                out.counts.extend([seg["counts"] for seg in here])  # TypeError, KeyError: not a usual mask
                out.sizes.extend([seg["size"] for seg in here])
                masks.extend(here)
                out.mask_frame.extend(frames)
                out.mask_entry.extend([position] * len(frames))
                entry.segmentations = list(segs)
    except (CrossVISError, TypeError, KeyError, IndexError):
        return None
    if not masks:
        return out
    if (set(map(type, masks)) != {dict} or set(map(type, out.counts)) != {str}
            or not all(map(str.isascii, out.counts))
            or set(map(type, out.sizes)) != {list} or set(map(len, out.sizes)) != {2}):
        return None
    flat = list(chain.from_iterable(out.sizes))
    if set(map(type, flat)) != {int}:
        return None
    try:
        table = np.array(flat, dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        return None
    if table.min() < 0 or table.max() > MAX_PIXELS or (table[:, 0] * table[:, 1]).max() > MAX_PIXELS:
        return None
    out.size_table = table
    return out


def _scan_each(results: list, source: str, frame_counts: Optional[Mapping[Any, int]], start: int,
               stop: int) -> ScannedResults:
    """:func:`scan_results` mask by mask."""
    out = ScannedResults([], [], [], [], [], [], [])
    mask_entry, mask_frame, counts, sizes = out.mask_entry, out.mask_frame, out.counts, out.sizes
    for n in range(start, stop):
        res = results[n]
        entry, position = _new_entry(out, res, n, source, frame_counts)
        segs = entry.segmentations
        for f, seg in enumerate(res["segmentations"]):
            if type(seg) is dict:  # the usual case, inline: {"size": [h, w] ints, "counts": ASCII str}
                text, size = seg.get("counts"), seg.get("size")
                if type(text) is str and text.isascii() and check_size(size) is None:
                    segs[f] = seg
                    mask_entry.append(position)
                    mask_frame.append(f)
                    counts.append(text)
                    sizes.append(size)
                    continue
            if not seg and (seg is None or type(seg) in (list, dict)):
                continue  # null, [] and {} are absent frames, as officially
            rle = segs[f] = _rle_form(seg, source, n, f, entry.video_id)
            mask_entry.append(position)
            mask_frame.append(f)
            counts.append(rle["counts"])
            sizes.append(rle["size"])
    return out


def rle_error(source: str, entry: ResultEntry, frame: int, problem: str) -> CrossVISError:
    """The error for a mask that is not valid compressed RLE."""
    return CrossVISError(f"{source}: prediction #{entry.index} frame {frame} (video_id {entry.video_id!r}): "
                         f"{problem}; {_ENCODE_HINT}")


def report_results(source: str, entries: list[ResultEntry], wrong_length: list[int], out_of_range: list[int],
                   frame_counts: Optional[Mapping[Any, int]], exact_length: bool, stacklevel: int = 3) -> None:
    """Raise (``exact_length``) or warn about frame counts that differ from the video's, and warn
    about scores outside [0, 1]; ``wrong_length`` and ``out_of_range`` index ``entries``
    (``stacklevel``: the warnings' frame, counted from this function)."""
    if wrong_length:
        first = entries[wrong_length[0]]
        message = (f"{source}: prediction #{first.index} (video_id {first.video_id!r}) has {len(first.segmentations)} "
                   f"'segmentations' entries but the video has {frame_counts[first.video_id]} frames")
        if exact_length:
            raise CrossVISError(f"{message}; the OVIS evaluation needs one entry per frame (null where absent)")
        more = f" (and {len(wrong_length) - 1} more predictions)" if len(wrong_length) > 1 else ""
        warnings.warn(f"{message}{more}; they are scored over the shorter of the two lists as in the official "
                      "evaluation - write one entry per frame (null where absent)", stacklevel=stacklevel)
    if out_of_range:
        first = entries[out_of_range[0]]
        more = f" (and {len(out_of_range) - 1} more)" if len(out_of_range) > 1 else ""
        warnings.warn(f"{source}: prediction #{first.index} has score {first.score!r} outside [0, 1]{more}; "
                      "scores only rank the predictions (as in the official evaluation)", stacklevel=stacklevel)


def _entry(res: Any, n: int, source: str, frame_counts: Optional[Mapping[Any, int]]) -> ResultEntry:
    if not isinstance(res, dict):
        raise CrossVISError(f"{source}: prediction #{n} must be a JSON object, got {type(res).__name__}")
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in res]
    if missing:
        raise CrossVISError(f"{source}: prediction #{n} has no {', '.join(map(repr, missing))} "
                            f"(each needs {', '.join(REQUIRED_RESULT_KEYS)})")
    for key in ("video_id", "category_id"):
        if not (isinstance(res[key], (numbers.Integral, str)) and not isinstance(res[key], bool)):
            raise CrossVISError(f"{source}: prediction #{n} has {key} {short_repr(res[key])}; it must be an integer id")
    score = res["score"]
    if not isinstance(score, numbers.Real) or isinstance(score, bool):
        raise CrossVISError(f"{source}: prediction #{n} has a non-numeric score {short_repr(score)}")
    if not math.isfinite(score):
        raise CrossVISError(f"{source}: prediction #{n} (video_id {res['video_id']!r}) has score {score!r}; scores "
                            "must be finite numbers (the official evaluation would silently rank NaN last)")
    if frame_counts is not None and res["video_id"] not in frame_counts:
        raise CrossVISError(f"{source}: prediction #{n} is for video_id {res['video_id']!r}, which is not in the "
                            "annotations; results must only cover the annotated videos")
    segs = res["segmentations"]
    if not isinstance(segs, list):
        raise CrossVISError(f"{source}: prediction #{n}: 'segmentations' must be a list (RLE or null per frame)")
    return ResultEntry(n, res["video_id"], res["category_id"], float(score), [None] * len(segs),
                       np.zeros(len(segs), dtype=np.int64))


def _rle_form(seg: Any, source: str, n: int, frame: int, video_id: Any) -> dict:
    """``seg`` as ``{"size": [h, w], "counts": bytes}``; raises unless it has the form of compressed RLE."""
    if type(seg) is dict and type(seg.get("counts")) is str and "size" in seg and seg["counts"].isascii():
        if check_size(seg["size"]) is None:  # the usual case, fast
            return {"size": [seg["size"][0], seg["size"][1]], "counts": seg["counts"].encode("ascii")}
    where = f"{source}: prediction #{n} frame {frame} (video_id {video_id!r})"
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise CrossVISError(f"{where}: a mask must be compressed RLE {{'size': [h, w], 'counts': str}} or null; "
                            f"{_ENCODE_HINT}")
    counts = seg["counts"]
    if isinstance(counts, list):
        raise CrossVISError(f"{where}: uncompressed RLE (counts is a list); the official evaluation needs compressed "
                            f"RLE: {_ENCODE_HINT}")
    if isinstance(counts, str):
        if not counts.isascii():
            raise CrossVISError(f"{where}: RLE 'counts' is not ASCII; {_ENCODE_HINT}")
        counts = counts.encode("ascii")
    elif not isinstance(counts, bytes):
        raise CrossVISError(f"{where}: RLE 'counts' must be a string, got {type(counts).__name__}; {_ENCODE_HINT}")
    problem = check_size(seg["size"])
    if problem:
        raise CrossVISError(f"{where}: {problem}")
    return {"size": [int(seg["size"][0]), int(seg["size"][1])], "counts": counts}
