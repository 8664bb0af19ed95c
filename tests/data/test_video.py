import numpy as np
import pytest
from PIL import Image

from crossvis.data.video import open_video_source, write_video
from crossvis.errors import CrossVISError


def _frames(n, h=48, w=64):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i + 1) * w // n] = rng.integers(50, 250, size=3)  # a growing coloured band
        out.append(f)
    return out


def test_folder_source_in_natural_order(tmp_path):
    frames = _frames(12)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_video_source(tmp_path, fps=7)
    assert len(source) == 12 and source.fps == 7
    assert [p.name for p in source.files][:3] == ["frame0.png", "frame1.png", "frame2.png"]
    assert source.files[10].name == "frame10.png"
    read = list(source)
    for a, b in zip(read, frames):
        assert a.dtype == np.uint8 and a.shape == (48, 64, 3)
        np.testing.assert_array_equal(a, b)


def test_write_then_read_mp4(tmp_path):
    frames = _frames(9)
    path = tmp_path / "clip.mp4"
    assert write_video(iter(frames), path, fps=6) == 9
    source = open_video_source(path)
    assert source.num_frames == 9 and source.fps == pytest.approx(6)
    read = list(source)
    assert len(read) == 9 and all(r.shape == (48, 64, 3) and r.dtype == np.uint8 for r in read)
    assert np.abs(read[4].astype(int) - frames[4].astype(int)).mean() < 12  # lossy but close


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    write_video(_frames(3, h=31, w=45), path, fps=5)
    assert next(iter(open_video_source(path))).shape == (32, 46, 3)


def test_errors_are_clear(tmp_path):
    with pytest.raises(CrossVISError, match="not found"):
        open_video_source(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrossVISError, match="no frames in folder"):
        open_video_source(tmp_path / "empty")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CrossVISError, match="cannot decode video .*junk.mp4"):
        list(open_video_source(junk))
    with pytest.raises(CrossVISError, match="no frames to write"):
        write_video([], tmp_path / "none.mp4")
