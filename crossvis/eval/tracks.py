"""Per-frame mask tracks and the spatio-temporal track IoU of YouTube-VIS.

A :class:`Track` holds one ground-truth or predicted instance through a video: one compressed RLE
(or ``None``) per frame. The IoU of two tracks sums intersections and unions over frames
(official ytvoseval, ``YTVOSeval.computeIoU`` / ``loadRes``):

- frames are walked in step and the walk stops at the shorter of the two lists;
- a frame is *present* when its entry is Python-truthy (``None``, ``[]`` and ``{}`` are absent);
- both present: ``I += |d ∩ g|``, ``U += |d ∪ g|``; only one present: ``U += |that mask|``;
- both present but of different sizes: pycocotools' merge gives an empty 0×0 mask, so the frame
  adds 0 to both sums;
- IoU = I / U, or 0 when U is 0.

The intersections are exact pixel counts from the masks' runs
(:mod:`crossvis.eval.intersections`); the evaluator computes them while it validates the results
(:func:`crossvis.eval.predictions.prepare_predictions`) and stores them on the predicted tracks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from crossvis.eval.intersections import MaskTable, column_pieces, intersections
from crossvis.formats.rle_decode import decode_compressed

__all__ = ["Track", "track_iou_matrix", "track_overlaps"]


@dataclass(eq=False)
class Track:
    """One instance through a video.

    Attributes:
        video_id, category_id: the ids from the JSON.
        segs: per-frame compressed RLE dicts, ``None`` where the frame is absent; length L (None for
            predictions scored by the evaluator, which keeps their overlaps instead of their masks).
        present: bool [L], truthiness of each frame entry.
        areas: int64 [L], pixel count of each frame mask (0 where absent).
        avg_area: the mean of the truthy per-frame areas (JSON ``areas`` for ground truth), 0 if none.
        score: prediction confidence (predictions only).
        ignore: truthiness of ``iscrowd`` (ground truth only).
        crowd: ``int(iscrowd) != 0``; a crowd track may absorb many predictions.
        index: position in the source list (JSON order for GT, results order for predictions).
        occlusion: OVIS occlusion score in [0, 0.75] (ground truth read for OVIS only, else None).
        overlaps, lost: int64 [G] (predictions, once scored against the G ground-truth tracks of
            their video and category in JSON order): the summed intersections, and the summed areas
            of both masks over the frames where their sizes differ (see :func:`track_overlaps`).
        size_mismatch: some frame had both masks present with different sizes.
    """

    video_id: Any
    category_id: Any
    segs: Optional[list]
    present: np.ndarray
    areas: np.ndarray
    avg_area: float
    score: float = 0.0
    ignore: bool = False
    crowd: bool = False
    index: int = 0
    occlusion: float | None = None
    overlaps: Optional[np.ndarray] = None
    lost: Optional[np.ndarray] = None
    size_mismatch: bool = False

    def __len__(self) -> int:
        return len(self.areas)


def _cumulative(areas: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Row i = [0, a0, a0+a1, ...] of track i, padded with its total to ``width + 1`` columns."""
    cum = np.zeros((len(areas), width + 1), dtype=np.int64)
    for i, a in enumerate(areas):
        n = len(a)
        cum[i, 1:n + 1] = np.cumsum(a)
        cum[i, n + 1:] = cum[i, n]
    return cum


def track_iou_matrix(dts: Sequence[Track], gts: Sequence[Track]) -> tuple[np.ndarray, bool]:
    """Spatio-temporal IoU of every (prediction, ground truth) pair.

    Args:
        dts: D predicted tracks; their ``overlaps``/``lost`` against ``gts`` are used when set
            (the evaluator sets them), else computed from the masks (:func:`track_overlaps`).
        gts: G ground-truth tracks.

    Returns:
        ``(ious, size_mismatch)``: float64 [D, G] IoUs, and whether some frame had both masks
        present with different sizes (those frames count 0 in intersection and union).
    """
    D, G = len(dts), len(gts)
    ious = np.zeros((D, G), dtype=np.float64)
    if D == 0 or G == 0:
        return ious, False
    if any(d.overlaps is None for d in dts):
        inter, lost, mismatch = track_overlaps(dts, gts)
    else:
        inter = np.stack([d.overlaps for d in dts])
        lost = np.stack([d.lost for d in dts])
        mismatch = any(d.size_mismatch for d in dts)
    len_d = np.array([len(t) for t in dts], dtype=np.int64)
    len_g = np.array([len(t) for t in gts], dtype=np.int64)
    # Sum of both tracks' areas over the first min(L_d, L_g) frames, for every pair.
    cum_d = _cumulative([t.areas for t in dts], int(len_d.max()))
    cum_g = _cumulative([t.areas for t in gts], int(len_g.max()))
    limit = np.minimum(len_d[:, None], len_g[None, :])
    total = np.take_along_axis(cum_d, limit, axis=1) + np.take_along_axis(cum_g, limit.T, axis=1).T
    union = total - inter - lost
    np.divide(inter.astype(np.float64), union.astype(np.float64), out=ious, where=union > 0)
    return ious, mismatch


def track_overlaps(dts: Sequence[Track], gts: Sequence[Track]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per pair, over the frames both tracks have (the shorter list): the summed intersections and
    the summed areas of the frames where both masks are present with different sizes.

    Returns:
        ``(intersections, lost, size_mismatch)``: int64 [D, G] twice, and whether any such frame exists.
    """
    D, G = len(dts), len(gts)
    inter = np.zeros((D, G), dtype=np.int64)
    lost = np.zeros((D, G), dtype=np.int64)
    frames = [(i, j, f) for i, d in enumerate(dts) for j, g in enumerate(gts)
              for f in range(min(len(d), len(g))) if d.segs[f] is not None and g.segs[f] is not None]
    same = [(i, j, f) for i, j, f in frames if list(dts[i].segs[f]["size"]) == list(gts[j].segs[f]["size"])]
    for i, j, f in set(frames) - set(same):
        lost[i, j] += dts[i].areas[f] + gts[j].areas[f]
    if same:
        pred = [dts[i].segs[f] for i, _, f in same]
        truth = [gts[j].segs[f] for _, j, f in same]
        pieces = column_pieces(decode_compressed([s["counts"] for s in pred], intervals=True),
                               [s["size"][0] for s in pred])
        values = intersections(pieces, np.arange(len(same)), MaskTable([s["counts"] for s in truth],
                                                                      [s["size"] for s in truth]),
                               np.arange(len(same)))
        np.add.at(inter, (np.array([i for i, _, _ in same]), np.array([j for _, j, _ in same])), values)
    return inter, lost, len(frames) != len(same)
