"""YouTube-VIS ground truth prepared for scoring (the file format itself lives in :mod:`crossvis.formats`).

Both layouts are accepted: the per-track YouTube-VIS JSON and the per-frame CocoVID layout
(converted with :func:`crossvis.formats.cocovid_to_tracks`, re-exported here as
:func:`cocovid_to_ytvis`). :func:`prepare_ground_truth` validates the file with
:func:`crossvis.formats.load_annotations` (every mask checked once) and builds the
:class:`GroundTruth` the evaluator scores against (the input dict is never modified).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from crossvis.errors import CrossVISError
from crossvis.eval.intersections import MaskTable
from crossvis.eval.ovis import occlusion_score
from crossvis.eval.tracks import Track
from crossvis.formats import cocovid_to_tracks, is_cocovid, load_annotations

__all__ = ["GroundTruth", "GroundTruthMasks", "cocovid_to_ytvis", "is_cocovid", "has_ground_truth", "load_ground_truth",
           "prepare_ground_truth"]

#: The CocoVID -> per-track converter (one rule for track ids: 1, 2, ... in order of first appearance).
cocovid_to_ytvis = cocovid_to_tracks


def has_ground_truth(data: dict) -> bool:
    """Whether a per-track or CocoVID annotation dict carries any annotation (valid/test files do not)."""
    return bool(isinstance(data, dict) and data.get("annotations"))


@dataclass
class GroundTruth:
    """Ground truth ready for scoring.

    Attributes:
        video_ids: sorted unique video ids of the annotation file (annotated or not).
        category_ids: sorted unique category ids.
        category_names: id -> name.
        tracks: (video_id, category_id) -> ground-truth tracks in JSON order.
        source: file name (or "annotations" for a dict) for messages.
        frame_counts: video_id -> number of frames (the video's ``length``, else ``len(file_names)``).
        all_have_occlusion: every scored track carries an ``occlusion`` key (OVIS-style file).
    """

    video_ids: list
    category_ids: list
    category_names: dict
    tracks: dict[tuple, list[Track]]
    source: str
    frame_counts: dict = field(default_factory=dict)
    all_have_occlusion: bool = False
    _masks: Optional["GroundTruthMasks"] = field(default=None, repr=False, compare=False)

    def masks(self) -> "GroundTruthMasks":
        """Every ground-truth mask as a :class:`GroundTruthMasks` (built on first use, then kept)."""
        if self._masks is None:
            self._masks = GroundTruthMasks(self.tracks)
        return self._masks


class GroundTruthMasks:
    """The ground-truth masks of every (video, category) group, for intersecting predictions.

    Args:
        tracks: (video_id, category_id) -> ground-truth tracks in JSON order.

    Attributes:
        table: :class:`~crossvis.eval.intersections.MaskTable` of every present mask.
        group: (video_id, category_id) -> group number g (-1, absent: no ground truth).
        tracks_in, frames_in, base: int64 [groups + 1]: J_g tracks of L_g frames (the longest track;
            the last entry, group -1, has none);
            ``slot[base[g] + j * L_g + f]`` is the table index of track j's mask in frame f, -1
            where absent.
        areas: int64 [masks], the pixel count of each table mask.
    """

    def __init__(self, tracks: dict[tuple, list[Track]]) -> None:
        self.group = {key: g for g, key in enumerate(tracks)}
        groups = [*tracks.values(), []]  # the last group is empty: group -1 means "no ground truth"
        self.tracks_in = np.array([len(ts) for ts in groups], dtype=np.int64)
        self.frames_in = np.array([max((len(t) for t in ts), default=0) for ts in groups], dtype=np.int64)
        sizes = self.tracks_in * self.frames_in
        self.base = np.cumsum(sizes) - sizes
        self.slot = np.full(int(sizes.sum()), -1, dtype=np.int64)
        counts, shapes, areas = [], [], []
        for g, ts in enumerate(groups):
            for j, track in enumerate(ts):
                for f, seg in enumerate(track.segs):
                    if seg is not None:
                        self.slot[self.base[g] + j * self.frames_in[g] + f] = len(counts)
                        counts.append(seg["counts"])
                        shapes.append(seg["size"])
                        areas.append(track.areas[f])
        self.table = MaskTable(counts, shapes)
        self.areas = np.array(areas, dtype=np.int64)


def load_ground_truth(gt: dict | str | os.PathLike, occlusion: bool = False) -> GroundTruth:
    """Read (if a path) and prepare YouTube-VIS ground truth in either layout (``occlusion``: for OVIS)."""
    source = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "annotations"
    return prepare_ground_truth(gt, source, occlusion)


def prepare_ground_truth(gt: dict | str | os.PathLike, source: str = "annotations",
                         occlusion: bool = False) -> GroundTruth:
    """Prepare ground truth as ytvoseval prepares it (see docs/fidelity.md); ``gt`` is not modified.

    The file is validated by :func:`crossvis.formats.load_annotations` (videos need ``id``,
    ``height``, ``width`` and a frame count; ``file_names`` are optional here). Videos and
    categories are sorted by id; ``avg_area`` is the mean of the truthy JSON ``areas`` (which every
    track needs, as officially); ``ignore`` is the truthiness of ``iscrowd`` (missing reads as 0).

    With ``occlusion`` (the OVIS evaluation, cocoapi ``oviseval.py``) every track must carry
    ``occlusion`` labels, which become ``Track.occlusion`` (:func:`crossvis.eval.ovis.occlusion_score`).

    Raises:
        CrossVISError: the first problem of the file (naming the video, track and frame); a track
            without ``areas``; for OVIS, a track without usable ``occlusion`` labels.
    """
    parsed = load_annotations(gt, need_file_names=False, source=source)
    tracks: dict[tuple, list[Track]] = {}
    all_have_occlusion = True
    for entry in parsed.tracks:
        what = f"{source}: track id {entry.id!r}"
        if entry.areas is None:
            raise CrossVISError(f"{what} (video {entry.video_id!r}) has no 'areas' list; the official evaluation "
                                "takes the track's mean area from it (one area or null per frame)")
        truthy = [a for a in entry.areas if a]
        present = np.array([s is not None for s in entry.segmentations], dtype=bool)
        track = Track(video_id=entry.video_id, category_id=entry.category_id, segs=entry.segmentations,
                      present=present, areas=entry.mask_areas,
                      avg_area=float(np.mean(truthy)) if truthy else 0.0,
                      ignore=bool(entry.iscrowd), crowd=int(entry.iscrowd) != 0, index=entry.index)
        all_have_occlusion = all_have_occlusion and entry.occlusion is not None
        if occlusion:
            if entry.occlusion is None:
                raise CrossVISError(f"{what} has no 'occlusion' list; the OVIS evaluation needs per-frame occlusion "
                                    "labels on every ground-truth track (use the YouTube-VIS protocol for files "
                                    "without them)")
            track.occlusion = occlusion_score(entry.occlusion, what)
        tracks.setdefault((track.video_id, track.category_id), []).append(track)
    return GroundTruth(sorted(v.id for v in parsed.videos), [c["id"] for c in parsed.categories],
                       {c["id"]: str(c.get("name", c["id"])) for c in parsed.categories}, tracks, source,
                       {v.id: v.length for v in parsed.videos}, all_have_occlusion and bool(tracks))
