"""Regressions of issue 14 for ground truth: corrupt masks are refused once, at load time, by the
readers, ``crossvis dataset check`` and the evaluator alike (the same validator)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from vis_data_helpers import make_vis_dataset

from crossvis.cli import main
from crossvis.data import YTVISFrameDataset, decode_segmentation, load_vis_annotations
from crossvis.errors import CrossVISError
from crossvis.eval import YTVISEvaluator


def corrupt(path, alter):
    """Alter frame 3 of annotation 8 (the second track, video 10) in a compressed-RLE file."""
    data = json.loads(path.read_text())
    seg = data["annotations"][1]["segmentations"][3]
    seg["counts"] = alter(seg["counts"])
    path.write_text(json.dumps(data))


ALTERATIONS = {
    "truncated": lambda c: c[: len(c) // 2],
    "one char changed": lambda c: c[:2] + ("1" if c[2] != "1" else "2") + c[3:],
    "extra runs": lambda c: c + "44",
    "bad character": lambda c: c[:1] + "~" + c[2:],
}


@pytest.mark.parametrize("alter", list(ALTERATIONS))
def test_corrupt_compressed_rle_is_refused_everywhere(tmp_path, capsys, alter):
    path, images, _ = make_vis_dataset(tmp_path, "str")
    corrupt(path, ALTERATIONS[alter])
    where = r"annotation 8 \(annotations\[1\], video 10\): compressed RLE .* in frame 3"
    with pytest.raises(CrossVISError, match=rf"{path.name}: {where}"):
        load_vis_annotations(path)
    with pytest.raises(CrossVISError, match=where):
        YTVISFrameDataset(str(path), str(images))
    with pytest.raises(CrossVISError, match=where):
        YTVISEvaluator(path)
    assert main(["dataset", "check", str(path), "--images", str(images)]) == 1
    out = capsys.readouterr().out.splitlines()
    errors = [line for line in out if line.startswith("error:")]
    assert len(errors) == 1 and "frame 3" in errors[0] and "compressed RLE" in errors[0]
    assert out[-1].endswith("1 errors, 0 warnings")


def test_the_same_file_unaltered_loads_and_decodes_exactly(tmp_path):
    path, _, truth = make_vis_dataset(tmp_path, "str")
    data = load_vis_annotations(path)
    track = next(t for t in data.tracks[10] if t.id == 8)
    np.testing.assert_array_equal(decode_segmentation(track.segmentations[3], 24, 32), truth[(10, 3, 8)])


@pytest.mark.parametrize("seg, message", [
    ({"size": [24, 32], "counts": [0, 700]}, "uncompressed RLE counts sum to 700"),
    ({"size": [24, 32], "counts": [0, -5, 773]}, "negative run length"),
    ({"size": [24, 32], "counts": [0.5, 767.5]}, "flat list of ints"),
    ({"size": [24, 31], "counts": "0"}, r"mask size \[24, 31\] differs from the video size \[24, 32\]"),
    ({"size": [24, 32]}, "needs 'size' and 'counts'"),
    ([[0, 0, 1e9, 0, 5, 5]], "polygons must be"),
    ([[0, 0, 5]], "polygons must be"),
    (7, "unrecognised mask type int"),
])
def test_other_bad_masks_name_file_annotation_and_frame(tmp_path, seg, message):
    path, _, _ = make_vis_dataset(tmp_path, "list")
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentations"][3] = seg
    path.write_text(json.dumps(data))
    with pytest.raises(CrossVISError, match=rf"annotation 8 \(annotations\[1\], video 10\): .*{message}.* frame 3"):
        load_vis_annotations(path)


def test_decode_segmentation_validates_its_input():
    good = mask_utils.encode(np.asfortranarray(np.eye(4, dtype=np.uint8)))["counts"]
    assert decode_segmentation({"size": [4, 4], "counts": good}, 4, 4).sum() == 4
    with pytest.raises(CrossVISError, match="compressed RLE"):
        decode_segmentation({"size": [4, 4], "counts": good[:-1]}, 4, 4)
