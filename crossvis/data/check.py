"""``crossvis dataset check``: every problem of an annotation file, and of its frames.

The file itself is validated by :func:`crossvis.formats.parse_annotations`, the same validator
the readers and the evaluator use (they stop at the first error; this lists them all, grouping the
per-frame problems of one track on one line). With an images folder, every frame file must exist;
with ``verify_images`` each one is read by the frame reader of training
(:func:`crossvis.data.video.read_image`) and its size compared with the video's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from crossvis.errors import CrossVISError
from crossvis.formats import Problem, ProblemList, parse_annotations

from .video import read_image

__all__ = ["Problem", "CheckReport", "check_annotations"]


@dataclass
class CheckReport(ProblemList):
    """Every problem found plus the counts of what was checked."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    num_videos: int = 0
    num_frames: int = 0
    num_tracks: int = 0
    num_categories: int = 0
    layout: str = "per-track"

    def summary(self) -> str:
        return (f"{self.path}: {self.layout} layout, {self.num_videos} videos ({self.num_frames} frames), "
                f"{self.num_tracks} tracks, {self.num_categories} categories: "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")

    def error(self, where: str, message: str) -> None:
        self.problems.append(Problem("error", where, message))


def check_annotations(path: str | Path, images: Optional[str | Path] = None,
                      verify_images: bool = False) -> CheckReport:
    """Check an annotation file; with ``images``, also check that every frame file exists.

    Args:
        path: the YouTube-VIS-format JSON (per-track or CocoVID layout).
        images: the folder its ``file_names`` are relative to (None skips the frame checks).
        verify_images: also read every frame and compare its size with the video's.

    Raises:
        CrossVISError: the file is missing or is not valid JSON (nothing else can be checked).
    """
    path = Path(path)
    parsed = parse_annotations(path)
    report = CheckReport(path, list(parsed.problems), len(parsed.videos), parsed.num_frames,
                         parsed.num_track_entries, len(parsed.categories), parsed.layout)
    if images is None:
        return report
    images = Path(images)
    if not images.is_dir():
        report.error("images", f"images folder not found: {images}")
        return report
    for video in parsed.videos:
        where = f"video {video.id} ({video.file_names[0].split('/')[0] if video.file_names else '?'})"
        for name in video.file_names or []:
            frame = images / name
            if not frame.is_file():
                report.error(where, f"missing frame file {frame}")
            elif verify_images:
                try:
                    h, w = read_image(frame).shape[:2]
                except CrossVISError as exc:
                    report.error(where, str(exc))
                    continue
                if (h, w) != (video.height, video.width):
                    report.error(where, f"frame file {frame} is {w}x{h}, video says {video.width}x{video.height}")
    return report
