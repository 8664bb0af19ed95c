"""Reading YouTube-VIS-format annotation files (YTVIS 2019/2021, OVIS, and the CocoVID layout).

The file is parsed once; masks stay in their encoded form (uncompressed RLE, compressed RLE or
polygons) and are decoded only for the frames a caller asks for, so a 3,000-video file loads in
seconds and never holds every decoded mask.

Two layouts are accepted:

* **per-track** (the official one): ``videos`` with ``file_names``, ``annotations`` = tracks with
  per-frame ``segmentations`` / ``bboxes`` / ``areas`` lists (``null`` where absent), optional
  OVIS ``occlusion`` lists;
* **CocoVID** (mmdet/mmtracking): ``videos``, ``images`` (one per frame, ``frame_id``,
  ``video_id``) and per-frame ``annotations`` with ``instance_id``; it is converted to tracks on load.

Validation here is limited to what reading needs; ``crossvis dataset check`` lists every problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError

__all__ = ["VideoRecord", "TrackRecord", "VISAnnotations", "load_vis_annotations", "read_json",
           "is_cocovid", "cocovid_to_tracks", "decode_segmentation", "decode_frame_masks"]

_CHECK_HINT = "run `crossvis dataset check` on it to list every problem"


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

    ``segmentations[f]`` is a compressed COCO RLE dict (``counts`` bytes; list counts from the file
    are compressed on load), a polygon list, or None when the instance is absent from frame ``f``.
    """

    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    segmentations: list[Any]
    bboxes: Optional[list[Any]] = None
    areas: Optional[list[Any]] = None
    occlusion: Optional[list[Any]] = None


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


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises CrossVISError naming file, line, column."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CrossVISError(f"annotation file not found: {path}; check the path") from None
    except IsADirectoryError:
        raise CrossVISError(f"{path} is a folder, expected a YouTube-VIS annotation JSON file") from None
    except json.JSONDecodeError as exc:
        raise CrossVISError(
            f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); fix or re-export the file") from None
    except UnicodeDecodeError as exc:
        raise CrossVISError(f"{path}: not a UTF-8 JSON file ({exc.reason})") from None


def is_cocovid(data: dict[str, Any]) -> bool:
    """True for the mmdet/mmtracking CocoVID layout (per-frame ``images`` and ``annotations``)."""
    return "images" in data and not any("file_names" in v for v in data.get("videos") or [])


def cocovid_to_tracks(data: dict[str, Any]) -> dict[str, Any]:
    """Convert a CocoVID dict to the per-track YouTube-VIS layout (the input is not modified).

    Frames are ordered by ``frame_id`` within each video; every per-frame annotation is put at its
    frame's index in the track's ``segmentations``/``bboxes``/``areas`` lists (None elsewhere).
    Tracks are keyed by ``instance_id`` and get it as their ``id``.
    """
    images_by_video: dict[int, list[dict[str, Any]]] = {}
    for img in data.get("images") or []:
        images_by_video.setdefault(int(img["video_id"]), []).append(img)
    frame_pos: dict[int, tuple[int, int]] = {}  # image id -> (video id, frame index)
    videos = []
    for v in data.get("videos") or []:
        vid = int(v["id"])
        frames = sorted(images_by_video.get(vid, []), key=lambda im: int(im.get("frame_id", 0)))
        for i, img in enumerate(frames):
            frame_pos[int(img["id"])] = (vid, i)
        height = v.get("height", frames[0]["height"] if frames else 0)
        width = v.get("width", frames[0]["width"] if frames else 0)
        videos.append({"id": vid, "height": height, "width": width, "length": len(frames),
                       "file_names": [img["file_name"] for img in frames]})
    lengths = {v["id"]: v["length"] for v in videos}
    tracks: dict[tuple[int, int], dict[str, Any]] = {}
    for ann in data.get("annotations") or []:
        if int(ann["image_id"]) not in frame_pos:
            raise CrossVISError(f"CocoVID annotation {ann.get('id')} refers to unknown image_id "
                                f"{ann['image_id']}")
        vid, f = frame_pos[int(ann["image_id"])]
        key = (vid, int(ann.get("instance_id", ann.get("id"))))
        track = tracks.get(key)
        if track is None:
            n = lengths[vid]
            track = tracks[key] = {"id": key[1], "video_id": vid, "category_id": ann["category_id"],
                                   "iscrowd": ann.get("iscrowd", 0), "segmentations": [None] * n,
                                   "bboxes": [None] * n, "areas": [None] * n}
        track["segmentations"][f] = ann.get("segmentation")
        track["bboxes"][f] = ann.get("bbox")
        track["areas"][f] = ann.get("area")
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "videos")}
    out["videos"] = videos
    out["annotations"] = list(tracks.values())
    return out


def load_vis_annotations(path: str | Path) -> VISAnnotations:
    """Read a YouTube-VIS-format annotation file (per-track or CocoVID layout).

    Raises:
        CrossVISError: the file is missing or malformed, or a key needed for reading is missing
            or inconsistent (wrong list length, unknown video or category id, duplicate ids).
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "videos" not in data:
        raise CrossVISError(f"{path}: not a YouTube-VIS annotation file (no top-level 'videos' key)")
    if is_cocovid(data):
        data = cocovid_to_tracks(data)
    categories = sorted(data.get("categories") or [], key=lambda c: int(c["id"]))
    if len({int(c["id"]) for c in categories}) != len(categories):
        raise CrossVISError(f"{path}: duplicate category ids in 'categories'; {_CHECK_HINT}")
    videos: list[VideoRecord] = []
    for i, v in enumerate(data["videos"] or []):
        try:
            videos.append(VideoRecord(int(v["id"]), int(v["height"]), int(v["width"]),
                                      list(v["file_names"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise CrossVISError(f"{path}: videos[{i}] lacks a valid {exc} field (needs id, height, width, "
                                f"file_names)") from None
    by_id = {v.id: v for v in videos}
    if len(by_id) != len(videos):
        raise CrossVISError(f"{path}: duplicate video ids; {_CHECK_HINT}")
    raw_tracks = data.get("annotations")
    tracks: dict[int, list[TrackRecord]] = {v.id: [] for v in videos}
    known_categories = {int(c["id"]) for c in categories}
    seen: set[int] = set()
    for ann in raw_tracks or []:
        track = _track_record(path, ann, by_id, known_categories)
        if track.id in seen:
            raise CrossVISError(f"{path}: duplicate annotation id {track.id}; {_CHECK_HINT}")
        seen.add(track.id)
        tracks[track.video_id].append(track)
    return VISAnnotations(path, videos, tracks, categories, has_annotations=bool(raw_tracks))


def _track_record(path: Path, ann: dict[str, Any], videos: dict[int, VideoRecord],
                  categories: set[int]) -> TrackRecord:
    where = f"{path}: annotation {ann.get('id')!r}"
    try:
        track = TrackRecord(int(ann["id"]), int(ann["video_id"]), int(ann["category_id"]),
                            bool(ann.get("iscrowd", 0)), ann["segmentations"], ann.get("bboxes"),
                            ann.get("areas"), ann.get("occlusion"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CrossVISError(f"{where} lacks a valid {exc} field (needs id, video_id, category_id, "
                            f"segmentations)") from None
    video = videos.get(track.video_id)
    if video is None:
        raise CrossVISError(f"{where} refers to unknown video_id {track.video_id}; {_CHECK_HINT}")
    if track.category_id not in categories:
        raise CrossVISError(f"{where} has category_id {track.category_id}, which is not in 'categories'; "
                            f"{_CHECK_HINT}")
    for key in ("segmentations", "bboxes", "areas", "occlusion"):
        values = getattr(track, key)
        if values is not None and len(values) != len(video):
            raise CrossVISError(f"{where}: '{key}' has {len(values)} entries but video {video.id} has "
                                f"{len(video)} frames; {_CHECK_HINT}")
    track.segmentations = _compact_segmentations(track.segmentations, video.height, video.width, where)
    return track


def _compact_segmentations(segmentations: list[Any], height: int, width: int, where: str) -> list[Any]:
    """Store every RLE as compressed COCO RLE (bytes counts); polygons and None are kept as they are.

    Uncompressed counts parsed from JSON are Python ints (about 36 bytes each); compressed RLE takes
    about one byte per run, so a large training file stays small in memory and cheap to share with
    data-loader worker processes.
    """
    out = list(segmentations)
    uncompressed = []
    for f, seg in enumerate(out):
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            out[f] = {"size": seg.get("size", [height, width]), "counts": seg["counts"].encode("ascii")}
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            size = seg.get("size")
            if not (isinstance(size, list) and len(size) == 2) or sum(seg["counts"]) != size[0] * size[1]:
                raise CrossVISError(f"{where}: frame {f}: uncompressed RLE counts do not sum to the mask "
                                    f"size {size}; {_CHECK_HINT}")
            uncompressed.append(f)
    if uncompressed:
        try:
            rles = mask_utils.frPyObjects([out[f] for f in uncompressed], height, width)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CrossVISError(f"{where}: invalid RLE counts ({exc}); {_CHECK_HINT}") from None
        for f, rle in zip(uncompressed, rles):
            out[f] = rle
    return out


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one frame's mask to a uint8 [height, width] array of 0/1.

    Accepts uncompressed RLE (``counts`` a list of ints, column-major), compressed RLE (``counts`` a
    string or bytes) and polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists, merged into one mask).

    Raises:
        CrossVISError: the encoding is not recognised or its ``size`` differs from (height, width).
    """
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = [int(s) for s in segmentation.get("size", (height, width))]
        if size != [height, width]:
            raise CrossVISError(f"mask size {size} differs from the video size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise CrossVISError(f"RLE counts must be a list or a string, got {type(counts).__name__}")
    elif isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    else:
        raise CrossVISError(f"unrecognised mask encoding {type(segmentation).__name__}; expected RLE or polygons")
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def decode_frame_masks(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """Decode several masks of one frame: uint8 [N, height, width]."""
    if not segmentations:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.stack([decode_segmentation(s, height, width) for s in segmentations])
