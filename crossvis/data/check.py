"""Validation of a YouTube-VIS-format annotation file (and its frames) that lists every problem.

Used by ``crossvis dataset check``. Unlike the reader, which stops at the first problem, this walks
the whole file and reports each problem once, grouping per-frame problems of one track on one line.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from crossvis.errors import CrossVISError

from .annotations import cocovid_to_tracks, is_cocovid, read_json

__all__ = ["Problem", "CheckReport", "check_annotations"]

_OCCLUSION_LABELS = {"no_occlusion", "slight_occlusion", "severe_occlusion"}


@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` is "error" or "warning"; ``where`` names the video/annotation."""

    severity: str
    where: str
    message: str

    def format(self, path: Path) -> str:
        return f"{self.severity}: {path}: {self.where}: {self.message}"


@dataclass
class CheckReport:
    """Every problem found plus the counts of what was checked."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    num_videos: int = 0
    num_frames: int = 0
    num_tracks: int = 0
    num_categories: int = 0
    layout: str = "per-track"

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        return (f"{self.path}: {self.layout} layout, {self.num_videos} videos ({self.num_frames} frames), "
                f"{self.num_tracks} tracks, {self.num_categories} categories: "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")

    def error(self, where: str, message: str) -> None:
        self.problems.append(Problem("error", where, message))

    def warn(self, where: str, message: str) -> None:
        self.problems.append(Problem("warning", where, message))


def _frames(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:10])
    return f"frame{'s' if len(indices) > 1 else ''} {shown}{' …' if len(indices) > 10 else ''}"


def _as_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_annotations(path: str | Path, images: Optional[str | Path] = None,
                      verify_images: bool = False) -> CheckReport:
    """Check an annotation file; with ``images``, also check that every frame file exists.

    Args:
        path: the YouTube-VIS-format JSON (per-track or CocoVID layout).
        images: the folder its ``file_names`` are relative to (None skips the frame checks).
        verify_images: also open every frame and compare its size with the video's.

    Raises:
        CrossVISError: the file is missing or is not valid JSON (nothing else can be checked).
    """
    path = Path(path)
    report = CheckReport(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        report.error("top level", "no 'videos' list; this is not a YouTube-VIS annotation file")
        return report
    if is_cocovid(data):
        report.layout = "CocoVID"
        try:
            data = cocovid_to_tracks(data)
        except (CrossVISError, KeyError, TypeError, ValueError) as exc:
            report.error("CocoVID layout", f"cannot convert to tracks: {exc}")
            return report
    categories = _check_categories(data, report)
    videos = _check_videos(data, report, Path(images) if images is not None else None, verify_images)
    _check_tracks(data, report, videos, categories)
    return report


def _check_categories(data: dict[str, Any], report: CheckReport) -> set[int]:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        report.error("categories", "missing or empty 'categories' list; add {id, name} entries")
        return set()
    ids = [_as_int(c.get("id")) if isinstance(c, dict) else None for c in cats]
    for i, (c, cid) in enumerate(zip(cats, ids)):
        if cid is None:
            report.error(f"categories[{i}]", "no integer 'id'")
        elif not isinstance(c.get("name"), str):
            report.warn(f"category {cid}", "no 'name'; class names will show the id")
    for cid, n in Counter(i for i in ids if i is not None).items():
        if n > 1:
            report.error(f"category {cid}", f"id used by {n} categories")
    report.num_categories = len({i for i in ids if i is not None})
    return {i for i in ids if i is not None}


def _check_videos(data: dict[str, Any], report: CheckReport, images: Optional[Path],
                  verify_images: bool) -> dict[int, tuple[int, int, int]]:
    """Returns {video id: (length, height, width)} of the usable videos (first one of a duplicated id)."""
    if images is not None and not images.is_dir():
        report.error("images", f"images folder not found: {images}")
        images = None
    videos: dict[int, tuple[int, int, int]] = {}
    id_counts = Counter(_as_int(v.get("id")) for v in data["videos"] if isinstance(v, dict))
    for i, v in enumerate(data["videos"]):
        if not isinstance(v, dict):
            report.error(f"videos[{i}]", "not an object")
            continue
        vid = _as_int(v.get("id"))
        file_names = v.get("file_names")
        has_name = isinstance(file_names, list) and file_names and isinstance(file_names[0], str)
        name = file_names[0].split("/")[0] if has_name else "?"
        where = f"video {vid} ({name})" if vid is not None else f"videos[{i}] ({name})"
        if vid is None:
            report.error(where, "no integer 'id'")
        elif vid == 0:
            report.error(where, "video id 0; ids must be non-zero")
        elif id_counts[vid] > 1:
            report.error(where, f"video id {vid} used by {id_counts[vid]} videos")
        h, w = _as_int(v.get("height")), _as_int(v.get("width"))
        if not h or not w or h <= 0 or w <= 0:
            report.error(where, f"invalid height/width {v.get('height')!r}x{v.get('width')!r}")
        if not isinstance(file_names, list) or not all(isinstance(f, str) for f in file_names):
            report.error(where, "'file_names' must be a list of relative paths")
            continue
        if not file_names:
            report.error(where, "'file_names' is empty")
        length = v.get("length")
        if length is not None and length != len(file_names):
            report.error(where, f"'length' is {length} but 'file_names' has {len(file_names)} entries")
        report.num_videos += 1
        report.num_frames += len(file_names)
        if images is not None:
            _check_frames(report, where, images, file_names, (h, w), verify_images)
        if vid is not None and vid not in videos and h and w:  # tracks are checked against the first
            videos[vid] = (len(file_names), h, w)
    return videos


def _check_frames(report: CheckReport, where: str, images: Path, file_names: list[str],
                  size: tuple[Optional[int], Optional[int]], verify_images: bool) -> None:
    for f in file_names:
        frame = images / f
        if not frame.is_file():
            report.error(where, f"missing frame file {frame}")
        elif verify_images:
            try:
                with Image.open(frame) as im:
                    im.load()
                    actual = (im.height, im.width)
            except OSError as exc:
                report.error(where, f"unreadable frame file {frame}: {exc}")
                continue
            if None not in size and actual != size:
                report.error(where, f"frame file {frame} is {actual[1]}x{actual[0]}, video says {size[1]}x{size[0]}")


def _check_tracks(data: dict[str, Any], report: CheckReport, videos: dict[int, tuple[int, int, int]],
                  categories: set[int]) -> None:
    tracks = data.get("annotations")
    if not tracks:
        return  # valid/test files: no ground truth
    if not isinstance(tracks, list):
        report.error("annotations", "must be a list of tracks (or missing/null/[] for files without ground truth)")
        return
    id_counts = Counter(_as_int(a.get("id")) for a in tracks if isinstance(a, dict))
    for i, ann in enumerate(tracks):
        if not isinstance(ann, dict):
            report.error(f"annotations[{i}]", "not an object")
            continue
        report.num_tracks += 1
        aid = _as_int(ann.get("id"))
        where = f"annotation {aid}" if aid is not None else f"annotations[{i}]"
        if aid is None:
            report.error(where, "no integer 'id'")
        elif aid == 0:
            report.error(where, "annotation id 0; ids must be non-zero (the evaluator treats 0 as unmatched)")
        elif id_counts[aid] > 1:
            report.error(where, f"annotation id {aid} used by {id_counts[aid]} annotations")
        cid = ann.get("category_id")
        if cid not in categories:
            report.error(where, f"unknown category_id {cid!r}")
        vid = ann.get("video_id")
        if vid not in videos:
            report.error(where, f"video_id {vid!r} does not name a valid video")
            continue
        where = f"{where} (video {vid})"
        _check_track_lists(report, where, ann, *videos[vid])


def _check_track_lists(report: CheckReport, where: str, ann: dict[str, Any], length: int, h: int, w: int) -> None:
    segs = ann.get("segmentations")
    if not isinstance(segs, list):
        report.error(where, "'segmentations' must be a list with one mask or null per frame")
        return
    for key in ("segmentations", "bboxes", "areas", "occlusion"):
        values = ann.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != length):
            n = len(values) if isinstance(values, list) else type(values).__name__
            report.error(where, f"'{key}' has {n} entries but the video has {length} frames")
    wrong_size: dict[tuple[int, ...], list[int]] = {}
    bad: dict[str, list[int]] = {}
    for f, seg in enumerate(segs):
        if seg is None:
            continue
        issue = _mask_issue(seg, h, w)
        if isinstance(issue, tuple):
            wrong_size.setdefault(issue, []).append(f)
        elif issue:
            bad.setdefault(issue, []).append(f)
    for size, frames in wrong_size.items():
        report.error(where, f"mask size {list(size)} differs from the video size [{h}, {w}] in {_frames(frames)}")
    for issue, frames in bad.items():
        report.error(where, f"{issue} in {_frames(frames)}")
    if all(s is None for s in segs):
        report.warn(where, "the track is null in every frame")
    bboxes = ann.get("bboxes")
    if isinstance(bboxes, list) and len(bboxes) == len(segs):
        mismatch = [f for f, (s, b) in enumerate(zip(segs, bboxes)) if (s is None) != (b is None)]
        if mismatch:
            report.warn(where, f"segmentation and bbox disagree on null in {_frames(mismatch)}")
    occlusion = ann.get("occlusion")
    if isinstance(occlusion, list):
        odd = [f for f, o in enumerate(occlusion) if o is not None and o not in _OCCLUSION_LABELS]
        if odd:
            report.warn(where, f"unknown occlusion labels in {_frames(odd)}")


def _mask_issue(seg: Any, h: int, w: int) -> tuple[int, ...] | str | None:
    """None when fine, a (h, w) tuple for a size mismatch, else a description of the problem."""
    if isinstance(seg, dict):
        size = seg.get("size")
        counts = seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2):
            return "RLE without a [h, w] 'size'"
        if tuple(size) != (h, w):
            return tuple(size)
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
                return f"uncompressed RLE counts do not sum to h*w = {h * w}"
            return None
        if isinstance(counts, str):
            return None
        return "RLE 'counts' must be a list of ints or a string"
    if isinstance(seg, list):
        if all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg) and seg:
            return None
        return "polygons must be lists of at least 3 (x, y) pairs"
    return f"unrecognised mask type {type(seg).__name__}"
