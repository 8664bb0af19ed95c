"""Turn a stream of tracked frames into YouTube-VIS result entries, encoding masks as frames pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from crossvis.formats import encode_masks
from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["VideoAccumulator", "encode_masks"]


@dataclass
class _Track:
    first_label: int
    score_sum: float = 0.0
    count: int = 0
    votes: dict[int, float] = field(default_factory=dict)
    segmentations: dict[int, dict] = field(default_factory=dict)  # frame index -> RLE


def _encode_pending(det: FrameDetections, keep: Tensor) -> Optional[list[dict]]:
    """The RLE of masks not made yet, straight from what they would be made from (a model's
    pending masks with an ``encode`` method; see :class:`~crossvis.structures.PendingMasks`), or
    None. The masks stay pending: reading ``det.masks`` later still makes them."""
    pending = det.pending_masks
    encode = getattr(pending, "encode", None)
    if encode is None:
        return None
    if keep.numel() != len(det):
        encode = getattr(pending.select(keep), "encode", None)
    return encode() if encode is not None else None


class VideoAccumulator:
    """Collects one video's tracks and writes them in the YouTube-VIS results format.

    Call :meth:`add` once per frame, in order, also for frames without detections (they count as
    frames of the video). Masks are RLE-encoded immediately, so only encoded masks and a few numbers
    per track are kept (no decoded mask of a past frame).

    One entry per track (the official output): ``score`` = mean of the track's detection scores,
    ``category_id`` = ``category_ids[label]`` for the track's category label, ``segmentations`` =
    one compressed RLE (``counts`` a str) per frame where the track has a detection, ``None``
    elsewhere.

    Args:
        category_ids: maps a 0-based label to the dataset's category id; ``None`` uses ``label + 1``
            (the official writer).
        category_rule: ``"first"`` (official) takes the label of the track's first detection;
            ``"vote"`` takes the label with the largest summed detection score (ties: the smaller
            label).
    """

    RULES = ("first", "vote")

    def __init__(self, category_ids: Optional[Sequence[int]] = None, category_rule: str = "first") -> None:
        if category_rule not in self.RULES:
            raise CrossVISError(f"category_rule must be one of {', '.join(self.RULES)}, got {category_rule!r}")
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self.category_rule = category_rule
        self.reset()

    def reset(self) -> None:
        """Start a new video."""
        self.tracks: dict[int, _Track] = {}
        self.num_frames = 0

    def add(self, det: FrameDetections, track_ids: Tensor) -> None:
        """Record one frame: ``det`` (``masks`` bool [N, H, W] required when N > 0) and its track ids
        int64 [N]; detections with id ``-1`` are ignored."""
        frame = self.num_frames
        self.num_frames += 1
        if len(det) != int(track_ids.shape[0]):
            raise CrossVISError(f"accumulator: {len(det)} detections but {int(track_ids.shape[0])} track ids")
        keep = (track_ids >= 0).nonzero().flatten()
        if keep.numel() == 0:
            return
        rles = _encode_pending(det, keep)
        if rles is None:
            if det.masks is None:
                raise CrossVISError("accumulator: detections have no masks; the model must return binary masks")
            # on the process's torch threads: the cores the network just used are free while it encodes
            rles = encode_masks(det.masks if keep.numel() == len(det) else det.masks[keep],
                                threads=torch.get_num_threads())
        ids = track_ids[keep].tolist()
        scores = det.scores[keep].tolist()
        labels = det.labels[keep].tolist()
        for tid, score, label, rle in zip(ids, scores, labels, rles):
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = _Track(first_label=int(label))
            if frame in track.segmentations:
                raise CrossVISError(f"accumulator: track {tid} got two detections in frame {frame}")
            track.score_sum += float(score)
            track.count += 1
            track.votes[int(label)] = track.votes.get(int(label), 0.0) + float(score)
            track.segmentations[frame] = rle

    def category_id(self, label: int) -> int:
        """The dataset category id of a 0-based label."""
        if self.category_ids is None:
            return label + 1
        if not 0 <= label < len(self.category_ids):
            raise CrossVISError(f"accumulator: label {label} has no category id (only {len(self.category_ids)} "
                                "categories given); check the model's num_classes against the annotations")
        return self.category_ids[label]

    def results(self, video_id: int) -> list[dict]:
        """The video's result entries, one per track in id order:
        ``{"video_id", "score", "category_id", "segmentations"}``."""
        entries = []
        for tid in sorted(self.tracks):
            track = self.tracks[tid]
            if self.category_rule == "first":
                label = track.first_label
            else:
                label = min(track.votes, key=lambda c: (-track.votes[c], c))
            segmentations = [track.segmentations.get(f) for f in range(self.num_frames)]
            entries.append({
                "video_id": int(video_id),
                "score": track.score_sum / track.count,
                "category_id": self.category_id(label),
                "segmentations": segmentations,
            })
        return entries
