"""Turning a YouTube-VIS results list into predicted tracks (the official ``loadRes`` semantics)."""
from __future__ import annotations

import warnings

import numpy as np

from crossvis.eval.annotations import GroundTruth
from crossvis.eval.tracks import Track
from crossvis.formats import validate_results

__all__ = ["prepare_predictions"]


def prepare_predictions(results: list[dict], gt: GroundTruth, source: str = "results", allow_empty: bool = False,
                        exact_length: bool = False, workers: int = 1) -> dict[tuple, list[Track]]:
    """Group predictions by (video_id, category_id), in results order; ``results`` is not modified.

    ``results`` is validated first (:func:`crossvis.formats.validate_results`: every mask's RLE is
    checked before pycocotools reads it; frame counts and scores as documented there). Per frame
    the area is the RLE pixel count (0 where the entry is falsy); ``avg_area`` is the mean of the
    non-zero areas, 0 if none (ytvos ``loadRes``). Predictions in categories that the ground truth
    does not list are dropped, as officially, with a warning. ``workers``: processes for the RLE
    checks of large inputs (the result does not depend on it).

    Raises:
        CrossVISError: not a list (or empty without ``allow_empty``), missing keys, a non-finite
            score, a video id absent from the ground truth, a mask that is not valid compressed RLE,
            and with ``exact_length`` (OVIS) a frame count that differs from the video's.
    """
    entries = validate_results(results, source, frame_counts=gt.frame_counts, exact_length=exact_length,
                               allow_empty=allow_empty, workers=workers)
    categories = set(gt.category_ids)
    grouped: dict[tuple, list[Track]] = {}
    dropped = 0
    for entry in entries:
        if entry.category_id not in categories:
            dropped += 1
            continue
        nonzero = entry.mask_areas[entry.mask_areas > 0]
        present = np.fromiter((s is not None for s in entry.segmentations), dtype=bool, count=len(entry.segmentations))
        track = Track(video_id=entry.video_id, category_id=entry.category_id, segs=entry.segmentations,
                      present=present, areas=entry.mask_areas, avg_area=float(nonzero.mean()) if nonzero.size else 0.0,
                      score=entry.score, index=entry.index)
        grouped.setdefault((track.video_id, track.category_id), []).append(track)
    if dropped:
        warnings.warn(f"{source}: {dropped} prediction(s) in categories absent from the annotations "
                      f"{gt.source} were ignored", stacklevel=2)
    return grouped
