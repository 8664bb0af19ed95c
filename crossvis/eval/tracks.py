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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.parallel import forked_map

__all__ = ["Track", "track_iou_matrix", "track_iou_matrices"]

#: Below this many predicted frame masks the work is done in-process: starting workers would cost
#: more than it saves (measured: about 7 µs of IoU work per mask, 20-40 ms to start two workers).
PARALLEL_MIN_MASKS = 20_000


@dataclass(eq=False)
class Track:
    """One instance through a video.

    Attributes:
        video_id, category_id: the ids from the JSON.
        segs: per-frame compressed RLE dicts, ``None`` where the frame is absent; length L.
        present: bool [L], truthiness of each frame entry.
        areas: int64 [L], pixel count of each frame mask (0 where absent).
        avg_area: the mean of the truthy per-frame areas (JSON ``areas`` for ground truth), 0 if none.
        score: prediction confidence (predictions only).
        ignore: truthiness of ``iscrowd`` (ground truth only).
        crowd: ``int(iscrowd) != 0``; a crowd track may absorb many predictions.
        index: position in the source list (JSON order for GT, results order for predictions).
        occlusion: OVIS occlusion score in [0, 0.75] (ground truth read for OVIS only, else None).
    """

    video_id: Any
    category_id: Any
    segs: list
    present: np.ndarray
    areas: np.ndarray
    avg_area: float
    score: float = 0.0
    ignore: bool = False
    crowd: bool = False
    index: int = 0
    occlusion: float | None = None

    def __len__(self) -> int:
        return len(self.segs)

    def mask_sizes(self) -> set[tuple[int, int]]:
        """The distinct (h, w) of the present frame masks."""
        return {(s["size"][0], s["size"][1]) for s in self.segs if s is not None}


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
        dts: D predicted tracks.
        gts: G ground-truth tracks.

    Returns:
        ``(ious, size_mismatch)``: float64 [D, G] IoUs, and whether some frame had both masks
        present with different sizes (those frames count 0 in intersection and union).
    """
    D, G = len(dts), len(gts)
    ious = np.zeros((D, G), dtype=np.float64)
    if D == 0 or G == 0:
        return ious, False
    len_d = np.array([len(t) for t in dts], dtype=np.int64)
    len_g = np.array([len(t) for t in gts], dtype=np.int64)
    frames = int(min(len_d.max(), len_g.max()))
    inter = np.zeros((D, G), dtype=np.int64)
    lost = np.zeros((D, G), dtype=np.int64)  # area of both-present frames whose sizes differ
    mismatch = False
    sizes = set()
    for t in (*dts, *gts):
        sizes |= t.mask_sizes()
    uniform = len(sizes) <= 1

    pres_d = np.zeros((D, frames), dtype=bool)
    area_d = np.zeros((D, frames), dtype=np.int64)
    for i, t in enumerate(dts):
        n = min(len(t), frames)
        pres_d[i, :n], area_d[i, :n] = t.present[:n], t.areas[:n]
    pres_g = np.zeros((G, frames), dtype=bool)
    area_g = np.zeros((G, frames), dtype=np.int64)
    for j, t in enumerate(gts):
        n = min(len(t), frames)
        pres_g[j, :n], area_g[j, :n] = t.present[:n], t.areas[:n]

    for f in range(frames):
        di = np.flatnonzero(pres_d[:, f])
        gj = np.flatnonzero(pres_g[:, f])
        if di.size == 0 or gj.size == 0:
            continue
        ad, ag = area_d[di, f], area_g[gj, f]
        if uniform:
            _add_intersections(inter, di, gj, [dts[i].segs[f] for i in di], [gts[j].segs[f] for j in gj], ad, ag)
            continue
        # Mixed sizes: intersect each size group separately, count mismatched pairs as lost.
        size_d = [(dts[i].segs[f]["size"][0], dts[i].segs[f]["size"][1]) for i in di]
        size_g = [(gts[j].segs[f]["size"][0], gts[j].segs[f]["size"][1]) for j in gj]
        same = np.array([[sd == sg for sg in size_g] for sd in size_d], dtype=bool)
        mismatch = mismatch or not same.all()
        lost[np.ix_(di, gj)] += np.where(same, 0, ad[:, None] + ag[None, :])
        for size in set(size_d) & set(size_g):
            sd = np.array([s == size for s in size_d])
            sg = np.array([s == size for s in size_g])
            _add_intersections(inter, di[sd], gj[sg], [dts[i].segs[f] for i in di[sd]],
                               [gts[j].segs[f] for j in gj[sg]], ad[sd], ag[sg])

    # Sum of both tracks' areas over the first min(L_d, L_g) frames, for every pair.
    cum_d = _cumulative([t.areas for t in dts], int(len_d.max()))
    cum_g = _cumulative([t.areas for t in gts], int(len_g.max()))
    limit = np.minimum(len_d[:, None], len_g[None, :])
    total = np.take_along_axis(cum_d, limit, axis=1) + np.take_along_axis(cum_g, limit.T, axis=1).T
    union = total - inter - lost
    np.divide(inter.astype(np.float64), union.astype(np.float64), out=ious, where=union > 0)
    return ious, mismatch


def track_iou_matrices(pairs: Sequence[tuple[Sequence[Track], Sequence[Track]]],
                       workers: int = 1) -> list[tuple[np.ndarray, bool]]:
    """:func:`track_iou_matrix` of every ``(dts, gts)`` pair, in order.

    With ``workers`` > 1 and at least :data:`PARALLEL_MIN_MASKS` predicted masks the pairs are
    split over that many forked processes (:func:`crossvis.parallel.forked_map`: they read the
    tracks from the parent's memory; only the small IoU matrices travel back). The results are
    identical to the serial ones.
    """
    masks = sum(len(t) for dts, gts in pairs if gts for t in dts)
    if masks < PARALLEL_MIN_MASKS:
        workers = 1
    return forked_map(lambda k: track_iou_matrix(*pairs[k]), len(pairs), workers)


def _add_intersections(inter: np.ndarray, di: np.ndarray, gj: np.ndarray, drle: list, grle: list,
                       ad: np.ndarray, ag: np.ndarray) -> None:
    """Add |d ∩ g| of one frame to ``inter[di, gj]``, recovered exactly from pycocotools' IoU."""
    if di.size == 0 or gj.size == 0:
        return
    iou = np.asarray(mask_utils.iou(drle, grle, [0] * len(grle)), dtype=np.float64).reshape(di.size, gj.size)
    # iou = I / (a + b - I)  =>  I = iou (a + b) / (1 + iou); exact after rounding for any real mask size.
    inter[np.ix_(di, gj)] += np.rint(iou * (ad[:, None] + ag[None, :]) / (1.0 + iou)).astype(np.int64)
