"""The YouTube-VIS evaluator: the official ytvoseval AP/AR without a pycocotools fork.

Reproduces youtubevos/cocoapi ``ytvoseval`` (and its mmdet 3.3.0 copy ``YTVISeval``) number for
number, quirks included (youtubevos/cocoapi ``ytvoseval.py``; docs/fidelity.md lists the quirks): per-(video, category) stable score sort
and top 100, track IoU over the shorter frame list, IoU thresholds ``linspace(.5, .95, 10)``, 101
recall thresholds, maxDets 1/10/100 per video and category, inclusive area bins on the mean track
area (128², 256²), crowd ground truth that absorbs many predictions, stable mergesort across
videos, the ``np.spacing(1)`` precision epsilon, and ``-1`` for undefined cells.

Two deliberate differences: ground-truth track ids that are 0 or repeated are rejected (the
official code silently mis-scores them), and a missing ``iscrowd`` reads as 0 (the official code
raises KeyError).

``protocol="ovis"`` gives the official OVIS evaluation (qjy981010/cocoapi ``oviseval``): the
same matching and accumulation with an extra occlusion axis. Per area range, each occlusion range
of :data:`~crossvis.eval.ovis.OCCLUSION_RANGES` also ignores the ground truth whose occlusion score
falls outside it; unmatched predictions are filtered by area only, so they are false positives in
every occlusion range. Predictions must list exactly the frames of their video.
"""
from __future__ import annotations

import contextlib
import gc
import os
import warnings
from typing import Iterator, Sequence

import numpy as np

from crossvis.errors import CrossVISError
from crossvis.eval.annotations import GroundTruth, load_ground_truth
from crossvis.eval.ovis import OCCLUSION_RANGES
from crossvis.eval.predictions import prepare_predictions, prepare_predictions_file
from crossvis.eval.tracks import Track, track_iou_matrix

__all__ = ["YTVISEvaluator", "OVISEvaluator", "evaluate_ytvis", "evaluate_ovis", "IOU_THRESHOLDS",
           "RECALL_THRESHOLDS", "MAX_DETS", "AREA_RANGES", "METRIC_KEYS", "OVIS_METRIC_KEYS", "PROTOCOLS"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
#: Inclusive bounds on the mean per-frame track area in px², in the official order.
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 128.0 ** 2), "medium": (128.0 ** 2, 256.0 ** 2),
               "large": (256.0 ** 2, 1e10)}
#: The 12 summary metrics in the official ``stats`` order.
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: The 18 OVIS summary metrics in the official ``stats`` order (so/mo/ho: light/medium/heavy occlusion).
OVIS_METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APso", "APmo", "APho",
                    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "ARso", "ARmo", "ARho")
PROTOCOLS = ("ytvis", "ovis")
# metric -> (AP or AR, IoU threshold or None for all, area range, occlusion range, maxDet)
_STAT_CELLS = {
    "AP": ("AP", None, "all", "all", 100), "AP50": ("AP", 0.5, "all", "all", 100),
    "AP75": ("AP", 0.75, "all", "all", 100), "APs": ("AP", None, "small", "all", 100),
    "APm": ("AP", None, "medium", "all", 100), "APl": ("AP", None, "large", "all", 100),
    "APso": ("AP", None, "all", "light", 100), "APmo": ("AP", None, "all", "medium", 100),
    "APho": ("AP", None, "all", "heavy", 100),
    "AR1": ("AR", None, "all", "all", 1), "AR10": ("AR", None, "all", "all", 10),
    "AR100": ("AR", None, "all", "all", 100), "ARs": ("AR", None, "small", "all", 100),
    "ARm": ("AR", None, "medium", "all", 100), "ARl": ("AR", None, "large", "all", 100),
    "ARso": ("AR", None, "all", "light", 100), "ARmo": ("AR", None, "all", "medium", 100),
    "ARho": ("AR", None, "all", "heavy", 100),
}


class YTVISEvaluator:
    """Scores YouTube-VIS (or OVIS) results against one ground truth, prepared once.

    Args:
        gt: the annotation dict or a path to its JSON, in the per-track YouTube-VIS layout or the
            per-frame CocoVID layout. It is never modified.
        protocol: ``"ytvis"`` (official YouTube-VIS) or ``"ovis"`` (official OVIS: every ground-truth
            track needs per-frame ``occlusion`` labels; 18 metrics with APso/APmo/APho, ARso/ARmo/ARho).
        workers: processes that validate the results and intersect their masks with the ground
            truth (Linux; large inputs only, see :func:`~crossvis.eval.predictions.prepare_predictions`);
            1 = all in this process. The numbers do not depend on it.

    After :meth:`evaluate`, ``precision`` (float64 [T=10, R=101, K, A=4, M=3]; OVIS:
    [T, R, K, A, O=4, M]), ``recall`` ([T, K, A, M]; OVIS: [T, K, A, O, M]) and ``stats`` (float64
    [12]; OVIS: [18]) hold the official arrays of the last run.

    Raises:
        CrossVISError: unreadable or malformed annotations, an unknown protocol, and for OVIS a
            track without usable ``occlusion`` labels.
    """

    def __init__(self, gt: dict | str | os.PathLike, protocol: str = "ytvis", *, workers: int = 1) -> None:
        if protocol not in PROTOCOLS:
            raise CrossVISError(f"unknown evaluation protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise CrossVISError(f"workers must be an integer >= 1, got {workers!r}")
        self.protocol = protocol
        self.workers = workers
        self.metric_keys = OVIS_METRIC_KEYS if protocol == "ovis" else METRIC_KEYS
        with _collector_paused():
            self.gt: GroundTruth = load_ground_truth(gt, occlusion=protocol == "ovis")
        self.precision: np.ndarray | None = None
        self.recall: np.ndarray | None = None
        self.stats: np.ndarray | None = None

    def evaluate(self, results: list[dict] | str | os.PathLike, *, allow_empty: bool = False) -> dict[str, float]:
        """Score ``results`` (a list of prediction dicts or a path to a results JSON; not modified).

        An empty results list is an error (the official code crashes on it) unless ``allow_empty``,
        which scores it as no detections: 0 for every metric that has ground truth.

        Returns:
            ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
            "ARl"}`` (OVIS: :data:`OVIS_METRIC_KEYS`) as fractions (−1 where undefined) followed by
            ``"AP/<category name>"`` for every category (the mean precision at area "all",
            occlusion "all", maxDet 100; −1 without ground truth).

        Raises:
            CrossVISError: unreadable files, malformed results, results for unknown videos; for
                OVIS, a prediction whose frame count differs from its video's.
        """
        with _collector_paused():
            if isinstance(results, (str, os.PathLike)):
                predictions = prepare_predictions_file(results, self.gt, f"results file {os.fspath(results)}",
                                                       allow_empty, self.protocol == "ovis", self.workers)
            else:
                predictions = prepare_predictions(results, self.gt, "results", allow_empty,
                                                  exact_length=self.protocol == "ovis", workers=self.workers)
            cells = self._match_all(predictions)
        precision, recall = _accumulate(cells, len(self.gt.category_ids))
        self.stats = _summarize(precision, recall, self._occlusion_ranges(), self.metric_keys)
        per_category = self._per_category_ap(precision)
        if self.protocol == "ytvis":  # no occlusion axis
            precision, recall = precision[:, :, :, :, 0], recall[:, :, :, 0]
        self.precision, self.recall = precision, recall
        return {**{key: float(v) for key, v in zip(self.metric_keys, self.stats)}, **per_category}

    def _occlusion_ranges(self) -> dict[str, tuple[float, float] | None]:
        """The occlusion axis: OVIS's ranges, or one unfiltered "all" entry for YouTube-VIS."""
        return OCCLUSION_RANGES if self.protocol == "ovis" else {"all": None}

    # -- per (video, category): track IoU and matching --------------------------------------------
    def _match_all(self, predictions: dict[tuple, list[Track]]) -> list[list[list["_Cell"]]]:
        """Match every (video, category); returns cells[k][a][o] accumulated over videos in id order."""
        gt = self.gt
        areas = list(AREA_RANGES.values())
        occlusions = list(self._occlusion_ranges().values())
        cells = [[[_Cell() for _ in occlusions] for _ in areas] for _ in gt.category_ids]
        mismatched = []
        for vid, (k, cat) in ((vid, kc) for vid in gt.video_ids for kc in enumerate(gt.category_ids)):
            gts = gt.tracks.get((vid, cat), [])
            dts = _top_scored(predictions.get((vid, cat), []))
            if not gts and not dts:
                continue
            ious, mismatch = track_iou_matrix(dts, gts)
            if mismatch:
                mismatched.append(vid)
            dt_area = np.array([d.avg_area for d in dts], dtype=np.float64)
            scores, crowd = [d.score for d in dts], [g.crowd for g in gts]
            for a, (lo, hi) in enumerate(areas):
                area_ignore = [g.ignore or g.avg_area < lo or g.avg_area > hi for g in gts]
                dt_outside = (dt_area < lo) | (dt_area > hi)  # unmatched: filtered by area only
                for o, occ in enumerate(occlusions):
                    gt_ignore = area_ignore if occ is None else [
                        ig or g.occlusion < occ[0] or g.occlusion > occ[1] for ig, g in zip(area_ignore, gts)]
                    matched, dt_ignore = _match(ious, gt_ignore, crowd, dt_outside)
                    cells[k][a][o].add(scores, matched, dt_ignore, gt_ignore.count(False))
        if mismatched:
            videos = sorted(set(mismatched), key=mismatched.index)
            more = f" (and {len(videos) - 1} more videos)" if len(videos) > 1 else ""
            warnings.warn(f"predicted masks and ground truth differ in size in video {videos[0]!r}{more}; such "
                          "frames count 0 intersection and 0 union as in the official evaluation - predict "
                          "masks at the video's original size", stacklevel=3)
        return cells

    def _per_category_ap(self, precision: np.ndarray) -> dict[str, float]:
        """``"AP/<name>"`` from precision [T, R, K, A, O, M] at area and occlusion "all", maxDet 100."""
        out = {}
        names = [self.gt.category_names[c] for c in self.gt.category_ids]
        for k, (cat, name) in enumerate(zip(self.gt.category_ids, names)):
            label = name if names.count(name) == 1 else f"{name} ({cat})"
            p = precision[:, :, k, 0, 0, -1]
            out[f"AP/{label}"] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        return out


class OVISEvaluator(YTVISEvaluator):
    """:class:`YTVISEvaluator` with ``protocol="ovis"`` (the registry's ``ovis`` evaluator)."""

    def __init__(self, gt: dict | str | os.PathLike) -> None:
        super().__init__(gt, protocol="ovis")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while millions of small, acyclic objects (parsed
    JSON, per-frame masks) are made: its generation scans would otherwise re-walk them again and
    again (measured: ~25% of a large evaluation). Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def evaluate_ytvis(gt: dict | str | os.PathLike, results: list[dict] | str | os.PathLike, *,
                   allow_empty: bool = False) -> dict[str, float]:
    """Official YouTube-VIS AP/AR of ``results`` against ``gt`` (see :meth:`YTVISEvaluator.evaluate`)."""
    return YTVISEvaluator(gt).evaluate(results, allow_empty=allow_empty)


def evaluate_ovis(gt: dict | str | os.PathLike, results: list[dict] | str | os.PathLike, *,
                  allow_empty: bool = False) -> dict[str, float]:
    """Official OVIS AP/AR (:data:`OVIS_METRIC_KEYS`) of ``results`` against ``gt`` with occlusion labels."""
    return YTVISEvaluator(gt, protocol="ovis").evaluate(results, allow_empty=allow_empty)


def _top_scored(dts: list[Track]) -> list[Track]:
    """Stable sort by descending score, first ``MAX_DETS[-1]`` kept."""
    order = np.argsort([-d.score for d in dts], kind="mergesort")
    return [dts[i] for i in order[:MAX_DETS[-1]]]


def _match(ious: np.ndarray, gt_ignore: Sequence[bool], gt_crowd: Sequence[bool],
           dt_outside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted predictions to ground truth at every IoU threshold.

    Args:
        ious: float64 [D, G] track IoUs (GT in JSON order).
        gt_ignore: [G] crowd or outside the area range.
        gt_crowd: [G] crowd tracks (may be matched many times).
        dt_outside: bool [D] prediction mean area outside the area range.

    Returns:
        ``matched`` bool [T, D] and ``ignored`` bool [T, D]: a matched prediction takes its GT's
        ignore flag; an unmatched one is ignored when ``dt_outside``.
    """
    T, D, G = len(IOU_THRESHOLDS), ious.shape[0], len(gt_ignore)
    matched = np.zeros((T, D), dtype=bool)
    ignored = np.zeros((T, D), dtype=bool)
    if D and G:
        order = [g for g in range(G) if not gt_ignore[g]] + [g for g in range(G) if gt_ignore[g]]
        rows = ious[:, order].tolist()
        row_max = [max(r) for r in rows]
        ig = [gt_ignore[g] for g in order]
        crowd = [gt_crowd[g] for g in order]
        for t, thr in enumerate(IOU_THRESHOLDS.tolist()):
            bar0 = min(thr, 1 - 1e-10)
            taken = [False] * G
            for d, row in enumerate(rows):
                if row_max[d] < bar0:
                    continue
                bar, m = bar0, -1
                for g in range(G):
                    if taken[g] and not crowd[g]:
                        continue
                    if m > -1 and not ig[m] and ig[g]:
                        break
                    if row[g] < bar:
                        continue
                    bar, m = row[g], g
                if m == -1:
                    continue
                matched[t, d] = True
                ignored[t, d] = ig[m]
                taken[m] = True
    ignored |= ~matched & dt_outside[None, :]
    return matched, ignored


class _Cell:
    """Matches of one (category, area range, occlusion range) gathered over videos in id order."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.ranks: list[np.ndarray] = []
        self.matched: list[np.ndarray] = []
        self.ignored: list[np.ndarray] = []
        self.num_gt = 0  # ground truth that is not ignored

    def add(self, scores: list[float], matched: np.ndarray, ignored: np.ndarray, num_gt: int) -> None:
        self.scores.append(np.asarray(scores, dtype=np.float64))
        self.ranks.append(np.arange(len(scores)))
        self.matched.append(matched)
        self.ignored.append(ignored)
        self.num_gt += num_gt


def _accumulate(cells: list[list[list[_Cell]]], num_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision [T, R, K, A, O, M] and recall [T, K, A, O, M], −1 where a cell has no non-ignored GT."""
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    O = len(cells[0][0]) if cells else 1
    precision = -np.ones((T, R, num_categories, A, O, M))
    recall = -np.ones((T, num_categories, A, O, M))
    for k, a, o in np.ndindex(num_categories, A, O):
        cell = cells[k][a][o]
        if not cell.scores or cell.num_gt == 0:
            continue
        scores, ranks = np.concatenate(cell.scores), np.concatenate(cell.ranks)
        matched, ignored = np.concatenate(cell.matched, axis=1), np.concatenate(cell.ignored, axis=1)
        for m, max_det in enumerate(MAX_DETS):
            keep = ranks < max_det
            order = np.argsort(-scores[keep], kind="mergesort")
            tm, ti = matched[:, keep][:, order], ignored[:, keep][:, order]
            tp = np.cumsum(tm & ~ti, axis=1).astype(np.float64)
            fp = np.cumsum(~tm & ~ti, axis=1).astype(np.float64)
            rc = tp / cell.num_gt
            pr = tp / (fp + tp + np.spacing(1))
            n = tp.shape[1]
            recall[:, k, a, o, m] = rc[:, -1] if n else 0
            if n == 0:
                precision[:, :, k, a, o, m] = 0
                continue
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(T):
                idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                precision[t, :, k, a, o, m] = np.where(idx < n, pr[t, np.minimum(idx, n - 1)], 0.0)
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray, occlusion_ranges: dict,
               keys: Sequence[str]) -> np.ndarray:
    """The official stats named by ``keys`` (see ``_STAT_CELLS``): mean over cells > −1, or −1 if none.

    Args:
        precision: float64 [T, R, K, A, O, M]; recall: float64 [T, K, A, O, M].
        occlusion_ranges: the names of the O axis, in order.
        keys: metric names, e.g. :data:`METRIC_KEYS`.
    """
    area_index = {name: i for i, name in enumerate(AREA_RANGES)}
    occ_index = {name: i for i, name in enumerate(occlusion_ranges)}

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    stats = []
    for key in keys:
        kind, iou, area, occ, max_det = _STAT_CELLS[key]
        a, o, m = area_index[area], occ_index[occ], MAX_DETS.index(max_det)
        if kind == "AP":
            p = precision if iou is None else precision[np.where(IOU_THRESHOLDS == iou)[0]]
            stats.append(mean(p[:, :, :, a, o, m]))
        else:
            stats.append(mean(recall[:, :, a, o, m]))
    return np.array(stats)
