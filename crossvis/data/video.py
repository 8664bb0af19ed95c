"""Video input and output: read one frame file, stream frames from a video file or a folder of frames; write an mp4.

Frames are H×W×3 uint8 RGB numpy arrays, read one at a time, so a long video never sits in memory.
Video files are decoded with PyAV, falling back to OpenCV when PyAV is missing or cannot open the
file; frame folders are read in natural name order (``2.jpg`` before ``10.jpg``) by
:func:`read_image`, the one frame-file reader (the datasets use it too).
"""
from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from crossvis.errors import CrossVISError

__all__ = ["IMAGE_EXTENSIONS", "VideoSource", "FrameFolderSource", "VideoFileSource", "open_video_source",
           "write_video", "natural_key", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Pillow modes whose channels are read as they are (8 bits per channel or fewer), converted to RGB
_EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
# Pillow modes that hold 16-bit samples in an integer image
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an H×W×3 uint8 RGB array, as it is meant to be displayed.

    * EXIF orientation is applied (a phone's rotated JPEG comes out upright; H×W are the displayed sizes);
    * grayscale, 1-bit, palette, CMYK and YCbCr images are converted to RGB; an alpha channel is dropped;
    * 16-bit images (grayscale PNG/TIFF) are scaled to 8 bits (``round(v / 257)``), not clipped;
      16-bit RGB(A) PNGs are read at their 8 most significant bits by Pillow;
    * anything else (floating-point or 32-bit samples, other colour spaces) is refused;
    * animated files give their first frame.

    Raises:
        CrossVISError: the file is missing, unreadable, truncated, too large, or of an unsupported
            mode, naming the file and what to do.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a malformed EXIF block: read the pixels as stored
                pass
            mode = im.mode
            if mode in _SIXTEEN_BIT_MODES:
                samples = np.asarray(im, dtype=np.int64)
                if samples.size and (samples.min() < 0 or samples.max() > 65535):
                    raise CrossVISError(f"cannot read frame {path}: 32-bit integer samples (mode {mode}); "
                                        "save the frames as 8-bit RGB")
                gray = ((samples + 128) // 257).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
            if mode not in _EIGHT_BIT_MODES:
                raise CrossVISError(f"cannot read frame {path}: unsupported image mode {mode}; save the frames as "
                                    "8-bit RGB (or grayscale) JPEG/PNG")
            rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    except CrossVISError:
        raise
    except FileNotFoundError:
        raise CrossVISError(f"frame file not found: {path}; check the images folder and the JSON "
                            f"file_names") from None
    except Image.DecompressionBombError as exc:
        raise CrossVISError(f"cannot read frame {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CrossVISError(f"cannot read frame {path}: {exc}; the file is corrupt or not an image") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise CrossVISError(f"cannot read frame {path}: decoded to shape {rgb.shape}, not H×W×3")
    return np.ascontiguousarray(rgb)


def natural_key(name: str) -> list[object]:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class VideoSource:
    """Iterable over one video's frames (H×W×3 uint8 RGB).

    Attributes:
        path: the file or folder read.
        fps: frames per second, or None when unknown (frame folders).
        num_frames: the frame count, or None when the container does not say.
    """

    path: Path
    fps: Optional[float]
    num_frames: Optional[int]

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"the frame count of {self.path} is unknown")
        return self.num_frames


class FrameFolderSource(VideoSource):
    """Frames from the image files of a folder, in natural name order."""

    def __init__(self, folder: Path, fps: Optional[float] = None) -> None:
        self.path = folder
        self.files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                            key=lambda p: natural_key(p.name))
        if not self.files:
            raise CrossVISError(f"no frames in folder {folder}; expected {'/'.join(IMAGE_EXTENSIONS)} files")
        self.fps = fps
        self.num_frames = len(self.files)

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.files:
            yield read_image(f)


class VideoFileSource(VideoSource):
    """Frames decoded from a video file by PyAV (or OpenCV when PyAV cannot open it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = "av"
        try:
            import av

            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise CrossVISError(f"{path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else None
                self.num_frames = int(stream.frames) or None
        except CrossVISError:
            raise
        except Exception as av_error:  # noqa: BLE001 - PyAV missing or unable to open: try OpenCV
            self.backend = "cv2"
            self._probe_opencv(av_error)

    def _probe_opencv(self, av_error: BaseException) -> None:
        try:
            import cv2
        except ImportError:
            raise CrossVISError(f"cannot decode video {self.path}: {av_error}") from None
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise CrossVISError(f"cannot decode video {self.path}: not a readable video file ({av_error})")
            fps = cap.get(cv2.CAP_PROP_FPS)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.fps = float(fps) if fps and fps > 0 else None
            self.num_frames = count if count > 0 else None
        finally:
            cap.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._iter_av() if self.backend == "av" else self._iter_cv2()

    def _iter_av(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise CrossVISError(f"error decoding video {self.path}: {exc}") from None

    def _iter_cv2(self) -> Iterator[np.ndarray]:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


def open_video_source(path: str | Path, fps: Optional[float] = None) -> VideoSource:
    """Open a video file or a folder of frames for streaming.

    Args:
        path: a video file (mp4, avi, ...) or a folder of jpg/jpeg/png/bmp frames.
        fps: the frame rate to report for a frame folder (ignored for files, which carry their own).

    Raises:
        CrossVISError: the path is missing, the folder has no frames, or the file cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise CrossVISError(f"video input not found: {path}; give a video file or a folder of frames")
    if path.is_dir():
        return FrameFolderSource(path, fps=fps)
    return VideoFileSource(path)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 10.0) -> int:
    """Encode H×W×3 uint8 RGB frames to a video file (libx264, falling back to mpeg4).

    Odd frame sizes are padded by one edge row/column (the yuv420p encoders need even sizes).

    Returns:
        The number of frames written.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise CrossVISError(f"write_video({path}): frames must be H×W×3 uint8 RGB, got shape {frame.shape}")
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if stream is None:
                stream = _add_stream(container, Fraction(fps).limit_denominator(1000), frame.shape[1], frame.shape[0])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            written += 1
        if stream is None:
            raise CrossVISError(f"write_video({path}): no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return written


def _add_stream(container: "object", rate: Fraction, width: int, height: int) -> "object":
    last_error: Optional[BaseException] = None
    for codec in ("libx264", "mpeg4"):
        try:
            stream = container.add_stream(codec, rate=rate)
        except Exception as exc:  # noqa: BLE001 - codec not built into this FFmpeg
            last_error = exc
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        return stream
    raise CrossVISError(f"no usable video encoder (tried libx264, mpeg4): {last_error}")
