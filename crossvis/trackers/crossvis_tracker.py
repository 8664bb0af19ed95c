"""The association rule of the official CrossVIS release (``tools/test_vis.py``), as a component."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from crossvis.structures import CrossVISError, FrameDetections
from crossvis.trackers.memory import OnlineTracker

__all__ = ["CrossVISTracker"]


class CrossVISTracker(OnlineTracker):
    """Greedy online tracker: cosine similarity of embeddings + box IoU, gated by class.

    With the default arguments this is exactly the released CrossVIS tracker:

    1. Every detection ``d`` is compared with the **last** detection of every existing track ``k``
       (the memory as it was before this frame): ``score[d, k] = cos(e_d, e_k) + IoU(box_d, box_k)``
       if the classes agree, ``-1`` otherwise. Raw embeddings, boxes in original-frame pixels.
    2. If there is no track or ``max_k score[d, k] < new_track_threshold``, ``d`` is "new";
       otherwise it proposes to its best track.
    3. Detections are processed in descending score order (the detector's order; ties keep the
       input order). A "new" detection starts a track; track ids are 0, 1, 2, ... in creation
       order. The first proposal to a track in this frame is taken; a later proposal with a
       strictly higher match score replaces it. A replaced or losing proposal is dropped: it is
       not turned into a new track and is absent from the results (the official tracker pops it
       from the track's memory). :meth:`update` returns ``-1`` for dropped detections.
    4. The accepted detection becomes the track's last detection. Frames without detections are
       skipped; tracks are never deleted.

    Only each track's last embedding, box, label and frame index are kept (O(tracks) memory).

    Args:
        new_track_threshold: a detection whose best match score is below this starts a new track
            (official: 0.4). Scores lie in [-1, 2].
        embedding_momentum: ``None`` (official) compares with the last detection's embedding. A
            value ``m`` in [0, 1) keeps an exponential moving average of the L2-normalised
            embeddings instead: ``memory = m * memory + (1 - m) * e_new``.
        max_age: ``None`` (official) lets a track be matched after any gap. An integer ``a`` >= 1
            allows a match only while ``frame - last_frame <= a``, where every call to
            :meth:`update` (also one with no detections) is one frame; ``a = 1`` means the track
            must have been seen in the previous frame.
        min_new_score: ``None`` (official) lets every unmatched detection start a track. A value
            ``s`` only lets detections with ``score >= s`` start one; the others get id ``-1``.

    Detections without embeddings (``det.embeddings is None``) are associated by IoU alone (the
    cosine term is 0); one video must not mix frames with and without embeddings.
    """

    def __init__(self, new_track_threshold: float = 0.4, embedding_momentum: Optional[float] = None,
                 max_age: Optional[int] = None, min_new_score: Optional[float] = None) -> None:
        if embedding_momentum is not None and not 0.0 <= float(embedding_momentum) < 1.0:
            raise CrossVISError(
                f"tracker.embedding_momentum must be in [0, 1) or null, got {embedding_momentum!r}")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1):
            raise CrossVISError(f"tracker.max_age must be an integer >= 1 or null, got {max_age!r}")
        if min_new_score is not None and not 0.0 <= float(min_new_score) <= 1.0:
            raise CrossVISError(f"tracker.min_new_score must be in [0, 1] or null, got {min_new_score!r}")
        self.new_track_threshold = float(new_track_threshold)
        self.embedding_momentum = None if embedding_momentum is None else float(embedding_momentum)
        self.max_age = max_age
        self.min_new_score = None if min_new_score is None else float(min_new_score)
        self.reset()

    def match_scores(self, det: FrameDetections) -> Tensor:
        """Match scores of the detections against the current memory: float32 [N, K].

        ``cos + IoU`` for same-class pairs, ``-1`` across classes, ``-inf`` for tracks older than
        ``max_age`` (relative to the frame :meth:`update` would process next).
        """
        self.memory.check(det)
        return self._scores(det, self._normalized(det), self.frame_index)

    def update(self, det: FrameDetections) -> Tensor:
        """Associate one frame's detections with the tracks.

        Args:
            det: the frame's detections (``boxes`` float32 [N, 4], ``scores`` float32 [N],
                ``labels`` int64 [N], ``embeddings`` float32 [N, D] or None).

        Returns:
            int64 [N] on ``det``'s device: the track id of each detection, ``-1`` for a detection
            that was dropped (a losing proposal, or below ``min_new_score``).
        """
        frame = self.frame_index
        self.frame_index += 1
        n = len(det)
        device = det.boxes.device
        ids = torch.full((n,), -1, dtype=torch.int64, device=device)
        if n == 0:
            return ids
        self.memory.check(det)
        self.memory.to(device)
        emb = self._normalized(det)

        num_tracks = len(self.memory)
        if num_tracks:
            best_score, best_track = self._scores(det, emb, frame).max(dim=1)
            best_scores, best_tracks = best_score.tolist(), best_track.tolist()
        order = torch.argsort(det.scores, descending=True, stable=True).tolist()
        det_scores = det.scores.tolist()

        claimed: dict[int, tuple[int, float]] = {}  # track -> (detection, match score)
        new: list[int] = []
        for i in order:
            if num_tracks == 0 or best_scores[i] < self.new_track_threshold:
                if self.min_new_score is None or det_scores[i] >= self.min_new_score:
                    new.append(i)
                continue
            k, s = best_tracks[i], best_scores[i]
            if k not in claimed or s > claimed[k][1]:
                claimed[k] = (i, s)

        if claimed:
            tracks = torch.tensor(list(claimed), dtype=torch.int64, device=device)
            index = torch.tensor([i for i, _ in claimed.values()], dtype=torch.int64, device=device)
            ids[index] = tracks
            self.memory.replace(tracks, det, index, frame, self._updated_embeddings(tracks, emb, index))
        if new:
            index = torch.tensor(new, dtype=torch.int64, device=device)
            ids[index] = torch.arange(num_tracks, num_tracks + len(new), device=device)
            self.memory.add(det, index, frame, None if emb is None else emb[index])
        return ids

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _normalized(det: FrameDetections) -> Optional[Tensor]:
        return None if det.embeddings is None else F.normalize(det.embeddings.float(), dim=1)

    def _scores(self, det: FrameDetections, emb: Optional[Tensor], frame: int) -> Tensor:
        mem = self.memory
        if len(mem) == 0:
            return det.boxes.new_zeros((len(det), 0))
        scores = box_iou(det.boxes.float(), mem.boxes)
        if emb is not None:
            scores = scores + emb @ F.normalize(mem.embeddings, dim=1).T
        scores = scores.masked_fill(det.labels[:, None] != mem.labels[None, :], -1.0)
        if self.max_age is not None:
            too_old = (frame - mem.last_frame) > self.max_age
            scores = scores.masked_fill(too_old[None, :], float("-inf"))
        return scores

    def _updated_embeddings(self, tracks: Tensor, emb: Optional[Tensor], index: Tensor) -> Optional[Tensor]:
        if emb is None:
            return None
        if self.embedding_momentum is None:
            return emb[index]
        m = self.embedding_momentum
        return m * self.memory.embeddings[tracks] + (1.0 - m) * emb[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(new_track_threshold={self.new_track_threshold}, "
                f"embedding_momentum={self.embedding_momentum}, max_age={self.max_age}, "
                f"min_new_score={self.min_new_score})")
