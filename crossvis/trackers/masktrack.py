"""MaskTrack R-CNN-style association: a matching likelihood combined with box, score and class cues."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

from crossvis.structures import CrossVISError, FrameDetections
from crossvis.trackers.memory import OnlineTracker

__all__ = ["MaskTrackScoringTracker"]


class MaskTrackScoringTracker(OnlineTracker):
    """Online tracker scoring each (detection, slot) pair as MaskTrack R-CNN does.

    For detection ``i`` the slots are ``[new, track 0, ..., track K-1]``. The matching likelihood is
    ``log_softmax([0, <e_i, m_0>, ..., <e_i, m_{K-1}>])`` (raw embedding dot products against each
    track's last embedding, the "new" slot has logit 0). The slot score is::

        score[i, 1 + k] = log p[i, 1 + k] + w_det * log(s_i) + w_iou * IoU(b_i, b_k) + w_cat * [c_i == c_k]
        score[i, 0]     = log p[i, 0]     + w_det * log(s_i)                         + w_cat

    i.e. the "new" slot counts as class-compatible and has no IoU term, so a detection joins a track
    only when the track's embedding and box cues beat starting a new one.

    Assignment (``assignment``):
      * ``"masktrack"`` (default) — MaskTrack R-CNN's own rule (``simple_test`` of its
        ``mask_rcnn_track.py``): every detection takes the argmax of its row over
        ``[new, track 0, ..., track K-1]``. "new" starts a track. Detections are visited in detector
        order (descending score); the first claimant of a track gets it, and a later detection whose
        slot score is strictly higher takes the track over. A claimant that loses a track (or
        proposes to one already held by a higher slot score) gets **no id** (-1): it is neither
        matched nor turned into a new track, and it is not reported.
      * ``"hungarian"`` — a one-to-one assignment maximising the total score with
        :func:`scipy.optimize.linear_sum_assignment` over the ``N x (K + N)`` matrix of track slots
        plus one private "new" slot per detection.
      * ``"greedy"`` — global greedy on the same matrix: repeatedly take the highest-scoring
        (detection, slot) pair whose detection and track are both still free.
    With ``"hungarian"`` and ``"greedy"`` every detection gets an id (a matched track or a new one).
    New tracks are numbered in descending detection-score order. Tracks are never deleted; a
    matched track's memory becomes the detection's embedding, box and class (MaskTrack R-CNN keeps
    the track's first class; with the class term the two rarely differ).

    Args:
        w_det: weight of ``log(detection score)`` (MaskTrack R-CNN: 1.0).
        w_iou: weight of the box IoU (2.0).
        w_cat: weight of the class agreement (10.0).
        assignment: ``"masktrack"`` (MaskTrack R-CNN's rule), ``"hungarian"`` or ``"greedy"``.

    The coefficients are those of MaskTrack R-CNN's reference code
    (``mmdet/models/detectors/mask_rcnn_track.py``). The log-score term is the same for every slot
    of a detection: it only matters when detections are compared, i.e. between claimants of one
    track (``"masktrack"``) and in the greedy order.
    """

    ASSIGNMENTS = ("masktrack", "hungarian", "greedy")

    def __init__(self, w_det: float = 1.0, w_iou: float = 2.0, w_cat: float = 10.0,
                 assignment: str = "masktrack") -> None:
        if assignment not in self.ASSIGNMENTS:
            raise CrossVISError(
                f"tracker.assignment must be one of {', '.join(self.ASSIGNMENTS)}, got {assignment!r}")
        self.w_det, self.w_iou, self.w_cat = float(w_det), float(w_iou), float(w_cat)
        self.assignment = assignment
        self.reset()

    def slot_scores(self, det: FrameDetections) -> Tensor:
        """float32 [N, 1 + K]: column 0 is the "new" slot, column ``1 + k`` is track ``k``."""
        if det.embeddings is None:
            raise CrossVISError("tracker 'masktrack' needs detection embeddings; use a model with an "
                                "embedding head or the 'crossvis' tracker")
        self.memory.check(det)
        mem = self.memory
        n, k = len(det), len(mem)
        emb = det.embeddings.float()
        logits = torch.cat([emb.new_zeros((n, 1)), emb @ mem.embeddings.T if k else emb.new_zeros((n, 0))], 1)
        scores = F.log_softmax(logits, dim=1)
        scores = scores + self.w_det * torch.log(det.scores.float().clamp_min(1e-12))[:, None]
        if k:
            iou = box_iou(det.boxes.float(), mem.boxes)
            same = (det.labels[:, None] == mem.labels[None, :]).float()
            scores[:, 1:] += self.w_iou * iou + self.w_cat * same
        scores[:, 0] += self.w_cat
        return scores

    def update(self, det: FrameDetections) -> Tensor:
        """Associate one frame's detections; returns int64 [N] track ids (-1: no id, ``"masktrack"`` only)."""
        frame = self.frame_index
        self.frame_index += 1
        n = len(det)
        device = det.boxes.device
        ids = torch.full((n,), -1, dtype=torch.int64, device=device)
        if n == 0:
            return ids
        self.memory.to(device)
        num_tracks = len(self.memory)
        scores = self.slot_scores(det)
        if self.assignment == "masktrack":
            rows, cols = _masktrack_claims(scores.cpu().numpy())
            return self._apply(det, ids, rows, cols, num_tracks, frame)
        # N x (K + N): track slots, then a private "new" slot per detection.
        full = torch.full((n, num_tracks + n), float("-inf"), device=device)
        full[:, :num_tracks] = scores[:, 1:]
        diagonal = torch.arange(n, device=device)
        full[diagonal, num_tracks + diagonal] = scores[:, 0]
        rows, cols = self._assign(full.cpu().numpy())
        return self._apply(det, ids, rows, cols, num_tracks, frame)

    def _apply(self, det: FrameDetections, ids: Tensor, rows: np.ndarray, cols: np.ndarray, num_tracks: int,
               frame: int) -> Tensor:
        """Write the assignment (detection ``rows[j]`` → column ``cols[j]``: a track when below
        ``num_tracks``, else a new track) into ``ids`` and the memory."""
        device = ids.device
        matched = cols < num_tracks
        if matched.any():
            tracks = torch.as_tensor(cols[matched], dtype=torch.int64, device=device)
            index = torch.as_tensor(rows[matched], dtype=torch.int64, device=device)
            ids[index] = tracks
            self.memory.replace(tracks, det, index, frame)
        new = torch.as_tensor(rows[~matched], dtype=torch.int64, device=device)
        if new.numel():
            new = new[torch.argsort(det.scores[new], descending=True, stable=True)]
            ids[new] = torch.arange(num_tracks, num_tracks + new.numel(), device=device)
            self.memory.add(det, new, frame)
        return ids

    def _assign(self, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.assignment == "hungarian":
            finite = np.where(np.isfinite(full), full, -1e9)
            return linear_sum_assignment(finite, maximize=True)
        rows, cols = [], []
        order = np.argsort(-full, axis=None, kind="stable")
        free_rows, free_cols = np.ones(full.shape[0], bool), np.ones(full.shape[1], bool)
        for flat in order:
            r, c = divmod(int(flat), full.shape[1])
            if free_rows[r] and free_cols[c] and np.isfinite(full[r, c]):
                rows.append(r)
                cols.append(c)
                free_rows[r] = free_cols[c] = False
                if not free_rows.any():
                    break
        return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(w_det={self.w_det}, w_iou={self.w_iou}, w_cat={self.w_cat}, "
                f"assignment={self.assignment!r})")



def _masktrack_claims(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MaskTrack R-CNN's assignment on the ``N x (1 + K)`` slot scores (column 0 = "new").

    Returns ``(rows, cols)`` in the column convention of :meth:`MaskTrackScoringTracker._apply`:
    ``cols[j] = k`` (< K) for a detection holding track ``k``, ``K + rows[j]`` for a new track;
    detections that lost their claimed track are absent.
    """
    num_tracks = scores.shape[1] - 1
    best = scores.argmax(axis=1)
    holder: dict[int, tuple[float, int]] = {}
    new_rows = []
    for i, slot in enumerate(best.tolist()):
        if slot == 0:
            new_rows.append(i)
            continue
        score = float(scores[i, slot])
        if slot - 1 not in holder or score > holder[slot - 1][0]:
            holder[slot - 1] = (score, i)      # a later, higher-scoring claimant takes the track over
    tracks = sorted(holder)
    rows = [holder[k][1] for k in tracks] + new_rows
    cols = tracks + [num_tracks + i for i in new_rows]
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
