"""The one frame reader (``read_image``): every common image kind read as displayed, or refused clearly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crossvis.data import open_video_source, read_image
from crossvis.errors import CrossVISError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 8), dtype=np.uint8)


def test_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(GRAY.astype(np.uint16) * 257).save(path)  # 8-bit values stretched to 16 bits
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (6, 8, 3)
    np.testing.assert_array_equal(image, np.repeat(GRAY[:, :, None], 3, axis=2))
    ramp = np.array([[0, 128, 129, 65535, 32767]], dtype=np.uint16)
    Image.fromarray(ramp).save(path)
    assert read_image(path)[0, :, 0].tolist() == [0, 0, 1, 255, 127]  # round(v / 257)


def test_palette_grayscale_and_rgba(tmp_path):
    palette = Image.fromarray(RGB).quantize(8)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    Image.fromarray(GRAY).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.repeat(GRAY[:, :, None], 3, axis=2))
    rgba = np.dstack([RGB, np.full((6, 8), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)  # alpha dropped, colours kept


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # pure red
    image = read_image(tmp_path / "c.jpg")
    assert image.shape == (6, 8, 3) and image[..., 0].min() > 230 and image[..., 1:].max() < 25


def test_exif_rotation_is_applied(tmp_path):
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, 0] = 255  # top-left pixel of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "r.png", exif=exif)
    image = read_image(tmp_path / "r.png")
    np.testing.assert_array_equal(image, np.rot90(stored, k=-1))
    assert image.shape == (6, 4, 3)


@pytest.mark.parametrize("make, message", [
    (lambda p: Image.fromarray(np.ones((4, 4), np.float32)).save(p.with_suffix(".tiff")), "unsupported image mode F"),
    (lambda p: Image.fromarray(np.full((4, 4), 70000, np.int32)).save(p.with_suffix(".tiff")),
     "32-bit integer samples"),
    (lambda p: p.with_suffix(".tiff").write_bytes(b"II*\x00garbage"), "corrupt or not an image"),
])
def test_unsupported_files_are_refused(tmp_path, make, message):
    make(tmp_path / "x")
    with pytest.raises(CrossVISError, match=rf"cannot read frame .*x\.tiff: .*{message}"):
        read_image(tmp_path / "x.tiff")


def test_truncated_png_is_refused(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CrossVISError, match=r"cannot read frame .*t\.png"):
        read_image(tmp_path / "t.png")


def test_frame_folders_use_the_same_reader(tmp_path):
    Image.fromarray(GRAY.astype(np.uint16) * 257).save(tmp_path / "0.png")
    Image.fromarray(RGB).quantize(4).save(tmp_path / "1.png")
    frames = list(open_video_source(tmp_path))
    np.testing.assert_array_equal(frames[0], read_image(tmp_path / "0.png"))
    assert all(f.dtype == np.uint8 and f.shape == (6, 8, 3) for f in frames)


def _write_png_rgb16(path, array: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_rgb_png_keeps_its_most_significant_bits(tmp_path):
    deep = (np.arange(24).reshape(2, 4, 3) * 2500).astype(np.uint16)
    _write_png_rgb16(tmp_path / "rgb16.png", deep)
    image = read_image(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(image, (deep >> 8).astype(np.uint8))
