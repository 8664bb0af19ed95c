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


def _frame_and_masks(paths, data, video_index, frame):
    video = data["videos"][video_index]
    image = np.asarray(Image.open(paths.images / video["file_names"][frame]), dtype=np.float32)
    segs = [t["segmentations"][frame] for t in data["annotations"]
            if t["video_id"] == video["id"] and t["segmentations"][frame]]
    masks = (mask_utils.decode(mask_utils.frPyObjects(segs, video["height"], video["width"])).transpose(2, 0, 1)
             if segs else np.zeros((0, video["height"], video["width"]), np.uint8))
    return image, masks, [t["category_id"] for t in data["annotations"]
                          if t["video_id"] == video["id"] and t["segmentations"][frame]]


def test_varied_look_differs_from_the_simple_one(tmp_path):
    """The default look varies what a model must not rely on: backgrounds are textured (far more
    large-scale variation than the simple gradient), an object's colour does not give its category,
    tracks cross (their boxes overlap) and some leave through the frame border."""
    kwargs = dict(num_videos=16, num_frames=8, height=64, width=96, max_objects=4, seed=5)
    varied = generate_synthetic_dataset(tmp_path / "varied", **kwargs)
    simple = generate_synthetic_dataset(tmp_path / "simple", appearance="simple", **kwargs)

    def stats(paths):
        data = json.loads(paths.annotations.read_text())
        background_spread, colours = [], {}
        for v in range(len(data["videos"])):
            image, masks, categories = _frame_and_masks(paths, data, v, 0)
            outside = masks.sum(axis=0) == 0
            # spread of 8x8-block means of the background (texture, not pixel noise)
            blocks = image[: 64 // 8 * 8, : 96 // 8 * 8].reshape(8, 8, 12, 8, 3).mean(axis=(1, 3))
            keep = outside[: 64 // 8 * 8, : 96 // 8 * 8].reshape(8, 8, 12, 8).all(axis=(1, 3))
            if keep.sum() > 6:  # residual after a least-squares plane: a gradient leaves none
                yy, xx = np.nonzero(keep)
                design = np.stack([yy, xx, np.ones_like(yy)], axis=1).astype(np.float64)
                fit, *_ = np.linalg.lstsq(design, blocks[keep], rcond=None)
                background_spread.append(float((blocks[keep] - design @ fit).std(axis=0).mean()))
            for mask, category in zip(masks, categories):
                if mask.sum() > 30:
                    colours.setdefault(category, []).append(image[mask.astype(bool)].mean(axis=0))
        spread = max(float(np.std(np.array(c), axis=0).mean()) for c in colours.values() if len(c) > 2)
        return float(np.median(background_spread)), spread, data

    bg_varied, colour_varied, data = stats(varied)
    bg_simple, colour_simple, _ = stats(simple)
    assert bg_varied > 3 * bg_simple, (bg_varied, bg_simple)
    assert colour_varied > 25 and colour_simple < 15, (colour_varied, colour_simple)
    crossings = leaving = 0
    for video in data["videos"]:
        tracks = [t for t in data["annotations"] if t["video_id"] == video["id"]]
        for f in range(video["length"]):
            boxes = [t["bboxes"][f] for t in tracks if t["bboxes"][f]]
            crossings += any(a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
                             for i, a in enumerate(boxes) for b in boxes[i + 1:])
        for t in tracks:
            last = max(f for f, b in enumerate(t["bboxes"]) if b)
            b = t["bboxes"][last]
            leaving += b[0] <= 0 or b[1] <= 0 or b[0] + b[2] >= video["width"] or b[1] + b[3] >= video["height"]
    assert crossings >= 5 and leaving >= 3


def test_unknown_appearance_is_refused(tmp_path):
    import pytest
    from crossvis.errors import CrossVISError

    with pytest.raises(CrossVISError, match="appearance"):
        generate_synthetic_dataset(tmp_path, num_videos=1, appearance="photo")
