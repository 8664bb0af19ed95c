import json
import shutil

import pytest

from crossvis.cli import main


@pytest.fixture
def synth_copy(tmp_path, synthetic_split):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_split.root, root)
    return root / "annotations.json", root / "JPEGImages"


def test_clean_dataset_exits_zero(synth_copy, capsys):
    ann, images = synth_copy
    assert main(["dataset", "check", str(ann), "--images", str(images)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{ann}: per-track layout, 3 videos (18 frames), {out[0].split(', ')[2].split()[0]} tracks, "
                   f"4 categories: 0 errors, 0 warnings"]


def test_broken_copy_lists_every_problem(synth_copy, capsys):
    ann, images = synth_copy
    data = json.loads(ann.read_text())
    v0, v1 = data["videos"][0], data["videos"][1]
    missing = images / v0["file_names"][2]
    missing.unlink()
    v1["file_names"] = v1["file_names"][:-1]                 # length now disagrees with file_names
    t0, t1 = data["annotations"][0], data["annotations"][1]
    t0["segmentations"] = t0["segmentations"][:-2]          # truncated per-frame list
    t1["id"] = 0
    data["annotations"][2]["id"] = data["annotations"][3]["id"]
    data["annotations"][-1]["category_id"] = 77
    seg = next(s for s in data["annotations"][-1]["segmentations"] if s)
    seg["size"] = [10, 10]
    data["videos"].append(dict(v0))                          # duplicate video id
    ann.write_text(json.dumps(data))
    assert main(["dataset", "check", str(ann), "--images", str(images)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    text = "\n".join(errors)
    assert f"missing frame file {missing}" in text
    assert "'length' is 6 but 'file_names' has 5 entries" in text
    assert f"annotation {t0['id']} (annotations[0], video {t0['video_id']}): 'segmentations' has 4 entries but the video has 6" in text
    assert "annotation id 0; ids must be non-zero" in text
    assert text.count(f"annotation id {data['annotations'][3]['id']} used by 2 annotations") == 2
    assert "unknown category_id 77" in text
    assert "mask size [10, 10] differs from the video size [48, 64]" in text
    assert text.count(f"video id {v0['id']} used by 2 videos") == 2
    assert all(line.startswith(f"error: {ann}: ") for line in errors)
    assert lines[-1].endswith(f"{len(errors)} errors, 0 warnings")


def test_check_without_images_and_bad_json(tmp_path, synth_copy, capsys):
    ann, _ = synth_copy
    assert main(["dataset", "check", str(ann)]) == 0
    assert "frame files were not checked" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{\"videos\": [")
    assert main(["dataset", "check", str(bad)]) == 2
    assert f"{bad}:1:13: malformed JSON" in capsys.readouterr().err


def test_synth_command_writes_a_checkable_dataset(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["dataset", "synth", str(out), "--videos", "2", "--test-videos", "1", "--frames", "3",
                 "--size", "32x40", "--categories", "3", "--seed", "5"]) == 0
    assert "generated in" in capsys.readouterr().out
    data = json.loads((out / "test" / "annotations.json").read_text())
    assert len(data["videos"]) == 1 and len(data["categories"]) == 3
    assert data["videos"][0]["width"] == 40 and data["videos"][0]["height"] == 32
    assert main(["dataset", "check", str(out / "train" / "annotations.json"),
                 "--images", str(out / "train" / "JPEGImages")]) == 0
    assert main(["dataset", "stats", str(out / "train" / "annotations.json")]) == 0
    assert "2 videos, 6 frames" in capsys.readouterr().out
    assert main(["dataset", "synth", str(out), "--size", "big"]) == 2
