import json

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from crossvis.data import SHAPES, YTVISPairDataset, generate_synthetic_dataset, generate_synthetic_splits
from crossvis.data.check import check_annotations
from crossvis.data.synthetic import rle_from_mask


def test_same_seed_gives_byte_identical_json(tmp_path, synthetic_split):
    again = generate_synthetic_dataset(tmp_path / "again", num_videos=3, num_frames=6, height=48, width=64,
                                       num_categories=4, max_objects=3, seed=3)
    assert again.annotations.read_bytes() == synthetic_split.annotations.read_bytes()
    other = generate_synthetic_dataset(tmp_path / "other", num_videos=3, num_frames=6, height=48, width=64,
                                       num_categories=4, max_objects=3, seed=4)
    assert other.annotations.read_bytes() != synthetic_split.annotations.read_bytes()


def test_passes_dataset_check(synthetic_split):
    report = check_annotations(synthetic_split.annotations, synthetic_split.images, verify_images=True)
    assert report.problems == []
    assert (report.num_videos, report.num_frames) == (3, 18)


def test_annotations_are_consistent_with_masks(synthetic_split):
    data = json.loads(synthetic_split.annotations.read_text())
    assert [c["name"] for c in data["categories"]] == list(SHAPES[:4])
    assert all(isinstance(s["counts"], list) for t in data["annotations"] for s in t["segmentations"] if s)
    for track in data["annotations"]:
        video = data["videos"][track["video_id"] - 1]
        assert len(track["segmentations"]) == len(track["areas"]) == len(track["bboxes"]) == video["length"]
        for seg, area, bbox in zip(track["segmentations"], track["areas"], track["bboxes"]):
            assert (seg is None) == (area is None) == (bbox is None)
            if seg is None:
                continue
            rle = mask_utils.frPyObjects(seg, video["height"], video["width"])
            assert area == int(mask_utils.area(rle)) > 0
            assert bbox == mask_utils.toBbox(rle).tolist()


def test_masks_are_visible_parts(synthetic_split):
    """Masks of one frame never overlap (occluded parts are removed) and objects are reasonably large."""
    data = json.loads(synthetic_split.annotations.read_text())
    side_fractions = []
    for video in data["videos"]:
        tracks = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        for f in range(video["length"]):
            segs = [t["segmentations"][f] for t in tracks if t["segmentations"][f]]
            if not segs:
                continue
            masks = mask_utils.decode(mask_utils.frPyObjects(segs, video["height"], video["width"]))
            assert masks.sum(axis=2).max() <= 1
            side_fractions += [max(b[2], b[3]) / min(video["height"], video["width"])
                               for t in tracks if (b := t["bboxes"][f])]
    assert 0.15 < float(np.median(side_fractions)) < 0.6


def test_objects_move_and_leave(tmp_path):
    paths = generate_synthetic_dataset(tmp_path, num_videos=12, num_frames=10, height=64, width=96,
                                       max_objects=4, seed=11)
    data = json.loads(paths.annotations.read_text())
    moved = late_or_early = 0
    for track in data["annotations"]:
        boxes = [b for b in track["bboxes"] if b]
        moved += abs(boxes[-1][0] - boxes[0][0]) + abs(boxes[-1][1] - boxes[0][1]) > 2
        late_or_early += track["segmentations"][0] is None or track["segmentations"][-1] is None
    assert moved >= len(data["annotations"]) // 2 and late_or_early >= 1
    frame = np.asarray(Image.open(paths.images / data["videos"][0]["file_names"][0]))
    assert frame.shape == (64, 96, 3)


def test_splits_are_distinct_and_loadable(tmp_path):
    splits = generate_synthetic_splits(tmp_path, train_videos=2, test_videos=2, num_frames=4, height=32, width=48)
    assert set(splits) == {"train", "test"}
    assert splits["train"].annotations == tmp_path / "train" / "annotations.json"
    a = np.asarray(Image.open(splits["train"].images / "train_0000/00000.jpg"))
    b = np.asarray(Image.open(splits["test"].images / "test_0000/00000.jpg"))
    assert not np.array_equal(a, b)
    pair = YTVISPairDataset(str(splits["test"].annotations), str(splits["test"].images), seed=0)[0]
    assert pair["anchor"]["image"].dtype == torch.uint8 and pair["anchor"]["instances"]["masks"].shape[0] >= 1


def test_rle_from_mask_round_trips_through_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (1, 1), (16, 3)]:
        for p in (0.0, 0.5, 1.0):
            mask = (rng.random(shape) < p).astype(np.uint8)
            decoded = mask_utils.decode(mask_utils.frPyObjects(rle_from_mask(mask), *shape))
            np.testing.assert_array_equal(decoded, mask)
