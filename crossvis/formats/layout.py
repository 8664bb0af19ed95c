"""The two annotation layouts: telling them apart, and turning CocoVID into per-track YouTube-VIS.

* **per-track** (the official YouTube-VIS / OVIS JSON): ``videos`` (with ``file_names``) and
  ``annotations`` that are tracks with per-frame ``segmentations`` / ``bboxes`` / ``areas`` lists;
* **CocoVID** (mmdet / mmtracking): ``videos``, ``images`` (one per frame, with ``video_id`` and
  ``frame_id``) and one annotation per instance and frame (``image_id``, ``instance_id``,
  ``segmentation``, ``bbox``, ``area``).

The one rule (:func:`is_cocovid`): a file is CocoVID when it has an ``images`` list and none of its
annotations is a track (carries ``segmentations``). Whether videos list ``file_names`` does not
matter.
"""
from __future__ import annotations

import numbers
from typing import Any

from crossvis.errors import CrossVISError

__all__ = ["is_cocovid", "cocovid_to_tracks"]


def is_cocovid(data: Any) -> bool:
    """Whether ``data`` is in the per-frame CocoVID layout (see the module docstring for the rule)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return False
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        return True
    return not any(isinstance(a, dict) and "segmentations" in a for a in annotations)


def cocovid_to_tracks(data: dict, source: str = "CocoVID annotations") -> dict:
    """Convert a CocoVID dict to the per-track YouTube-VIS layout (a new dict; ``data`` is not modified).

    Frames: each video's images ordered by ``frame_id`` (unique integers within the video, not
    necessarily 0-based or contiguous); a video's ``length`` and ``file_names`` come from them, its
    ``height``/``width`` from the video or else its first image.

    Tracks: per-frame annotations are grouped by (``video_id``, ``instance_id``); every track gets
    ``id`` = 1, 2, ... in order of first appearance in ``annotations`` and keeps its
    ``instance_id``. Renumbering makes track ids unique and non-zero whatever the converter did
    (instance ids restarting in each video, or starting at 0), which the evaluation and the
    identity labels of training both need. ``segmentations``/``bboxes``/``areas`` hold the
    annotation at its frame's position, None elsewhere.

    Raises:
        CrossVISError: a missing key, an unknown video or image id, a repeated ``frame_id``, or two
            annotations of one instance in the same frame (naming ``source`` and the entry).
    """
    if not isinstance(data, dict):
        raise CrossVISError(f"{source} must be a JSON object with videos, images and annotations")
    for key in ("videos", "images"):
        if not isinstance(data.get(key), list):
            raise CrossVISError(f"{source}: key {key!r} is missing or not a list")
    videos: dict[Any, dict] = {}
    for i, v in enumerate(data["videos"]):
        _require(v, ("id",), f"{source}: videos[{i}]")
        _require_id(v["id"], f"{source}: videos[{i}] 'id'")
        if v["id"] in videos:
            raise CrossVISError(f"{source}: video id {v['id']!r} is used by two videos")
        videos[v["id"]] = dict(v)
    frames_of: dict[Any, list[dict]] = {vid: [] for vid in videos}
    for i, img in enumerate(data["images"]):
        _require(img, ("id", "video_id", "frame_id"), f"{source}: images[{i}]")
        for key in ("id", "video_id"):
            _require_id(img[key], f"{source}: images[{i}] {key!r}")
        if img["video_id"] not in frames_of:
            raise CrossVISError(f"{source}: image {img['id']!r} refers to unknown video_id {img['video_id']!r}")
        if not _is_int(img["frame_id"]):
            raise CrossVISError(f"{source}: image {img['id']!r} has a non-integer frame_id {img['frame_id']!r}")
        frames_of[img["video_id"]].append(img)
    position: dict[Any, tuple[Any, int]] = {}  # image id -> (video id, frame index)
    for vid, images in frames_of.items():
        images.sort(key=lambda im: im["frame_id"])
        for f, img in enumerate(images):
            if f and img["frame_id"] == images[f - 1]["frame_id"]:
                raise CrossVISError(f"{source}: video {vid!r} has two images with frame_id {img['frame_id']!r}")
            if img["id"] in position:
                raise CrossVISError(f"{source}: image id {img['id']!r} is used twice")
            position[img["id"]] = (vid, f)
        video = videos[vid]
        first = images[0] if images else {}
        for key in ("height", "width"):
            if key not in video and key in first:
                video[key] = first[key]
        video["length"] = len(images)
        if all("file_name" in img for img in images):  # else the frames cannot be read, but can be scored
            video["file_names"] = [img["file_name"] for img in images]
        else:
            video.pop("file_names", None)

    tracks: dict[tuple, dict] = {}
    annotations = data.get("annotations")
    for n, ann in enumerate(annotations if isinstance(annotations, list) else []):
        what = f"{source}: annotations[{n}]"
        _require(ann, ("image_id", "category_id", "instance_id"), what)
        for key in ("image_id", "instance_id"):
            _require_id(ann[key], f"{what} {key!r}")
        if ann["image_id"] not in position:
            raise CrossVISError(f"{what} refers to unknown image_id {ann['image_id']!r}")
        vid, frame = position[ann["image_id"]]
        key = (vid, ann["instance_id"])
        track = tracks.get(key)
        if track is None:
            length = videos[vid]["length"]
            track = tracks[key] = {
                "id": len(tracks) + 1, "instance_id": ann["instance_id"], "video_id": vid,
                "category_id": ann["category_id"], "iscrowd": ann.get("iscrowd", 0),
                "segmentations": [None] * length, "bboxes": [None] * length, "areas": [None] * length}
        elif track["segmentations"][frame] is not None:
            raise CrossVISError(f"{source}: annotations[{n}]: instance_id {ann['instance_id']!r} is annotated "
                                f"twice in image {ann['image_id']!r}")
        track["segmentations"][frame] = ann.get("segmentation")
        track["bboxes"][frame] = ann.get("bbox")
        track["areas"][frame] = ann.get("area")
    out = {k: v for k, v in data.items() if k not in ("videos", "images", "annotations")}
    out["videos"] = list(videos.values())
    out["annotations"] = list(tracks.values())
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _require_id(value: Any, what: str) -> None:
    if not (_is_int(value) or isinstance(value, str)):
        raise CrossVISError(f"{what} must be an integer id, got {value!r}")


def _require(obj: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(obj, dict):
        raise CrossVISError(f"{what} must be a JSON object, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise CrossVISError(f"{what} has no {key!r} key")
