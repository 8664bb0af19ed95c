"""The independently written foreign test-set writer produces valid YouTube-VIS data."""
import json
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import foreign_vis  # noqa: E402

from crossvis.data import YTVISPairDataset  # noqa: E402
from crossvis.data.check import check_annotations  # noqa: E402


def test_foreign_split_is_valid_and_masks_are_visible_parts(tmp_path):
    foreign_vis.write_split(tmp_path, "train", videos=4, frames=5, height=48, width=80, seed=3, style="mixed",
                            palette="free", max_objects=3)
    annotations = tmp_path / "train" / "annotations.json"
    report = check_annotations(annotations, tmp_path / "train" / "JPEGImages", verify_images=True)
    assert report.problems == [] and (report.num_videos, report.num_frames) == (4, 20)
    data = json.loads(annotations.read_text())
    assert [c["name"] for c in data["categories"]] == foreign_vis.CATEGORIES
    for video in data["videos"]:
        tracks = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        for f in range(video["length"]):
            segs = [t["segmentations"][f] for t in tracks if t["segmentations"][f]]
            if segs:
                assert mask_utils.decode(segs).sum(axis=2).max() <= 1  # nearer objects hide farther ones
    pair = YTVISPairDataset(str(annotations), str(tmp_path / "train" / "JPEGImages"), seed=0)[0]
    assert pair["anchor"]["image"].shape == (3, 48, 80)
    assert np.asarray(pair["anchor"]["instances"]["masks"]).sum() > 0
