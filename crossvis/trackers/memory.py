"""Per-track memory shared by the online trackers: one row per track, never one per frame."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["TrackMemory", "OnlineTracker"]


class TrackMemory:
    """What a tracker remembers of each track: its last detection's embedding, box, label and frame.

    Row ``k`` describes track id ``k`` (ids are 0, 1, 2, ... in creation order), so the memory is
    O(number of tracks) whatever the video length.

    Attributes:
        embeddings: float32 [K, D] or None when the detections carry no embeddings.
        boxes: float32 [K, 4] xyxy in original-frame pixels.
        labels: int64 [K] 0-based class index.
        last_frame: int64 [K] index of the frame the track was last updated in.
    """

    def __init__(self) -> None:
        self.embeddings: Optional[Tensor] = None
        self.boxes = torch.zeros((0, 4))
        self.labels = torch.zeros((0,), dtype=torch.int64)
        self.last_frame = torch.zeros((0,), dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def check(self, det: FrameDetections) -> None:
        """Raise :class:`CrossVISError` when ``det`` cannot be compared with the memory."""
        has_emb = det.embeddings is not None
        if len(self) and has_emb != (self.embeddings is not None):
            state = "without" if has_emb else "with"
            raise CrossVISError(
                f"tracker: this frame's detections {'have' if has_emb else 'lack'} embeddings but the "
                f"tracks were started {state} them; use one model for a whole video and call reset() between videos")
        if has_emb and self.embeddings is not None and det.embeddings.shape[1] != self.embeddings.shape[1]:
            raise CrossVISError(
                f"tracker: embedding size changed from {self.embeddings.shape[1]} to {det.embeddings.shape[1]} "
                "within one video; call reset() between videos")

    def add(self, det: FrameDetections, index: Tensor, frame: int,
            embeddings: Optional[Tensor] = None) -> None:
        """Append one new track per detection in ``index`` (int64 [M]), in that order.

        ``embeddings`` (float32 [M, D]) overrides the stored embeddings (e.g. normalised ones).
        """
        if index.numel() == 0:
            return
        emb = embeddings if embeddings is not None else (
            det.embeddings[index] if det.embeddings is not None else None)
        if emb is not None:
            emb = emb.float()
            self.embeddings = emb if self.embeddings is None else torch.cat([self.embeddings, emb])
        self.boxes = torch.cat([self.boxes, det.boxes[index].float()])
        self.labels = torch.cat([self.labels, det.labels[index].long()])
        self.last_frame = torch.cat([self.last_frame, torch.full((index.numel(),), frame, dtype=torch.int64)])

    def replace(self, tracks: Tensor, det: FrameDetections, index: Tensor, frame: int,
                embeddings: Optional[Tensor] = None) -> None:
        """Make detection ``index[j]`` the last detection of track ``tracks[j]`` (both int64 [M])."""
        if tracks.numel() == 0:
            return
        if self.embeddings is not None:
            self.embeddings[tracks] = embeddings if embeddings is not None else det.embeddings[index].float()
        self.boxes[tracks] = det.boxes[index].float()
        self.labels[tracks] = det.labels[index].long()
        self.last_frame[tracks] = frame

    def to(self, device: torch.device) -> None:
        """Move the memory to ``device`` (the device of the incoming detections)."""
        if self.boxes.device == device:
            return
        self.boxes, self.labels, self.last_frame = (
            self.boxes.to(device), self.labels.to(device), self.last_frame.to(device))
        if self.embeddings is not None:
            self.embeddings = self.embeddings.to(device)


class OnlineTracker:
    """Base of the online trackers: a :class:`TrackMemory` and a frame counter per video.

    Subclasses implement ``update(det: FrameDetections) -> Tensor`` (int64 [N] track ids).
    """

    def reset(self) -> None:
        """Forget every track (call between videos)."""
        self.memory = TrackMemory()
        self.frame_index = 0

    @property
    def num_tracks(self) -> int:
        return len(self.memory)

    def update(self, det: FrameDetections) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
