"""The one CocoVID rule: detection, frame order and track ids."""
from __future__ import annotations

import copy

import pytest

from crossvis.errors import CrossVISError
from crossvis.formats import cocovid_to_tracks, is_cocovid, load_annotations

RLE = {"size": [2, 2], "counts": "04"}  # 0 zeros, then 4 ones: a full 2×2 mask


def cocovid(instance_ids=(0, 1, 0), frame_ids=(1, 2)):
    """Two videos of two frames; instance ids restart in each video (as some converters write them)."""
    videos = [{"id": 1, "height": 2, "width": 2, "file_names": ["stale"]}, {"id": 2, "height": 2, "width": 2}]
    images = [{"id": 10 * v + f, "video_id": v, "frame_id": f, "file_name": f"v{v}/{f}.jpg"}
              for v in (1, 2) for f in reversed(frame_ids)]
    anns = [{"id": 1, "image_id": 10 + frame_ids[1], "instance_id": instance_ids[0], "category_id": 1,
             "segmentation": RLE, "area": 4, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 10 + frame_ids[0], "instance_id": instance_ids[1], "category_id": 1,
             "segmentation": RLE, "area": 4, "bbox": [0, 0, 2, 2]},
            {"id": 3, "image_id": 20 + frame_ids[0], "instance_id": instance_ids[2], "category_id": 1,
             "segmentation": RLE, "area": 4, "bbox": [0, 0, 2, 2]}]
    return {"videos": videos, "images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}


def test_detection_rule_ignores_file_names():
    data = cocovid()
    assert is_cocovid(data)  # although video 1 lists file_names
    per_track = cocovid_to_tracks(data)
    assert not is_cocovid(per_track)
    assert not is_cocovid({**per_track, "images": []})  # tracks decide, not a stray 'images' key
    assert is_cocovid({"videos": [], "images": [], "annotations": []})


def test_tracks_renumbered_by_first_appearance_and_frames_by_frame_id():
    data = cocovid()
    before = copy.deepcopy(data)
    out = cocovid_to_tracks(data)
    assert data == before
    tracks = out["annotations"]
    # (video 1, instance 0), (video 1, instance 1), (video 2, instance 0): unique non-zero ids
    assert [(t["id"], t["video_id"], t["instance_id"]) for t in tracks] == [(1, 1, 0), (2, 1, 1), (3, 2, 0)]
    assert out["videos"][0]["file_names"] == ["v1/1.jpg", "v1/2.jpg"]  # 1-based frame ids, sorted
    assert [s is not None for s in tracks[0]["segmentations"]] == [False, True]
    assert [s is not None for s in tracks[1]["segmentations"]] == [True, False]
    parsed = load_annotations(data, need_file_names=True)
    assert [t.id for t in parsed.tracks] == [1, 2, 3] and parsed.layout == "CocoVID"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["images"][1].update(frame_id=2), "two images with frame_id 2"),
    (lambda d: d["images"][0].update(video_id=9), "unknown video_id 9"),
    (lambda d: d["annotations"][0].update(image_id=99), "unknown image_id 99"),
    (lambda d: d["annotations"][0].pop("instance_id"), "no 'instance_id' key"),
    (lambda d: d["annotations"][0].update(instance_id=[1]), "must be an integer id"),
    (lambda d: d["annotations"][1].update(image_id=12, instance_id=0), "annotated twice"),
])
def test_conversion_errors(mutate, message):
    data = cocovid()
    mutate(data)
    with pytest.raises(CrossVISError, match=message):
        cocovid_to_tracks(data)
    with pytest.raises(CrossVISError, match="CocoVID layout: cannot convert to tracks"):
        load_annotations(data)
