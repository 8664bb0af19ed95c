import json
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import crossvis.data.annotations as annotations_module
from crossvis.data import YTVISFrameDataset, cocovid_to_tracks, decode_segmentation, load_vis_annotations
from crossvis.errors import CrossVISError

from vis_data_helpers import TRACKS, VIDEOS, list_rle


def test_decoded_masks_equal_source_arrays(vis_dataset):
    path, _, truth = vis_dataset
    data = load_vis_annotations(path)
    tracks = {t.id: t for ts in data.tracks.values() for t in ts}
    for (vid, f, aid), mask in truth.items():
        h, w, _ = VIDEOS[vid]
        np.testing.assert_array_equal(decode_segmentation(tracks[aid].segmentations[f], h, w), mask)


def test_null_frames_stay_null(list_dataset):
    data = load_vis_annotations(list_dataset[0])
    for ts in data.tracks.values():
        for t in ts:
            present = [f for f, s in enumerate(t.segmentations) if s is not None]
            assert present == TRACKS[t.id][3]


def test_labels_follow_sorted_category_ids_and_identities_sorted_track_ids(list_dataset):
    data = load_vis_annotations(list_dataset[0])
    assert data.label_of_category == {3: 0, 7: 1, 12: 2}
    assert data.class_names == ["c3", "c7", "c12"]
    assert data.num_classes == 3
    assert data.identity_of_track == {8: 0, 30: 1, 55: 2, 99: 3}
    assert data.num_identities == 4


@pytest.mark.parametrize("value", ["missing", [], None])
def test_files_without_ground_truth(tmp_path, list_dataset, value):
    raw = json.loads(list_dataset[0].read_text())
    if value == "missing":
        del raw["annotations"]
    else:
        raw["annotations"] = value
    (tmp_path / "valid.json").write_text(json.dumps(raw))
    data = load_vis_annotations(tmp_path / "valid.json")
    assert not data.has_annotations and len(data.videos) == 2
    assert all(ts == [] for ts in data.tracks.values()) and data.num_identities == 0


def test_ovis_occlusion_is_kept(tmp_path, list_dataset):
    raw = json.loads(list_dataset[0].read_text())
    for ann in raw["annotations"]:
        ann["occlusion"] = [None if s is None else "slight_occlusion" for s in ann["segmentations"]]
    (tmp_path / "ovis.json").write_text(json.dumps(raw))
    track = load_vis_annotations(tmp_path / "ovis.json").tracks[20][0]
    assert track.occlusion == ["slight_occlusion"] * 4


def test_cocovid_layout_is_converted_to_tracks(tmp_path, list_dataset):
    path, _, truth = list_dataset
    raw = json.loads(path.read_text())
    # build the mmdet CocoVID layout by hand: frames listed in reverse to test frame_id ordering
    videos, images, anns = [], [], []
    for v in raw["videos"]:
        videos.append({"id": v["id"], "name": f"v{v['id']}", "height": v["height"], "width": v["width"]})
        for f in reversed(range(v["length"])):
            images.append({"id": v["id"] * 100 + f, "video_id": v["id"], "frame_id": f,
                           "file_name": v["file_names"][f], "height": v["height"], "width": v["width"]})
    for t in raw["annotations"]:
        for f, seg in enumerate(t["segmentations"]):
            if seg is not None:
                anns.append({"id": len(anns) + 1, "image_id": t["video_id"] * 100 + f, "video_id": t["video_id"],
                             "instance_id": t["id"], "category_id": t["category_id"], "iscrowd": t["iscrowd"],
                             "segmentation": seg, "bbox": [0, 0, 1, 1], "area": 1})
    (tmp_path / "cocovid.json").write_text(json.dumps(
        {"videos": videos, "images": images, "annotations": anns, "categories": raw["categories"]}))
    data = load_vis_annotations(tmp_path / "cocovid.json")
    assert [v.file_names for v in data.videos] == [v["file_names"] for v in raw["videos"]]
    # one rule for track ids (crossvis.formats.cocovid_to_tracks): 1, 2, ... in order of first appearance,
    # whatever the instance ids were; the instance id is kept
    first_seen = list(dict.fromkeys(a["instance_id"] for a in anns))
    records = [t for ts in data.tracks.values() for t in ts]
    assert sorted((t.id, t.instance_id) for t in records) == [(i + 1, iid) for i, iid in enumerate(first_seen)]
    tracks = {t.instance_id: t for t in records}
    assert set(tracks) == set(TRACKS)
    for (vid, f, aid), mask in truth.items():
        h, w, _ = VIDEOS[vid]
        np.testing.assert_array_equal(decode_segmentation(tracks[aid].segmentations[f], h, w), mask)
    assert [f for f, s in enumerate(tracks[8].segmentations) if s is not None] == [2, 3, 5]
    assert cocovid_to_tracks({"videos": [], "images": [], "annotations": []})["annotations"] == []


def test_loading_decodes_no_mask(monkeypatch, list_dataset):
    calls = []
    real = mask_utils.decode
    monkeypatch.setattr(annotations_module.mask_utils, "decode", lambda rle: calls.append(1) or real(rle))
    path, images, _ = list_dataset
    ds = YTVISFrameDataset(str(path), str(images), seed=0)
    assert calls == []
    for ts in ds.data.tracks.values():  # only compressed RLE is kept: no arrays, no lists of ints
        for t in ts:
            assert all(s is None or isinstance(s["counts"], bytes) for s in t.segmentations)
    sample = ds[0]
    assert len(calls) == sample["instances"]["masks"].shape[0] > 0


def test_large_file_loads_in_seconds(tmp_path):
    rle = list_rle(np.pad(np.ones((4, 4), np.uint8), 10))
    videos = [{"id": v + 1, "height": 24, "width": 24, "length": 20,
               "file_names": [f"v{v}/{i:05d}.jpg" for i in range(20)]} for v in range(3000)]
    anns = [{"id": 2 * v + k + 1, "video_id": v + 1, "category_id": 1 + k, "iscrowd": 0,
             "segmentations": [rle if i % 3 else None for i in range(20)]} for v in range(3000) for k in range(2)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"videos": videos, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    start = time.perf_counter()
    json.loads(path.read_bytes())
    parse = time.perf_counter() - start
    start = time.perf_counter()
    data = load_vis_annotations(path)
    assert time.perf_counter() - start < 4 * parse + 2.0  # linear, dominated by the JSON parse
    assert len(data.videos) == 3000 and data.num_identities == 6000


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"videos": [\n  {"id": 1,,}\n]}')
    with pytest.raises(CrossVISError, match=r"bad\.json:2:12: malformed JSON"):
        load_vis_annotations(path)


def test_missing_file_and_unknown_category_raise(tmp_path, list_dataset):
    with pytest.raises(CrossVISError, match="does not exist"):
        load_vis_annotations(tmp_path / "nope.json")
    raw = json.loads(list_dataset[0].read_text())
    raw["annotations"][0]["category_id"] = 1234
    (tmp_path / "cat.json").write_text(json.dumps(raw))
    with pytest.raises(CrossVISError, match=r"annotation 55 \(annotations\[\d\], video \d+\): unknown category_id 1234"):
        load_vis_annotations(tmp_path / "cat.json")


def test_rle_counts_that_do_not_cover_the_mask_raise(tmp_path, list_dataset):
    raw = json.loads(list_dataset[0].read_text())
    raw["annotations"][1]["segmentations"][3]["counts"].append(5)
    (tmp_path / "rle.json").write_text(json.dumps(raw))
    with pytest.raises(CrossVISError, match=r"rle\.json: annotation 8 \(annotations\[1\], video 10\): uncompressed RLE counts sum to 773, "
                                             r"not h\*w = 24\*32 = 768 .* in frame 3"):
        load_vis_annotations(tmp_path / "rle.json")


def test_wrong_mask_size_raises():
    with pytest.raises(CrossVISError, match="mask size"):
        decode_segmentation(list_rle(np.zeros((5, 6), np.uint8)), 6, 5)
