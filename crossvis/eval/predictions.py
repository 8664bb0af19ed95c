"""Turning a YouTube-VIS results list into predicted tracks (the official ``loadRes`` semantics)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from crossvis.eval.annotations import GroundTruth
from crossvis.eval.results import check_result_rle, validate_results
from crossvis.eval.tracks import Track, rle_areas
from crossvis.errors import CrossVISError

__all__ = ["prepare_predictions"]


def prepare_predictions(results: list[dict], gt: GroundTruth, source: str = "results",
                        allow_empty: bool = False) -> dict[tuple, list[Track]]:
    """Group predictions by (video_id, category_id), in results order; ``results`` is not modified.

    Per frame the area is the RLE pixel count (0 where the entry is falsy); ``avg_area`` is the mean
    of the non-zero areas, 0 if none (ytvos ``loadRes``). Predictions in categories that the ground
    truth does not list are dropped, as officially, with a warning.

    Raises:
        CrossVISError: not a list (or empty without ``allow_empty``), missing keys, a video id absent from the ground truth,
            or a mask that is not compressed RLE.
    """
    validate_results(results, source, check_masks=False, allow_empty=allow_empty)
    known_videos = set(gt.video_ids)
    for n, res in enumerate(results):
        if res["video_id"] not in known_videos:
            raise CrossVISError(f"{source}: prediction #{n} is for video_id {res['video_id']!r}, which is not in "
                                f"the annotations {gt.source}; results must only cover the annotated videos")

    flat: list[Any] = []
    owner: list[int] = []
    segs_per_result = []
    for n, res in enumerate(results):
        segs = [s if s else None for s in res["segmentations"]]
        present = [s for s in segs if s is not None]
        flat.extend(present)
        owner.extend([n] * len(present))
        segs_per_result.append(segs)
    try:
        flat_areas = rle_areas(flat)
    except (TypeError, KeyError, ValueError, IndexError, OverflowError) as exc:
        for n, segs in enumerate(segs_per_result):
            for f, seg in enumerate(segs):
                if seg is not None:
                    check_result_rle(seg, source, n, f)
        raise CrossVISError(f"{source}: a mask could not be read by pycocotools ({exc}); "
                            "masks must be compressed RLE {'size': [h, w], 'counts': str}") from None

    owner_arr = np.asarray(owner, dtype=np.int64)
    sums = np.bincount(owner_arr, weights=flat_areas, minlength=len(results))
    nonzero = np.bincount(owner_arr, weights=flat_areas > 0, minlength=len(results))
    categories = set(gt.category_ids)
    grouped: dict[tuple, list[Track]] = {}
    dropped = 0
    start = 0
    for n, (res, segs) in enumerate(zip(results, segs_per_result)):
        present = np.fromiter((s is not None for s in segs), dtype=bool, count=len(segs))
        count = int(present.sum())
        areas = np.zeros(len(segs), dtype=np.int64)
        areas[present] = flat_areas[start:start + count]
        start += count
        if res["category_id"] not in categories:
            dropped += 1
            continue
        avg_area = float(sums[n] / nonzero[n]) if nonzero[n] else 0.0
        track = Track(video_id=res["video_id"], category_id=res["category_id"], segs=segs, present=present,
                      areas=areas, avg_area=avg_area, score=float(res["score"]), index=n)
        grouped.setdefault((track.video_id, track.category_id), []).append(track)
    if dropped:
        warnings.warn(f"{source}: {dropped} prediction(s) in categories absent from the annotations "
                      f"{gt.source} were ignored", stacklevel=2)
    return grouped
