"""Reading YouTube-VIS-format annotation files (YTVIS 2019/2021, OVIS, and the CocoVID layout).

The file is parsed and validated once by :func:`crossvis.formats.load_annotations` (one set of
rules for the readers, the evaluator and ``crossvis dataset check``; see docs/data.md): every mask
is checked at load time and kept as compressed RLE (``counts`` bytes), and is decoded only for the
frames a caller asks for, so a 3,000-video file loads in seconds and never holds every decoded
mask. CocoVID files are converted to tracks with :func:`crossvis.formats.cocovid_to_tracks`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError
from crossvis.formats import check_compressed, check_size, check_uncompressed, cocovid_to_tracks, load_annotations

__all__ = ["VideoRecord", "TrackRecord", "VISAnnotations", "load_vis_annotations", "cocovid_to_tracks",
           "decode_segmentation", "decode_frame_masks"]


@dataclass
class VideoRecord:
    """One video: its JSON ``id``, frame size and frame file names (relative to the image root)."""

    id: int
    height: int
    width: int
    file_names: list[str]

    @property
    def name(self) -> str:
        """The video's folder name, ``file_names[0].split('/')[0]`` (YouTube-VIS convention)."""
        return self.file_names[0].split("/")[0] if self.file_names else str(self.id)

    def __len__(self) -> int:
        return len(self.file_names)


@dataclass
class TrackRecord:
    """One annotated instance through a video, with its masks still encoded.

    ``segmentations[f]`` is a validated compressed COCO RLE dict ``{"size": [h, w], "counts": bytes}``
    (list counts and polygons from the file are converted on load), or None when the instance is
    absent from frame ``f``. ``instance_id`` is the CocoVID instance id (None for per-track files).
    """

    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    segmentations: list[Any]
    bboxes: Optional[list[Any]] = None
    areas: Optional[list[Any]] = None
    occlusion: Optional[list[Any]] = None
    instance_id: Any = None


@dataclass
class VISAnnotations:
    """A parsed annotation file.

    Attributes:
        path: the file it was read from.
        videos: videos in file order.
        tracks: the tracks of each video, keyed by video id (file order inside a video).
        categories: ``{"id", "name", ...}`` dicts sorted by id.
        has_annotations: False for valid/test files whose ``annotations`` is missing, [] or null.
    """

    path: Path
    videos: list[VideoRecord]
    tracks: dict[int, list[TrackRecord]]
    categories: list[dict[str, Any]]
    has_annotations: bool = True
    label_of_category: dict[int, int] = field(init=False)
    identity_of_track: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.label_of_category = {int(c["id"]): i for i, c in enumerate(self.categories)}
        track_ids = sorted(t.id for ts in self.tracks.values() for t in ts)
        self.identity_of_track = {tid: i for i, tid in enumerate(track_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        return [str(c.get("name", c["id"])) for c in self.categories]

    @property
    def num_identities(self) -> int:
        """M, the number of distinct track annotation ids (identity indices are 0..M-1)."""
        return len(self.identity_of_track)

    def video(self, video_id: int) -> VideoRecord:
        for v in self.videos:
            if v.id == video_id:
                return v
        raise KeyError(video_id)


def load_vis_annotations(path: str | Path) -> VISAnnotations:
    """Read a YouTube-VIS-format annotation file (per-track or CocoVID layout).

    Raises:
        CrossVISError: the file is missing or malformed, or breaks a rule of docs/data.md (the
            message names the file, video, annotation and frame of the first problem).
    """
    path = Path(path)
    parsed = load_annotations(path)
    videos = [VideoRecord(v.id, v.height, v.width, list(v.file_names)) for v in parsed.videos]
    tracks: dict[int, list[TrackRecord]] = {v.id: [] for v in videos}
    for t in parsed.tracks:
        tracks[t.video_id].append(TrackRecord(t.id, t.video_id, t.category_id, bool(t.iscrowd), t.segmentations,
                                              t.bboxes, t.areas, t.occlusion, t.instance_id))
    return VISAnnotations(path, videos, tracks, parsed.categories, has_annotations=parsed.has_annotations)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one frame's mask to a uint8 [height, width] array of 0/1, validating it first.

    Accepts uncompressed RLE (``counts`` a list of ints, column-major), compressed RLE (``counts`` a
    string or bytes) and polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists, merged into one mask).

    Raises:
        CrossVISError: the encoding is not recognised, its ``size`` differs from (height, width), or
            its counts are corrupt (do not add up to height × width).
    """
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size", [height, width])
        problem = check_size(size)
        if problem is None and [int(s) for s in size] != [height, width]:
            problem = f"mask size {list(size)} differs from the video size [{height}, {width}]"
        counts = segmentation["counts"]
        if problem is None and isinstance(counts, list):
            problem = check_uncompressed(counts, height, width)[0]
            rle = None if problem else mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        elif problem is None and isinstance(counts, (str, bytes)):
            counts = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
            problem = check_compressed([counts], [(height, width)])[0][0]
            rle = {"size": [height, width], "counts": counts}
        elif problem is None:
            problem = f"RLE counts must be a list or a string, got {type(counts).__name__}"
        if problem:
            raise CrossVISError(problem)
    elif isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    else:
        raise CrossVISError(f"unrecognised mask encoding {type(segmentation).__name__}; expected RLE or polygons")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def decode_frame_masks(segmentations: Sequence[dict], height: int, width: int) -> np.ndarray:
    """Decode several validated compressed RLEs of one frame (as :func:`load_vis_annotations` keeps
    them): uint8 [N, height, width]."""
    if not segmentations:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(list(segmentations)).transpose(2, 0, 1), dtype=np.uint8)
