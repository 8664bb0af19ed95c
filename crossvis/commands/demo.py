"""``crossvis demo``: run a trained model online on a video file or a folder of frames."""
from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # annotations only: `crossvis --help` imports no numpy
    import numpy as np


def add_parser(subparsers) -> None:
    from crossvis.commands.recipe import add_inference_arguments

    parser = subparsers.add_parser(
        "demo", help="track instances in your own video and write overlays, masks and results",
        description="Run a model online on INPUT (a video file or a folder of frames, any size) and write "
                    "OUT/frames/000000.jpg ... (overlays: mask, box, 'category #track score', one colour per "
                    "track), optionally OUT/contact_sheet.png, OUT/overlay.mp4, optionally "
                    "OUT/masks/<track>/<frame>.png, and the clip's "
                    "YouTube-VIS results OUT/results.json (video_id 1) with OUT/video.json (frame size, length). "
                    "OUT/.crossvis-outputs.json lists what demo writes: a later demo into OUT first deletes "
                    "exactly those outputs, so no stale frame stays; other files are never touched.")
    parser.add_argument("input", metavar="INPUT", help="video file (mp4, avi, ...) or folder of jpg/png frames")
    parser.add_argument("--recipe", required=True, metavar="RECIPE", help="recipe YAML of the model")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="model weights (.pth)")
    parser.add_argument("--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.3, metavar="S",
                        help="draw (and save masks of) instances scoring at least S (default 0.3); "
                             "results.json keeps every track")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="process only the first N frames")
    parser.add_argument("--no-video", action="store_true", help="do not write OUT/overlay.mp4")
    parser.add_argument("--save-masks", action="store_true", help="write OUT/masks/<track>/<frame>.png")
    parser.add_argument("--contact-sheet", action="store_true",
                        help="write OUT/contact_sheet.png: up to 12 evenly spaced overlays in time order and a "
                             "timeline of every track (one colour and '#id name' per track)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the overlay video, 0 < FPS <= 1000 (default: the input's, 10 for "
                             "a frame folder)")
    add_inference_arguments(parser, "tracker.max_age=30")
    parser.add_argument("--force", action="store_true",
                        help="replace frames/, masks/, overlay.mp4, results.json, video.json in OUT that an "
                             "earlier `crossvis demo` did not write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossvis.commands.recipe import overrides_with_threads

    from tqdm import tqdm

    from crossvis.atomic import atomic_write_json
    from crossvis.data.video import open_video_source, write_video
    from crossvis.inference.outputs import OutputFolder, check_not_a_file
    from crossvis.inference.predictor import Predictor
    from crossvis.inference.visualize import ContactSheet, draw_tracked_instances, save_instance_masks
    from crossvis.eval import write_results
    from crossvis.recipes import load_recipe
    from crossvis.recipes.sections import check_device
    from crossvis.errors import CrossVISError

    _check_numbers(args)
    if args.device is not None:
        check_device(args.device)
    if not Path(args.input).exists():
        raise CrossVISError(f"demo input {args.input} does not exist; give a video file or a folder of frames")
    if not Path(args.recipe).is_file() and not str(args.recipe).startswith("crossvis:"):
        raise CrossVISError(f"recipe {args.recipe} does not exist; "
                            "pass the recipe YAML the checkpoint was trained with")
    if not Path(args.checkpoint).is_file():
        raise CrossVISError(f"checkpoint {args.checkpoint} does not exist; pass a .pth written by crossvis train")
    out = Path(args.output)
    check_not_a_file(out)
    for owned in [out / name for name in _OUTPUT_FILES + _OUTPUT_FOLDERS]:
        for given, flag in ((args.input, "INPUT"), (args.recipe, "--recipe"), (args.checkpoint, "--checkpoint")):
            if Path(given).exists() and _within(Path(given), owned):
                raise CrossVISError(f"{flag} {given} lies in {owned}, which demo writes; choose another --output")
    source = open_video_source(args.input)
    predictor = Predictor(load_recipe(args.recipe, overrides=overrides_with_threads(args)), checkpoint=args.checkpoint,
                          device=args.device)
    OutputFolder(out, "demo", files=_OUTPUT_FILES, folders=_OUTPUT_FOLDERS, force=args.force).prepare()
    frames_dir, masks_dir = out / "frames", out / "masks"
    frames_dir.mkdir(parents=True, exist_ok=True)

    total = source.num_frames
    if args.max_frames is not None:
        total = args.max_frames if total is None else min(total, args.max_frames)
    frames = _SizeCheckedFrames(itertools.islice(iter(source), args.max_frames), args.input)
    stats = {"frames": 0, "instances": 0}
    sheet = ContactSheet(predictor.category_name) if args.contact_sheet else None

    def overlays() -> Iterator[np.ndarray]:
        for index, instances in enumerate(predictor.track(frames)):
            image = draw_tracked_instances(frames.current, instances, predictor.category_name, args.score_threshold)
            _save_jpeg(image, frames_dir / f"{index:06d}.jpg")
            if args.save_masks:
                save_instance_masks(masks_dir, index, instances, args.score_threshold)
            if sheet is not None:
                sheet.add(index, image, instances, args.score_threshold)
            stats["frames"] += 1
            stats["instances"] += len(instances)
            yield image

    start = time.perf_counter()
    with tqdm(overlays(), total=total, unit="frame", desc="demo", disable=args.no_progress,
              dynamic_ncols=True) as bar:
        if args.no_video:
            for _ in bar:
                pass
        else:
            _write_overlay_video(bar, out / "overlay.mp4", args.fps or source.fps or 10.0, write_video)
    elapsed = time.perf_counter() - start
    if stats["frames"] == 0:
        raise CrossVISError(f"no frames could be read from {args.input}")

    results = predictor.video_results(video_id=1)
    write_results(results, out / "results.json")
    h, w = frames.size
    video = {"id": 1, "height": h, "width": w, "length": stats["frames"],
             "file_names": [f"frames/{i:06d}.jpg" for i in range(stats["frames"])]}
    atomic_write_json(out / "video.json", {"videos": [video]})
    shown = sum(1 for r in results if r["score"] >= args.score_threshold)
    print(f"{stats['frames']} frames ({w}x{h}), {len(results)} tracks ({shown} scoring >= {args.score_threshold}), "
          f"{stats['instances']} instances; {elapsed:.1f} s, {stats['frames'] / max(elapsed, 1e-9):.1f} frames/s "
          f"(decoding, model, tracking, drawing and writing)")
    if sheet is not None:
        sheet.save(out / "contact_sheet.png", title=f"{Path(args.input).name}: tracks scoring >= {args.score_threshold}")
    print(f"overlays: {frames_dir}/" + ("" if args.no_video else f", video: {out / 'overlay.mp4'}")
          + (f", masks: {masks_dir}/" if args.save_masks else "") + f", results: {out / 'results.json'}"
          + (f", contact sheet: {out / 'contact_sheet.png'}" if sheet is not None else ""))
    return 0


_OUTPUT_FILES = ["overlay.mp4", "results.json", "video.json", "contact_sheet.png"]
_OUTPUT_FOLDERS = ["frames", "masks"]


def _check_numbers(args: argparse.Namespace) -> None:
    """One clear message for a numeric flag out of range (NaN and infinities included)."""
    from crossvis.errors import CrossVISError

    if args.max_frames is not None and args.max_frames < 1:
        raise CrossVISError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= 1000):
        raise CrossVISError(f"--fps must be a frame rate in (0, 1000], got {args.fps:g}")
    if not (math.isfinite(args.score_threshold) and 0.0 <= args.score_threshold <= 1.0):
        raise CrossVISError(f"--score-threshold must be in [0, 1], got {args.score_threshold:g}")


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _write_overlay_video(frames: Iterator[np.ndarray], path: Path, fps: float, write_video) -> None:
    """``write_video`` with an encoder failure as one clear message."""
    import av

    from crossvis.errors import CrossVISError

    try:
        write_video(frames, path, fps=fps)
    except av.error.FFmpegError as exc:
        raise CrossVISError(f"could not encode {path} at {fps:g} frames/s ({exc}); pass another --fps or "
                            f"--no-video") from None


class _SizeCheckedFrames:
    """Iterates the input frames, remembering the current one (for drawing) and refusing size changes."""

    def __init__(self, frames: Iterator[np.ndarray], source: str) -> None:
        self.frames, self.source = frames, source
        self.current: np.ndarray | None = None
        self.size: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        from crossvis.structures import CrossVISError

        for index, frame in enumerate(self.frames):
            size = (int(frame.shape[0]), int(frame.shape[1]))
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise CrossVISError(f"{self.source}: frame {index} is {size[1]}x{size[0]} but the first frame is "
                                    f"{self.size[1]}x{self.size[0]}; all frames of a clip must have one size")
            self.current = frame
            yield frame


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, quality=90)
