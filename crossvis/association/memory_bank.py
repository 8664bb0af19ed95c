"""Memory-bank tracker: bi-directional softmax matching against a per-track embedding memory.

The association rule of QDTrack (``QuasiDenseEmbedTracker``) and IDOL (its VIS tracker), as one
component whose every rule is an option. Per frame:

1. **Duplicate suppression** (optional): detections are visited in descending score order; one
   whose box IoU with a kept, higher-scoring detection exceeds ``duplicate_iou`` (or
   ``backdrop_iou`` when its score is below ``keep_score_threshold``) is dropped.
2. **Matching**: similarities ``f = e_det · m_trackᵀ`` between the detection embeddings and the
   memory embeddings of the live tracks and of the recent unmatched detections ("backdrops",
   QDTrack's extra negatives). ``bisoftmax``: ``score = (softmax_rows(f) + softmax_cols(f)) / 2``;
   ``cosine``: the cosine similarity. With ``with_categories`` a pair of different classes
   scores 0. In score order, a detection takes its best column if that score exceeds
   ``match_threshold``: a track column assigns the track (exclusively: the column is zeroed for
   every other detection) when the detection's score is at least ``keep_score_threshold``; a
   weaker detection whose match exceeds ``suppress_threshold`` is dropped instead (it is a
   duplicate of a tracked object). A backdrop column leaves the detection unmatched.
3. **New tracks**: an unmatched detection with score ≥ ``start_score_threshold`` whose box IoU with
   every detection already assigned in this frame is ≤ ``new_track_iou`` starts a track.
4. **Memory**: ``memory="momentum"`` (QDTrack): ``m ← (1 − μ) m + μ e`` with μ = ``momentum``;
   ``memory="temporal"`` (IDOL): the last ``memory_length`` embeddings of the track, averaged with
   weights growing linearly with recency (×detection score with ``score_weighted``).
   A track unseen for more than ``max_age`` frames is forgotten (until then it can be
   re-identified after an occlusion); the remaining unmatched detections that do not overlap a
   higher-scoring detection by more than ``backdrop_iou`` become backdrops for
   ``backdrop_frames`` frames.

Memory use is O(live tracks · memory_length); forgotten tracks are deleted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["MemoryBankTracker"]

_METRICS = ("bisoftmax", "cosine")
_MEMORIES = ("momentum", "temporal")


@dataclass
class _Track:
    label: int
    last_frame: int
    embeddings: list[Tensor] = field(default_factory=list)  # oldest first, each float32 [D]
    scores: list[float] = field(default_factory=list)


class MemoryBankTracker:
    """QDTrack / IDOL style online tracker (see the module docstring for the rules).

    Defaults are IDOL's VIS tracker values where IDOL and QDTrack differ (QDTrack's in brackets).

    Args:
        match_threshold: a detection matches its best column when the score exceeds this (0.5).
        start_score_threshold: detection score needed to start a track (IDOL 0.5 [QDTrack 0.8]).
        keep_score_threshold: detection score needed to continue a track (IDOL 0.1 [0.5]).
        suppress_threshold: a weaker detection matching a track above this is dropped (0.5).
        max_age: a track can be matched while ``frame − last_frame ≤ max_age``, i.e. after at
            most ``max_age − 1`` frames unseen (QDTrack and IDOL memorise tracks for 10 frames).
        backdrop_frames: unmatched detections kept as negatives for this many frames (1); 0 off.
        metric: ``"bisoftmax"`` (both papers) or ``"cosine"``.
        with_categories: only same-class detection/track pairs can match (True).
        memory: ``"temporal"`` (IDOL) or ``"momentum"`` (QDTrack).
        momentum: weight of the new embedding in the momentum memory (QDTrack 0.8).
        memory_length: embeddings kept per track by the temporal memory (3).
        score_weighted: weight the temporal memory by detection score (True).
        duplicate_iou: box IoU above which a lower-scoring detection is a duplicate (0.7); None off.
        backdrop_iou: the same for detections below ``keep_score_threshold``, and the overlap
            that keeps an unmatched detection out of the backdrops (IDOL 0.5 [0.3]).
        new_track_iou: a new track is not started for a detection overlapping an assigned
            detection of the frame by more than this box IoU (0.5); None off.
    """

    def __init__(self, match_threshold: float = 0.5, start_score_threshold: float = 0.5,
                 keep_score_threshold: float = 0.1, suppress_threshold: float = 0.5, max_age: int = 10,
                 backdrop_frames: int = 1, metric: str = "bisoftmax", with_categories: bool = True,
                 memory: str = "temporal", momentum: float = 0.8, memory_length: int = 3,
                 score_weighted: bool = True, duplicate_iou: Optional[float] = 0.7,
                 backdrop_iou: Optional[float] = 0.5, new_track_iou: Optional[float] = 0.5) -> None:
        if metric not in _METRICS:
            raise CrossVISError(f"tracker.metric must be one of {', '.join(_METRICS)}, got {metric!r}")
        if memory not in _MEMORIES:
            raise CrossVISError(f"tracker.memory must be one of {', '.join(_MEMORIES)}, got {memory!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
            raise CrossVISError(f"tracker.max_age must be an integer >= 1, got {max_age!r}")
        if not 0.0 < float(momentum) <= 1.0:
            raise CrossVISError(f"tracker.momentum must be in (0, 1], got {momentum!r}")
        if int(memory_length) < 1 or int(backdrop_frames) < 0:
            raise CrossVISError("tracker.memory_length must be >= 1 and tracker.backdrop_frames >= 0")
        self.match_threshold = float(match_threshold)
        self.start_score_threshold = float(start_score_threshold)
        self.keep_score_threshold = float(keep_score_threshold)
        self.suppress_threshold = float(suppress_threshold)
        self.max_age = int(max_age)
        self.backdrop_frames = int(backdrop_frames)
        self.metric, self.with_categories, self.memory = metric, bool(with_categories), memory
        self.momentum, self.memory_length = float(momentum), int(memory_length)
        self.score_weighted = bool(score_weighted)
        self.duplicate_iou = None if duplicate_iou is None else float(duplicate_iou)
        self.backdrop_iou = None if backdrop_iou is None else float(backdrop_iou)
        self.new_track_iou = None if new_track_iou is None else float(new_track_iou)
        self.reset()

    def reset(self) -> None:
        """Forget every track and backdrop (call between videos)."""
        self.tracks: dict[int, _Track] = {}
        self.backdrops: list[tuple[int, Tensor, Tensor]] = []  # (frame, embeddings [M, D], labels [M])
        self.frame_index = 0
        self.next_id = 0

    @property
    def num_tracks(self) -> int:
        """Number of tracks still in memory."""
        return len(self.tracks)

    def update(self, det: FrameDetections) -> Tensor:
        """Associate one frame's detections.

        Args:
            det: ``boxes`` float32 [N, 4], ``scores`` float32 [N], ``labels`` int64 [N],
                ``embeddings`` float32 [N, D] (required when N > 0).

        Returns:
            int64 [N] on ``det``'s device: track ids (0, 1, ... in creation order), −1 for dropped
            detections (duplicates, weak matches, unmatched detections too weak to start a track).
        """
        frame = self.frame_index
        self.frame_index += 1
        self._forget(frame)
        n = len(det)
        ids = torch.full((n,), -1, dtype=torch.int64)
        if n == 0:
            return ids.to(det.boxes.device)
        if det.embeddings is None:
            raise CrossVISError("tracker 'memory_bank' needs detection embeddings; use a model with an embedding "
                                "head (model.head.embed_dim) or another tracker")
        boxes = det.boxes.detach().float().cpu()
        scores = det.scores.detach().float().cpu()
        labels = det.labels.detach().long().cpu()
        emb = det.embeddings.detach().float().cpu()
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[self._deduplicate(boxes[order], scores[order])]

        track_ids = list(self.tracks)
        columns, col_labels = self._memory_matrix(track_ids, emb.shape[1])
        dropped = torch.zeros(n, dtype=torch.bool)
        if columns.shape[0]:
            match = self._match_scores(emb[order], labels[order], columns, col_labels)
            for row, i in enumerate(order.tolist()):
                conf, col = match[row].max(dim=0)
                if float(conf) <= self.match_threshold:
                    continue
                col = int(col)
                if col >= len(track_ids):
                    continue  # best match is a backdrop: unmatched
                if float(scores[i]) >= self.keep_score_threshold:
                    ids[i] = track_ids[col]
                    match[:, col] = 0.0
                elif float(conf) > self.suppress_threshold:
                    dropped[i] = True

        for i in order.tolist():
            if ids[i] >= 0 or dropped[i] or float(scores[i]) < self.start_score_threshold:
                continue
            if self.new_track_iou is not None:
                assigned = torch.nonzero(ids >= 0).squeeze(1)
                if assigned.numel() and float(box_iou(boxes[i:i + 1], boxes[assigned]).max()) > self.new_track_iou:
                    continue
            ids[i] = self.next_id
            self.tracks[self.next_id] = _Track(label=int(labels[i]), last_frame=frame)
            self.next_id += 1

        for i in torch.nonzero(ids >= 0).squeeze(1).tolist():
            self._remember(self.tracks[int(ids[i])], emb[i], float(scores[i]), int(labels[i]), frame)
        if self.backdrop_frames:
            self._add_backdrops(frame, order, ids, dropped, boxes, emb, labels)
        return ids.to(det.boxes.device)

    # -- rules ------------------------------------------------------------------------------------
    def _forget(self, frame: int) -> None:
        self.tracks = {k: t for k, t in self.tracks.items() if frame - t.last_frame <= self.max_age}
        self.backdrops = [b for b in self.backdrops if frame - b[0] <= self.backdrop_frames]

    def _deduplicate(self, boxes: Tensor, scores: Tensor) -> Tensor:
        """Positions (in the given score order) of the detections that are not duplicates."""
        if self.duplicate_iou is None or boxes.shape[0] < 2:
            return torch.arange(boxes.shape[0])
        iou = box_iou(boxes, boxes)
        kept: list[int] = []
        for i in range(boxes.shape[0]):
            weak = float(scores[i]) < self.keep_score_threshold and self.backdrop_iou is not None
            limit = self.backdrop_iou if weak else self.duplicate_iou
            if kept and float(iou[i, kept].max()) > limit:
                continue
            kept.append(i)
        return torch.tensor(kept, dtype=torch.int64)

    def _add_backdrops(self, frame: int, order: Tensor, ids: Tensor, dropped: Tensor, boxes: Tensor, emb: Tensor,
                       labels: Tensor) -> None:
        """Keep this frame's unmatched detections as negatives, except those overlapping a
        higher-scoring detection by more than ``backdrop_iou`` (near-duplicates of a tracked object
        would take its probability mass in the bi-softmax)."""
        candidate = (ids[order] < 0) & ~dropped[order]
        if self.backdrop_iou is not None and order.numel() > 1:
            iou = box_iou(boxes[order], boxes[order]).tril(diagonal=-1)
            candidate &= ~(iou > self.backdrop_iou).any(dim=1)
        keep = order[candidate]
        if keep.numel():
            self.backdrops.append((frame, emb[keep], labels[keep]))

    def _memory_matrix(self, track_ids: list[int], dim: int) -> tuple[Tensor, Tensor]:
        """Memory embeddings float32 [K + M, D] (tracks, then backdrops) and their labels int64 [K + M]."""
        rows = [self._track_embedding(self.tracks[k]) for k in track_ids]
        labels = [self.tracks[k].label for k in track_ids]
        emb = torch.stack(rows) if rows else torch.zeros((0, dim))
        lab = torch.tensor(labels, dtype=torch.int64)
        for _, b_emb, b_lab in self.backdrops:
            emb, lab = torch.cat([emb, b_emb]), torch.cat([lab, b_lab])
        if emb.shape[0] and emb.shape[1] != dim:
            raise CrossVISError(f"tracker: embedding size changed from {emb.shape[1]} to {dim} within one video; "
                                f"call reset() between videos")
        return emb, lab

    def _match_scores(self, emb: Tensor, labels: Tensor, columns: Tensor, col_labels: Tensor) -> Tensor:
        """Match scores float32 [N, K + M] of detections (rows) against memory columns."""
        if self.metric == "bisoftmax":
            sim = emb @ columns.T
            score = 0.5 * (sim.softmax(dim=1) + sim.softmax(dim=0))
        else:
            score = F.normalize(emb, dim=1) @ F.normalize(columns, dim=1).T
        if self.with_categories:
            score = score * (labels[:, None] == col_labels[None, :]).float()
        return score

    def _track_embedding(self, track: _Track) -> Tensor:
        if self.memory == "momentum" or len(track.embeddings) == 1:
            return track.embeddings[-1]
        stacked = torch.stack(track.embeddings)
        weights = torch.arange(1, stacked.shape[0] + 1, dtype=torch.float32)
        if self.score_weighted:
            weights = weights * torch.tensor(track.scores, dtype=torch.float32)
        return (weights[:, None] * stacked).sum(dim=0) / weights.sum().clamp(min=1e-12)

    def _remember(self, track: _Track, embedding: Tensor, score: float, label: int, frame: int) -> None:
        if self.memory == "momentum":
            if track.embeddings:
                embedding = (1.0 - self.momentum) * track.embeddings[-1] + self.momentum * embedding
            track.embeddings, track.scores = [embedding], [score]
        else:
            track.embeddings = (track.embeddings + [embedding])[-self.memory_length:]
            track.scores = (track.scores + [score])[-self.memory_length:]
        track.last_frame = frame
        track.label = label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(metric={self.metric!r}, memory={self.memory!r}, max_age={self.max_age}, "
                f"match_threshold={self.match_threshold}, start_score_threshold={self.start_score_threshold})")
