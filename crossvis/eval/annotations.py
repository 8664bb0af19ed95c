"""YouTube-VIS ground truth: layout detection, CocoVID conversion and preparation for scoring.

Two layouts are accepted:

- **per-track** (the official YouTube-VIS JSON): one annotation per instance with per-frame
  ``segmentations`` / ``areas`` / ``bboxes`` lists (``null`` where absent);
- **CocoVID** (mmdet/mmtracking): ``videos``, ``images`` with ``frame_id`` and ``video_id``, and
  one annotation per frame with ``instance_id``, ``segmentation``, ``area``, ``bbox``.

:func:`cocovid_to_ytvis` turns the second into the first. :func:`prepare_ground_truth` builds the
:class:`GroundTruth` the evaluator scores against (the input dict is never modified).
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.eval.jsonio import read_json
from crossvis.eval.ovis import occlusion_score
from crossvis.eval.tracks import Track, rle_areas
from crossvis.errors import CrossVISError

__all__ = ["GroundTruth", "cocovid_to_ytvis", "is_cocovid", "has_ground_truth", "load_ground_truth",
           "prepare_ground_truth"]


def is_cocovid(data: dict) -> bool:
    """Whether ``data`` is in the per-frame CocoVID layout (it has ``images`` and per-frame annotations)."""
    if not isinstance(data, dict) or "images" not in data:
        return False
    anns = data.get("annotations") or []
    return not anns or not isinstance(anns[0], dict) or "segmentations" not in anns[0]


def has_ground_truth(data: dict) -> bool:
    """Whether a per-track or CocoVID annotation dict carries any annotation (valid/test files do not)."""
    return bool(isinstance(data, dict) and data.get("annotations"))


def cocovid_to_ytvis(data: dict) -> dict:
    """Convert a CocoVID annotation dict to the YouTube-VIS per-track layout (a new dict).

    Annotations are grouped by (video, ``instance_id``) in order of first appearance; each track gets
    ``segmentations``, ``areas`` and ``bboxes`` lists over the video's frames (the number of its
    images, indexed by ``frame_id``) with ``None`` where the instance is not annotated, ``id`` =
    1, 2, ... in that order, and keeps its ``instance_id``. Videos gain ``length`` and ``file_names``.

    Raises:
        CrossVISError: a missing key, an unknown image/video, or a ``frame_id`` outside the video.
    """
    if not isinstance(data, dict):
        raise CrossVISError("CocoVID annotations must be a JSON object with videos, images and annotations")
    for key in ("videos", "images", "categories"):
        if not isinstance(data.get(key), list):
            raise CrossVISError(f"CocoVID annotations: key {key!r} is missing or not a list")
    videos = {}
    for v in data["videos"]:
        _require(v, ("id",), "video")
        videos[v["id"]] = dict(v)
    frames_of: dict[Any, list[dict]] = {vid: [] for vid in videos}
    images = {}
    for img in data["images"]:
        _require(img, ("id", "video_id", "frame_id"), "image")
        if img["video_id"] not in videos:
            raise CrossVISError(f"CocoVID image {img['id']} refers to unknown video_id {img['video_id']!r}")
        images[img["id"]] = img
        frames_of[img["video_id"]].append(img)
    for vid, imgs in frames_of.items():
        imgs.sort(key=lambda im: im["frame_id"])
        videos[vid]["length"] = len(imgs)
        videos[vid]["file_names"] = [im.get("file_name") for im in imgs]

    tracks: dict[tuple, dict] = {}
    for n, ann in enumerate(data.get("annotations") or []):
        _require(ann, ("image_id", "category_id", "instance_id"), f"annotation #{n}")
        img = images.get(ann["image_id"])
        if img is None:
            raise CrossVISError(f"CocoVID annotation #{n} refers to unknown image_id {ann['image_id']!r}")
        vid, frame = img["video_id"], img["frame_id"]
        length = videos[vid]["length"]
        if not isinstance(frame, int) or not 0 <= frame < length:
            raise CrossVISError(f"CocoVID image {img['id']} has frame_id {frame!r} outside 0..{length - 1} "
                                f"(video {vid!r} has {length} images)")
        key = (vid, ann["instance_id"])
        track = tracks.get(key)
        if track is None:
            track = tracks[key] = {
                "id": len(tracks) + 1, "instance_id": ann["instance_id"], "video_id": vid,
                "category_id": ann["category_id"], "iscrowd": ann.get("iscrowd", 0),
                "segmentations": [None] * length, "areas": [None] * length, "bboxes": [None] * length}
        track["segmentations"][frame] = ann.get("segmentation")
        track["areas"][frame] = ann.get("area")
        track["bboxes"][frame] = ann.get("bbox")
    out = {k: v for k, v in data.items() if k not in ("videos", "images", "annotations")}
    out["videos"] = list(videos.values())
    out["annotations"] = list(tracks.values())
    return out


def _require(obj: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(obj, dict):
        raise CrossVISError(f"{what} must be a JSON object, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise CrossVISError(f"{what} has no {key!r} key")


@dataclass
class GroundTruth:
    """Ground truth ready for scoring.

    Attributes:
        video_ids: sorted unique video ids of the annotation file (annotated or not).
        category_ids: sorted unique category ids.
        category_names: id -> name.
        tracks: (video_id, category_id) -> ground-truth tracks in JSON order.
        source: file name or "<dict>" for messages.
        frame_counts: video_id -> number of frames, from the video's ``length`` (else its
            ``file_names``, else its first ground-truth track); read for OVIS only, else empty.
        all_have_occlusion: every scored track carries an ``occlusion`` key (OVIS-style file).
    """

    video_ids: list
    category_ids: list
    category_names: dict
    tracks: dict[tuple, list[Track]]
    source: str
    frame_counts: dict = field(default_factory=dict)
    all_have_occlusion: bool = False


def load_ground_truth(gt: dict | str | os.PathLike, occlusion: bool = False) -> GroundTruth:
    """Read (if a path) and prepare YouTube-VIS ground truth in either layout (``occlusion``: for OVIS)."""
    source = "<dict>"
    if isinstance(gt, (str, os.PathLike)):
        source = os.fspath(gt)
        gt = read_json(gt, "annotations file")
    if not isinstance(gt, dict):
        raise CrossVISError(f"annotations {source} must be a JSON object with videos, categories and annotations")
    if is_cocovid(gt):
        gt = cocovid_to_ytvis(gt)
    return prepare_ground_truth(gt, source, occlusion)


def prepare_ground_truth(gt: dict, source: str = "<dict>", occlusion: bool = False) -> GroundTruth:
    """Prepare a per-track YouTube-VIS dict (as ytvoseval prepares it, see docs/fidelity.md); ``gt`` is not modified.

    Videos and categories are sorted by id; tracks of unknown videos or categories are dropped;
    masks are converted to compressed RLE; ``avg_area`` is the mean of the truthy JSON ``areas``;
    ``ignore`` is the truthiness of ``iscrowd`` (missing ``iscrowd`` reads as 0).

    With ``occlusion`` (the OVIS evaluation, cocoapi ``oviseval.py``) every kept track must carry ``occlusion`` labels,
    which become ``Track.occlusion`` (:func:`crossvis.eval.ovis.occlusion_score`), and must list
    as many frames as its video (``frame_counts``).

    Raises:
        CrossVISError: malformed videos, categories or tracks; for OVIS, a track without usable
            ``occlusion`` labels or with the wrong number of frames (naming the track id).
    """
    for key in ("videos", "categories"):
        if not isinstance(gt.get(key), list):
            raise CrossVISError(f"annotations {source}: key {key!r} is missing or not a list")
    videos = {}
    for v in gt["videos"]:
        _require(v, ("id",), f"annotations {source}: video")
        videos[v["id"]] = v
    categories = {}
    for c in gt["categories"]:
        _require(c, ("id",), f"annotations {source}: category")
        categories[c["id"]] = str(c.get("name", c["id"]))
    video_ids, category_ids = _sorted_ids(videos, "video", source), _sorted_ids(categories, "category", source)
    cat_set = set(category_ids)

    tracks: dict[tuple, list[Track]] = {}
    seen_ids: set = set()
    all_have_occlusion = True
    frame_counts = {vid: _declared_frames(v) for vid, v in videos.items()} if occlusion else {}
    for n, ann in enumerate(gt.get("annotations") or []):
        what = f"annotations {source}: annotation #{n}"
        _require(ann, ("id", "video_id", "category_id", "segmentations", "areas"), what)
        if ann["id"] == 0 or ann["id"] in seen_ids:
            raise CrossVISError(f"{what} has id {ann['id']!r}, which is 0 or used twice; track ids must be "
                                "unique and non-zero (the official evaluation mis-scores them)")
        seen_ids.add(ann["id"])
        if ann["video_id"] not in videos or ann["category_id"] not in cat_set:
            continue
        track = _gt_track(ann, videos[ann["video_id"]], n, what)
        all_have_occlusion = all_have_occlusion and "occlusion" in ann
        if occlusion:
            _add_occlusion(track, ann, frame_counts, f"annotations {source}: track id {ann['id']!r}")
        tracks.setdefault((track.video_id, track.category_id), []).append(track)
    return GroundTruth(video_ids, category_ids, categories, tracks, source,
                       {vid: n for vid, n in frame_counts.items() if n is not None},
                       all_have_occlusion and bool(tracks))


def _declared_frames(video: dict) -> int | None:
    """A video's frame count from ``length``, else ``file_names``; None when it declares neither."""
    if isinstance(video.get("length"), int):
        return video["length"]
    if isinstance(video.get("file_names"), list):
        return len(video["file_names"])
    return None


def _add_occlusion(track: Track, ann: dict, frame_counts: dict, what: str) -> None:
    """Set the OVIS occlusion score of ``track``; check its length against (or record) the video's."""
    if "occlusion" not in ann:
        raise CrossVISError(f"{what} has no 'occlusion' list; the OVIS evaluation needs per-frame occlusion "
                            "labels on every ground-truth track (use the YouTube-VIS protocol for files without them)")
    track.occlusion = occlusion_score(ann["occlusion"], what)
    expected = frame_counts.get(track.video_id)
    if expected is None:
        frame_counts[track.video_id] = len(track)
    elif len(track) != expected:
        raise CrossVISError(f"{what} has {len(track)} 'segmentations' entries but video {track.video_id!r} has "
                            f"{expected} frames; the OVIS evaluation needs one entry per frame")


def _sorted_ids(ids: dict, what: str, source: str) -> list:
    try:
        return sorted(ids)
    except TypeError:
        raise CrossVISError(f"annotations {source}: {what} ids must all be numbers (or all strings)") from None


def _gt_track(ann: dict, video: dict, n: int, what: str) -> Track:
    segs_in, areas_in = ann["segmentations"], ann["areas"]
    if not isinstance(segs_in, list) or not isinstance(areas_in, list):
        raise CrossVISError(f"{what}: 'segmentations' and 'areas' must be lists over the video's frames")
    segs = [_to_rle(s, video, f, what) if s else None for f, s in enumerate(segs_in)]
    present = np.array([s is not None for s in segs], dtype=bool)
    areas = np.zeros(len(segs), dtype=np.int64)
    if present.any():
        areas[present] = rle_areas([s for s in segs if s is not None])
    truthy = [a for a in areas_in if a]
    if not all(isinstance(a, numbers.Real) for a in truthy):
        raise CrossVISError(f"{what}: 'areas' must hold numbers or null")
    avg_area = float(np.array(truthy).mean()) if truthy else 0.0
    iscrowd = ann.get("iscrowd", 0)
    return Track(video_id=ann["video_id"], category_id=ann["category_id"], segs=segs, present=present,
                 areas=areas, avg_area=avg_area,
                 ignore=bool(iscrowd), crowd=int(iscrowd) != 0, index=n)


def _to_rle(seg: Any, video: dict, frame: int, what: str) -> dict:
    """A GT frame mask (compressed/uncompressed RLE or polygons) as compressed RLE with an int size."""
    try:
        if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
            rle = seg
        elif isinstance(seg, dict):
            rle = mask_utils.frPyObjects(seg, *seg["size"])
        elif isinstance(seg, list):
            if "height" not in video or "width" not in video:
                raise CrossVISError(f"{what}: polygon masks need the video's 'height' and 'width'")
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, video["height"], video["width"]))
        else:
            raise TypeError(type(seg).__name__)
        return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}
    except CrossVISError:
        raise
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        raise CrossVISError(f"{what} frame {frame}: unreadable mask ({exc}); use RLE "
                            "{'size': [h, w], 'counts': ...} or polygons") from None
