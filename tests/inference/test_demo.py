"""``crossvis demo`` on an mp4 and on a folder of frames, and the overlay drawing."""
from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import yaml
from PIL import Image
from tracking_fixtures import save_checkpoint, single_thread, synthetic_frames, tiny_recipe  # noqa: F401 (autouse fixture)

from crossvis.cli import main
from crossvis.data.video import open_video_source, write_video
from crossvis.inference.predictor import Predictor
from crossvis.inference.visualize import draw_tracked_instances, save_instance_masks, track_color
from crossvis.structures import TrackedInstances


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    torch.manual_seed(0)
    ckpt = save_checkpoint(Predictor(tiny_recipe()).model, root / "model.pth")
    return root, recipe, ckpt


def check_results(out, n_frames, h, w):
    results = json.loads((out / "results.json").read_text())
    assert results, "the tiny model with score_threshold 0 detects something"
    for entry in results:
        assert entry["video_id"] == 1 and len(entry["segmentations"]) == n_frames
        for rle in entry["segmentations"]:
            if rle is not None:
                assert rle["size"] == [h, w]
                assert mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).shape == (h, w)
    video = json.loads((out / "video.json").read_text())["videos"][0]
    assert (video["id"], video["height"], video["width"], video["length"]) == (1, h, w, n_frames)
    return results


def test_demo_on_an_mp4(model_files, tmp_path, capsys):
    root, recipe, ckpt = model_files
    frames = synthetic_frames(4, 72, 128)
    write_video(frames, tmp_path / "clip.mp4", fps=8)
    out = tmp_path / "out"
    code = main(["demo", str(tmp_path / "clip.mp4"), "--recipe", str(recipe), "--checkpoint", str(ckpt),
                 "--output", str(out), "--score-threshold", "0", "--save-masks", "--no-progress"])
    assert code == 0
    overlays = sorted((out / "frames").iterdir())
    assert [p.name for p in overlays] == [f"{i:06d}.jpg" for i in range(4)]
    assert Image.open(overlays[0]).size == (128, 72)
    decoded = list(open_video_source(out / "overlay.mp4"))
    assert len(decoded) == 4 and decoded[0].shape == (72, 128, 3)
    results = check_results(out, 4, 72, 128)
    pngs = sorted((out / "masks").glob("*/*.png"))
    assert len(pngs) == sum(rle is not None for r in results for rle in r["segmentations"])
    track, frame = int(pngs[0].parent.name), int(pngs[0].stem)
    rle = results[track]["segmentations"][frame]
    expected = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}) * 255
    np.testing.assert_array_equal(np.asarray(Image.open(pngs[0])), expected)
    summary = capsys.readouterr().out
    assert "4 frames (128x72)" in summary and "frames/s" in summary


def test_demo_on_a_frame_folder_of_odd_size_with_max_frames(model_files, tmp_path):
    root, recipe, ckpt = model_files
    folder = tmp_path / "frames_in"
    folder.mkdir()
    for i, frame in enumerate(synthetic_frames(5, 61, 83)):
        Image.fromarray(frame).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    assert main(["demo", str(folder), "--recipe", str(recipe), "--checkpoint", str(ckpt), "--output", str(out),
                 "--max-frames", "3", "--no-video", "--no-progress", "--set", "tracker.type=masktrack"]) == 0
    assert len(list((out / "frames").glob("*.jpg"))) == 3
    assert not (out / "overlay.mp4").exists() and not (out / "masks").exists()
    check_results(out, 3, 61, 83)


def test_demo_refuses_frames_of_changing_size(model_files, tmp_path, capsys):
    root, recipe, ckpt = model_files
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(synthetic_frames(1, 64, 96)[0]).save(folder / "0.png")
    Image.fromarray(synthetic_frames(1, 80, 96)[0]).save(folder / "1.png")
    code = main(["demo", str(folder), "--recipe", str(recipe), "--checkpoint", str(ckpt),
                 "--output", str(tmp_path / "out"), "--no-progress", "--no-video"])
    assert code == 2 and "frame 1 is 96x80 but the first frame is 96x64" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["input", "recipe", "checkpoint"])
def test_demo_missing_files_are_one_line_errors(model_files, tmp_path, capsys, missing):
    root, recipe, ckpt = model_files
    paths = {"input": str(root), "recipe": str(recipe), "checkpoint": str(ckpt)}
    paths[missing] = str(tmp_path / f"no_{missing}")
    code = main(["demo", paths["input"], "--recipe", paths["recipe"], "--checkpoint", paths["checkpoint"],
                 "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("crossvis: error:") and f"no_{missing}" in err and err.count("\n") == 1


def test_overlay_draws_track_colours_inside_masks():
    frame = np.full((40, 60, 3), 128, np.uint8)
    masks = torch.zeros((2, 40, 60), dtype=torch.bool)
    masks[0, 20:36, 5:25] = True
    masks[1, 20:36, 35:55] = True
    inst = TrackedInstances(boxes=torch.tensor([[5.0, 20, 25, 36], [35, 20, 55, 36]]), scores=torch.tensor([0.9, 0.2]),
                            labels=torch.tensor([0, 1]), image_size=(40, 60), masks=masks,
                            track_ids=torch.tensor([3, 4]))
    out = draw_tracked_instances(frame, inst, lambda label: f"c{label}", score_threshold=0.5, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    expected = np.round(0.5 * 128 + 0.5 * np.array(track_color(3))).astype(np.uint8)
    np.testing.assert_array_equal(out[28, 15], expected)            # inside mask 0, away from box/label
    np.testing.assert_array_equal(out[28, 45], frame[28, 45])       # instance 1 is below the threshold
    np.testing.assert_array_equal(frame, np.full((40, 60, 3), 128, np.uint8))  # input untouched


def test_track_colours_are_stable_and_distinct():
    colours = [track_color(i) for i in range(30)]
    assert colours == [track_color(i) for i in range(30)]
    assert len(set(colours)) == 30
    arr = np.array(colours[:8], float)
    distances = np.linalg.norm(arr[:, None] - arr[None], axis=-1)[np.triu_indices(8, 1)]
    assert distances.min() > 40


def test_save_instance_masks(tmp_path):
    masks = torch.zeros((1, 5, 7), dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    inst = TrackedInstances(boxes=torch.zeros(1, 4), scores=torch.tensor([0.8]), labels=torch.tensor([0]),
                            image_size=(5, 7), masks=masks, track_ids=torch.tensor([12]))
    assert save_instance_masks(tmp_path, 9, inst) == 1
    png = np.asarray(Image.open(tmp_path / "12" / "000009.png"))
    np.testing.assert_array_equal(png, masks[0].numpy().astype(np.uint8) * 255)
