"""The YouTube-VIS evaluator: the official ytvoseval AP/AR without a pycocotools fork.

Reproduces youtubevos/cocoapi ``ytvoseval`` (and its mmdet 3.3.0 copy ``YTVISeval``) number for
number, quirks included (reference ``vis-evaluation.md`` §3): per-(video, category) stable score sort
and top 100, track IoU over the shorter frame list, IoU thresholds ``linspace(.5, .95, 10)``, 101
recall thresholds, maxDets 1/10/100 per video and category, inclusive area bins on the mean track
area (128², 256²), crowd ground truth that absorbs many predictions, stable mergesort across
videos, the ``np.spacing(1)`` precision epsilon, and ``-1`` for undefined cells.

Two deliberate differences: ground-truth track ids that are 0 or repeated are rejected (the
official code silently mis-scores them), and a missing ``iscrowd`` reads as 0 (the official code
raises KeyError).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from crossvis.eval.annotations import GroundTruth, load_ground_truth
from crossvis.eval.jsonio import read_json
from crossvis.eval.predictions import prepare_predictions
from crossvis.eval.tracks import Track, track_iou_matrix

__all__ = ["YTVISEvaluator", "evaluate_ytvis", "IOU_THRESHOLDS", "RECALL_THRESHOLDS", "MAX_DETS", "AREA_RANGES",
           "METRIC_KEYS"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
#: Inclusive bounds on the mean per-frame track area in px², in the official order.
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 128.0 ** 2), "medium": (128.0 ** 2, 256.0 ** 2),
               "large": (256.0 ** 2, 1e10)}
#: The 12 summary metrics in the official ``stats`` order.
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class YTVISEvaluator:
    """Scores YouTube-VIS results against one ground truth, prepared once.

    Args:
        gt: the annotation dict or a path to its JSON, in the per-track YouTube-VIS layout or the
            per-frame CocoVID layout. It is never modified.

    After :meth:`evaluate`, ``precision`` (float64 [T=10, R=101, K, A=4, M=3]), ``recall``
    ([T, K, A, M]) and ``stats`` (float64 [12]) hold the official arrays of the last run.
    """

    def __init__(self, gt: dict | str | os.PathLike) -> None:
        self.gt: GroundTruth = load_ground_truth(gt)
        self.precision: np.ndarray | None = None
        self.recall: np.ndarray | None = None
        self.stats: np.ndarray | None = None

    def evaluate(self, results: list[dict] | str | os.PathLike, *, allow_empty: bool = False) -> dict[str, float]:
        """Score ``results`` (a list of prediction dicts or a path to a results JSON; not modified).

        An empty results list is an error (the official code crashes on it) unless ``allow_empty``,
        which scores it as no detections: 0 for every metric that has ground truth.

        Returns:
            ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
            "ARl"}`` as fractions (−1 where undefined) followed by ``"AP/<category name>"`` for every
            category (the mean precision at area "all", maxDet 100; −1 without ground truth).

        Raises:
            CrossVISError: unreadable files, malformed results, results for unknown videos.
        """
        source = "results"
        if isinstance(results, (str, os.PathLike)):
            source = f"results file {os.fspath(results)}"
            results = read_json(results, "results file")
        predictions = prepare_predictions(results, self.gt, source, allow_empty)
        cells = self._match_all(predictions)
        self.precision, self.recall = _accumulate(cells, len(self.gt.category_ids))
        self.stats = _summarize(self.precision, self.recall)
        return self._as_dict()

    # -- per (video, category): track IoU and matching --------------------------------------------
    def _match_all(self, predictions: dict[tuple, list[Track]]) -> list[list["_Cell"]]:
        """Match every (video, category); returns cells[k][a] accumulated over videos in id order."""
        gt = self.gt
        areas = list(AREA_RANGES.values())
        cells = [[_Cell() for _ in areas] for _ in gt.category_ids]
        mismatched = []
        for vid in gt.video_ids:
            for k, cat in enumerate(gt.category_ids):
                gts = gt.tracks.get((vid, cat), [])
                dts = _top_scored(predictions.get((vid, cat), []))
                if not gts and not dts:
                    continue
                ious, mismatch = track_iou_matrix(dts, gts)
                if mismatch:
                    mismatched.append(vid)
                dt_area = np.array([d.avg_area for d in dts], dtype=np.float64)
                for a, (lo, hi) in enumerate(areas):
                    gt_ignore = [g.ignore or g.avg_area < lo or g.avg_area > hi for g in gts]
                    dt_outside = (dt_area < lo) | (dt_area > hi)
                    matched, dt_ignore = _match(ious, gt_ignore, [g.crowd for g in gts], dt_outside)
                    cells[k][a].add([d.score for d in dts], matched, dt_ignore, gt_ignore.count(False))
        if mismatched:
            videos = sorted(set(mismatched), key=mismatched.index)
            more = f" (and {len(videos) - 1} more videos)" if len(videos) > 1 else ""
            warnings.warn(f"predicted masks and ground truth differ in size in video {videos[0]!r}{more}; such "
                          "frames count 0 intersection and 0 union as in the official evaluation - predict "
                          "masks at the video's original size", stacklevel=3)
        return cells

    def _as_dict(self) -> dict[str, float]:
        out = {key: float(v) for key, v in zip(METRIC_KEYS, self.stats)}
        names = [self.gt.category_names[c] for c in self.gt.category_ids]
        for k, (cat, name) in enumerate(zip(self.gt.category_ids, names)):
            label = name if names.count(name) == 1 else f"{name} ({cat})"
            p = self.precision[:, :, k, 0, -1]
            out[f"AP/{label}"] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        return out


def evaluate_ytvis(gt: dict | str | os.PathLike, results: list[dict] | str | os.PathLike, *,
                   allow_empty: bool = False) -> dict[str, float]:
    """Official YouTube-VIS AP/AR of ``results`` against ``gt`` (see :meth:`YTVISEvaluator.evaluate`)."""
    return YTVISEvaluator(gt).evaluate(results, allow_empty=allow_empty)


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
    """Matches of one (category, area range) gathered over videos in id order."""

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


def _accumulate(cells: list[list[_Cell]], num_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision [T, R, K, A, M] and recall [T, K, A, M], −1 where a cell has no non-ignored GT."""
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((T, R, num_categories, A, M))
    recall = -np.ones((T, num_categories, A, M))
    for k in range(num_categories):
        for a in range(A):
            cell = cells[k][a]
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
                recall[:, k, a, m] = rc[:, -1] if n else 0
                if n == 0:
                    precision[:, :, k, a, m] = 0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(T):
                    idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    precision[t, :, k, a, m] = np.where(idx < n, pr[t, np.minimum(idx, n - 1)], 0.0)
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 official stats: mean over cells > −1, or −1 when there are none."""
    area_index = {name: i for i, name in enumerate(AREA_RANGES)}

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def ap(iou: float | None = None, area: str = "all", max_det: int = MAX_DETS[-1]) -> float:
        p = precision if iou is None else precision[np.where(IOU_THRESHOLDS == iou)[0]]
        return mean(p[:, :, :, area_index[area], MAX_DETS.index(max_det)])

    def ar(area: str = "all", max_det: int = MAX_DETS[-1]) -> float:
        return mean(recall[:, :, area_index[area], MAX_DETS.index(max_det)])

    return np.array([ap(), ap(0.5), ap(0.75), ap(area="small"), ap(area="medium"), ap(area="large"),
                     ar(max_det=1), ar(max_det=10), ar(), ar("small"), ar("medium"), ar("large")])
