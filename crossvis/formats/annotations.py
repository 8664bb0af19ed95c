"""The one validator of YouTube-VIS / OVIS / CocoVID annotation files.

:func:`parse_annotations` walks the whole file and lists every problem (``crossvis dataset
check`` prints them); :func:`load_annotations` stops with the first error (the training readers
and the evaluator). Both return the same :class:`AnnotationFile`, in which every mask is
compressed RLE (``counts`` bytes) that :mod:`crossvis.formats.rle` validated once, so nothing
downstream decodes a corrupt mask.

Rules (one set for reading, training, checking and evaluating):

* ``videos``: integer ``id`` (unique), positive integer ``height``/``width``; ``file_names`` a list
  of relative paths (required where frames are read); the frame count is ``length``, else
  ``len(file_names)``, and the two must agree;
* ``categories``: a non-empty list of ``{"id": int, "name": str}``; ids unique;
* ``annotations`` (tracks; missing, ``null`` or ``[]`` in files without ground truth): integer
  ``id`` unique and non-zero, a known ``video_id`` and ``category_id``, ``iscrowd`` 0/1 (default 0),
  ``segmentations`` (and ``bboxes``/``areas``/``occlusion`` when present) with one entry per frame;
  ``areas`` entries are numbers or null;
* a frame's mask is ``null`` (also ``[]``/``{}``, absent as in the official code), uncompressed RLE,
  compressed RLE or polygons; RLE ``size`` must equal the video's [height, width] and its counts
  must add up to height × width; polygons are lists of at least 3 (x, y) pairs.

The official evaluation silently drops tracks of unknown videos or categories; here they are errors.
"""
from __future__ import annotations

import math
import numbers
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.errors import CrossVISError
from crossvis.formats.jsonfile import read_json
from crossvis.formats.layout import cocovid_to_tracks, is_cocovid
from crossvis.formats.rle import check_compressed, check_size, check_uncompressed, short_repr as _short

__all__ = ["Problem", "VideoEntry", "TrackEntry", "AnnotationFile", "parse_annotations", "load_annotations",
           "OCCLUSION_LABELS"]

OCCLUSION_LABELS = ("no_occlusion", "slight_occlusion", "severe_occlusion")
_PER_FRAME_KEYS = ("segmentations", "bboxes", "areas", "occlusion")


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` is "error" or "warning"; ``where`` names the video/annotation."""

    severity: str
    where: str
    message: str

    def format(self, source: Any) -> str:
        return f"{self.severity}: {source}: {self.where}: {self.message}"


class ProblemList:
    """``errors`` / ``warnings`` views of a ``problems: list[Problem]`` attribute (report classes mix it in)."""

    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


@dataclass
class VideoEntry:
    """A video: JSON ``id``, frame size, frame count and frame file names (None when not listed)."""

    id: Any
    height: int
    width: int
    length: int
    file_names: Optional[list[str]]


@dataclass(eq=False)
class TrackEntry:
    """One annotated instance through a video.

    Attributes:
        segmentations: per frame a compressed RLE ``{"size": [h, w], "counts": bytes}`` or None.
        mask_areas: int64 [L], pixel count of each frame's mask (0 where absent).
        areas, bboxes, occlusion: the JSON per-frame lists (None when the key is missing).
        iscrowd: the JSON value (0 when missing).
        index: position in the file's ``annotations`` (CocoVID: in the converted track list).
        instance_id: the CocoVID ``instance_id`` (None for per-track files).
    """

    id: int
    video_id: Any
    category_id: Any
    iscrowd: Any
    segmentations: list[Optional[dict]]
    mask_areas: np.ndarray
    areas: Optional[list]
    bboxes: Optional[list]
    occlusion: Optional[list]
    index: int
    instance_id: Any = None


@dataclass
class AnnotationFile(ProblemList):
    """A validated annotation file (``tracks`` in file order; ``categories`` sorted by id)."""

    source: str
    layout: str = "per-track"
    videos: list[VideoEntry] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)
    tracks: list[TrackEntry] = field(default_factory=list)
    has_annotations: bool = False
    problems: list[Problem] = field(default_factory=list)
    num_frames: int = 0
    num_track_entries: int = 0

    def error(self, where: str, message: str) -> None:
        self.problems.append(Problem("error", where, message))

    def warn(self, where: str, message: str) -> None:
        self.problems.append(Problem("warning", where, message))


def load_annotations(annotations: Any, *, need_file_names: bool = True, what: str = "annotation file",
                     source: Optional[str] = None) -> AnnotationFile:
    """Read (if a path) and validate an annotation file; the first error is raised.

    Args:
        annotations: a path to the JSON, or the already parsed dict (never modified).
        need_file_names: require every video's ``file_names`` (readers of frames do; the evaluator does not).
        what: names the file in errors.
        source: names a parsed dict in errors (default: the path, or "<dict>").

    Raises:
        CrossVISError: ``source: where: problem`` of the first error (file, video, annotation and
            frame), with the number of further errors and how to list them.
    """
    parsed = parse_annotations(annotations, need_file_names=need_file_names, what=what, source=source)
    errors = parsed.errors
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        hint = (f"; run `crossvis dataset check {parsed.source}` to list every problem"
                if isinstance(annotations, (str, os.PathLike)) else "")
        raise CrossVISError(f"{parsed.source}: {first.where}: {first.message}{more}{hint}")
    return parsed


def parse_annotations(annotations: Any, *, need_file_names: bool = True, what: str = "annotation file",
                      source: Optional[str] = None) -> AnnotationFile:
    """Validate a whole annotation file, recording every problem in ``problems``.

    Raises:
        CrossVISError: only when a path cannot be read as JSON (nothing else can be checked).
    """
    if isinstance(annotations, (str, os.PathLike)):
        source = source or os.fspath(annotations)
        annotations = read_json(annotations, what)
    out = AnnotationFile(source or "<dict>")
    data = annotations
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        out.error("top level", "no 'videos' list; this is not a YouTube-VIS annotation file")
        return out
    if is_cocovid(data):
        out.layout = "CocoVID"
        try:
            data = cocovid_to_tracks(data, "cannot convert to tracks")
        except CrossVISError as exc:
            out.error("CocoVID layout", str(exc))
            return out
    categories = _parse_categories(data, out)
    videos = _parse_videos(data, out, need_file_names)
    _parse_tracks(data, out, videos, categories)
    return out


def _is_int(value: Any) -> bool:
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _frames(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:10])
    return f"frame{'s' if len(indices) > 1 else ''} {shown}{' …' if len(indices) > 10 else ''}"


def _parse_categories(data: dict, out: AnnotationFile) -> set:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        out.error("categories", "missing or empty 'categories' list; add {id, name} entries")
        return set()
    ids = [c.get("id") if isinstance(c, dict) and _is_int(c.get("id")) else None for c in cats]
    for i, (c, cid) in enumerate(zip(cats, ids)):
        if cid is None:
            out.error(f"categories[{i}]", "not an object with an integer 'id'")
        elif not isinstance(c.get("name"), str):
            out.warn(f"category {cid}", "no 'name'; class names will show the id")
    counts = Counter(i for i in ids if i is not None)
    for cid, n in counts.items():
        if n > 1:
            out.error(f"category {cid}", f"id used by {n} categories")
    out.categories = sorted((dict(c) for c, cid in zip(cats, ids) if cid is not None and counts[cid] == 1),
                            key=lambda c: c["id"])
    return set(counts)


def _parse_videos(data: dict, out: AnnotationFile, need_file_names: bool) -> dict[Any, VideoEntry]:
    """The usable videos by id (the first of a duplicated id); every problem goes to ``out``."""
    videos: dict[Any, VideoEntry] = {}
    id_counts = Counter(v.get("id") for v in data["videos"] if isinstance(v, dict) and _is_int(v.get("id")))
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict):
            out.error(f"videos[{i}]", "not an object")
            continue
        vid = v.get("id") if _is_int(v.get("id")) else None
        file_names = v.get("file_names")
        names_ok = isinstance(file_names, list) and all(isinstance(f, str) for f in file_names)
        name = file_names[0].split("/")[0] if names_ok and file_names else "?"
        where = f"video {vid} ({name})" if vid is not None else f"videos[{i}] ({name})"
        usable = True
        if vid is None:
            out.error(where, "no integer 'id'")
            usable = False
        elif id_counts[vid] > 1:
            out.error(where, f"video id {vid} used by {id_counts[vid]} videos")
        h, w = v.get("height"), v.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0 and h * w <= 2 ** 31 - 1):
            out.error(where, f"invalid height/width {_short(h)}x{_short(w)}")
            usable = False
        if file_names is None and not need_file_names:
            names_ok = True
        elif not names_ok:
            out.error(where, "'file_names' must be a list of relative paths")
            usable = False
        elif not file_names:
            out.error(where, "'file_names' is empty")
        length = v.get("length")
        if length is not None and not (_is_int(length) and length >= 0):
            out.error(where, f"'length' must be a frame count, got {_short(length)}")
            usable, length = False, None
        if isinstance(file_names, list):
            if length is not None and length != len(file_names):
                out.error(where, f"'length' is {length} but 'file_names' has {len(file_names)} entries")
                usable = False
            length = len(file_names)
        if length is None:
            out.error(where, "neither 'length' nor 'file_names' gives the number of frames")
            usable = False
        out.num_frames += length or 0
        if usable and vid not in videos:
            videos[vid] = VideoEntry(vid, h, w, length, file_names if isinstance(file_names, list) else None)
    out.videos = list(videos.values())
    return videos


def _parse_tracks(data: dict, out: AnnotationFile, videos: dict[Any, VideoEntry], categories: set) -> None:
    tracks = data.get("annotations")
    if tracks is None or tracks == []:
        return  # valid/test files: no ground truth
    if not isinstance(tracks, list):
        out.error("annotations", "must be a list of tracks (or missing/null/[] for files without ground truth)")
        return
    out.has_annotations = True
    cocovid = out.layout == "CocoVID"
    id_counts = Counter(a.get("id") for a in tracks if isinstance(a, dict) and _is_int(a.get("id")))
    pending: list[tuple[str, dict, VideoEntry, int]] = []
    for i, ann in enumerate(tracks):
        if not isinstance(ann, dict):
            out.error(f"annotations[{i}]", "not an object")
            continue
        out.num_track_entries += 1
        aid = ann.get("id") if _is_int(ann.get("id")) else None
        vid = ann.get("video_id")
        where = (f"instance_id {_short(ann.get('instance_id'))} (video {_short(vid)})" if cocovid
                 else f"annotation {aid if aid is not None else '?'} (annotations[{i}], video {_short(vid)})")
        ok = True
        if aid is None:
            out.error(where, "no integer 'id'")
            ok = False
        elif aid == 0:
            out.error(where, "annotation id 0; ids must be non-zero (the official evaluation mis-scores id 0)")
            ok = False
        elif id_counts[aid] > 1:
            out.error(where, f"annotation id {aid} used by {id_counts[aid]} annotations")
            ok = False
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            out.error(where, f"unknown category_id {_short(ann.get('category_id'))}")
            ok = False
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, float):
            out.error(where, f"'iscrowd' must be 0 or 1, got {_short(iscrowd)}")
            ok = False
        video = videos.get(vid) if _is_int(vid) else None
        if video is None:
            out.error(where, f"video_id {_short(vid)} does not name a valid video")
            continue
        if _check_track_lists(out, where, ann, video):
            pending.append((where, ann, video, i if ok else -1))  # masks are checked even when ids are wrong
    _convert_masks(out, pending)


def _check_track_lists(out: AnnotationFile, where: str, ann: dict, video: VideoEntry) -> bool:
    """Check the per-frame lists of one track; True when its masks can be converted."""
    segs = ann.get("segmentations")
    if not isinstance(segs, list):
        out.error(where, "'segmentations' must be a list with one mask or null per frame")
        return False
    ok = True
    for key in _PER_FRAME_KEYS:
        values = ann.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != video.length):
            n = len(values) if isinstance(values, list) else type(values).__name__
            out.error(where, f"'{key}' has {n} entries but the video has {video.length} frames")
            ok = False
    areas = ann.get("areas")
    if isinstance(areas, list) and not all(a is None or (isinstance(a, numbers.Real) and not isinstance(a, bool)
                                                         and math.isfinite(a)) for a in areas):
        out.error(where, "'areas' must hold finite numbers or null")
        ok = False
    if all(not s for s in segs):
        out.warn(where, "the track is null in every frame")
    bboxes = ann.get("bboxes")
    if isinstance(bboxes, list) and len(bboxes) == len(segs):
        mismatch = [f for f, (s, b) in enumerate(zip(segs, bboxes)) if (not s) != (b is None)]
        if mismatch:
            out.warn(where, f"segmentation and bbox disagree on null in {_frames(mismatch)}")
    occlusion = ann.get("occlusion")
    if isinstance(occlusion, list):
        odd = [f for f, o in enumerate(occlusion) if o is not None and o not in OCCLUSION_LABELS]
        if odd:
            out.warn(where, f"unknown occlusion labels in {_frames(odd)}")
    return ok


def _convert_masks(out: AnnotationFile, pending: list[tuple[str, dict, VideoEntry, int]]) -> None:
    """Validate every mask of the pending tracks (compressed strings in one batch) and build the tracks."""
    converted: list[list[Optional[dict]]] = []
    areas: list[np.ndarray] = []
    issues: list[dict[str, list[int]]] = []
    strings: list[tuple[int, int]] = []  # (track, frame) of each compressed mask
    uncompressed: list[tuple[int, int]] = []
    for t, (_, ann, video, _) in enumerate(pending):
        segs: list[Optional[dict]] = [None] * video.length
        track_areas = np.zeros(video.length, dtype=np.int64)
        problems: dict[str, list[int]] = {}
        for f, seg in enumerate(ann["segmentations"]):
            if seg is None or seg == [] or seg == {}:
                continue
            problem = _mask_form(seg, video)
            if problem:
                problems.setdefault(problem, []).append(f)
            elif isinstance(seg, dict) and isinstance(seg["counts"], list):
                uncompressed.append((t, f))
            elif isinstance(seg, dict):
                counts = seg["counts"]
                segs[f] = {"size": [video.height, video.width],
                           "counts": counts.encode("ascii") if isinstance(counts, str) else bytes(counts)}
                strings.append((t, f))
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, video.height, video.width))
                segs[f] = {"size": [video.height, video.width], "counts": rle["counts"]}
                track_areas[f] = int(mask_utils.area(rle))
        converted.append(segs)
        areas.append(track_areas)
        issues.append(problems)
    if strings:
        found, string_areas = check_compressed([converted[t][f]["counts"] for t, f in strings],
                                               [(pending[t][2].height, pending[t][2].width) for t, f in strings])
        for (t, f), problem, area in zip(strings, found, string_areas):
            if problem:
                issues[t].setdefault(problem, []).append(f)
            areas[t][f] = area
    valid = []
    for t, f in uncompressed:
        video = pending[t][2]
        seg = pending[t][1]["segmentations"][f]
        problem, area = check_uncompressed(seg["counts"], video.height, video.width)
        if problem:
            issues[t].setdefault(problem, []).append(f)
        else:
            areas[t][f] = area
            valid.append((t, f))
    if valid:
        plain = [{"size": [pending[t][2].height, pending[t][2].width], "counts": pending[t][1]["segmentations"][f]["counts"]}
                 for t, f in valid]  # exactly two keys: pycocotools picks the input kind by len(dict)
        rles = mask_utils.frPyObjects(plain, 0, 0)
        for (t, f), rle in zip(valid, rles):
            converted[t][f] = {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}
    for (where, ann, video, index), segs, track_areas, problems in zip(pending, converted, areas, issues):
        for problem, frames in problems.items():
            out.error(where, f"{problem} in {_frames(sorted(frames))}")
        if problems or index < 0:
            continue
        out.tracks.append(TrackEntry(ann["id"], ann["video_id"], ann["category_id"], ann.get("iscrowd", 0), segs,
                                     track_areas, ann.get("areas"), ann.get("bboxes"), ann.get("occlusion"), index,
                                     ann.get("instance_id")))


def _mask_form(seg: Any, video: VideoEntry) -> Optional[str]:
    """None when ``seg`` has the form of an RLE (of the video's size) or of polygons, else the problem."""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE needs 'size' and 'counts'"
        problem = check_size(seg["size"])
        if problem:
            return problem
        if list(seg["size"]) != [video.height, video.width]:
            return f"mask size {list(seg['size'])} differs from the video size [{video.height}, {video.width}]"
        counts = seg["counts"]
        if isinstance(counts, str):
            return None if counts.isascii() else "compressed RLE 'counts' is not ASCII"
        if isinstance(counts, (bytes, list)):
            return None
        return "RLE 'counts' must be a list of ints or a string"
    if isinstance(seg, list):
        # far-away vertices make pycocotools rasterise (and allocate) for an unbounded time
        bound = 4 * max(video.height, video.width) + 16
        if all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
               and all(isinstance(x, numbers.Real) and not isinstance(x, bool) and abs(x) <= bound for x in p)
               for p in seg):
            return None
        return (f"polygons must be lists of at least 3 (x, y) number pairs within ±{bound} px of the frame")
    return f"unrecognised mask type {type(seg).__name__} (expected RLE, polygons or null)"
