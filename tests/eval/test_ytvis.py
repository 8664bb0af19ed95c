"""YouTube-VIS evaluator: the real fixture, perfect predictions, CocoVID conversion, quirks, errors."""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from crossvis.eval import YTVISEvaluator, cocovid_to_ytvis, evaluate_ytvis, is_cocovid
from crossvis.formats import read_json
from crossvis.errors import CrossVISError

from ytvis_cases import make_case, rect_mask, rle

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).parents[2].parent / "shared" / "data" / "ytvis-demo"
# Official ytvoseval on the mmtracking demo pair (reference §6).
OFFICIAL_DEMO_STATS = [0.6504950495049505, 1.0, 1.0, 0.6504950495049505, -1, -1, 0.35, 0.65, 0.65, 0.65, -1, -1]


def _stats(evaluator):
    return [float(v) for v in evaluator.stats]


@pytest.mark.parametrize("folder", [FIXTURES, SHARED], ids=["vendored", "shared"])
def test_demo_fixture_matches_official_numbers(folder):
    if not (folder / "ann_cocovid.json").exists():
        pytest.skip(f"{folder} not present")
    gt = read_json(folder / "ann_cocovid.json", "fixture")
    ev = YTVISEvaluator(cocovid_to_ytvis(gt))
    metrics = ev.evaluate(str(folder / "results.json"))
    np.testing.assert_allclose(_stats(ev), OFFICIAL_DEMO_STATS, rtol=0, atol=1e-12)
    assert metrics["AP"] == pytest.approx(0.6504950495049505, abs=1e-12)
    assert metrics["AR1"] == pytest.approx(0.35, abs=1e-12)
    assert metrics["AP/sedan"] == pytest.approx(0.6504950495049505, abs=1e-12)
    assert metrics["AP/person"] == -1


def test_cocovid_file_is_converted_automatically():
    direct = evaluate_ytvis(FIXTURES / "ann_cocovid.json", FIXTURES / "results.json")
    assert [direct[k] for k in ("AP", "AP50", "AR10")] == pytest.approx([0.6504950495049505, 1.0, 0.65], abs=1e-12)


def test_cocovid_conversion_layout():
    data = read_json(FIXTURES / "ann_cocovid.json", "fixture")
    before = copy.deepcopy(data)
    assert is_cocovid(data)
    out = cocovid_to_ytvis(data)
    assert data == before and not is_cocovid(out)
    assert out["videos"][0]["length"] == 20 and len(out["videos"][0]["file_names"]) == 20
    tracks = out["annotations"]
    assert len(tracks) == 2 and [t["id"] for t in tracks] == [1, 2]
    # 18 + 12 annotated frames (reference §6); nulls elsewhere, areas aligned with masks.
    assert sorted(sum(s is not None for s in t["segmentations"]) for t in tracks) == [12, 18]
    for t in tracks:
        assert len(t["segmentations"]) == len(t["areas"]) == len(t["bboxes"]) == 20
        assert [s is None for s in t["segmentations"]] == [a is None for a in t["areas"]]
    frame_of_image = {im["id"]: im["frame_id"] for im in data["images"]}
    first = data["annotations"][0]
    track = next(t for t in tracks if t["instance_id"] == first["instance_id"])
    assert track["areas"][frame_of_image[first["image_id"]]] == first["area"]


def _has_pixels(track) -> bool:
    return any(s and mask_utils.area(s) > 0 for s in track["segmentations"])


@pytest.mark.parametrize("source", ["fixture", "random"])
def test_ground_truth_as_predictions_scores_one(source):
    if source == "fixture":
        gt = cocovid_to_ytvis(read_json(FIXTURES / "ann_cocovid.json", "fixture"))
    else:
        gt, _ = make_case(7, n_videos=4)
        # Crowd tracks are ignored and empty tracks have IoU 0 with everything: leave them out.
        gt["annotations"] = [a for a in gt["annotations"] if not a["iscrowd"] and _has_pixels(a)]
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": [_compressed(s) for s in a["segmentations"]]} for a in gt["annotations"]]
    metrics = evaluate_ytvis(gt, results)
    for key in ("AP", "AP50", "AP75", "AR10", "AR100"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    if source == "fixture":  # two sedan tracks in one video: maxDet 1 recalls one of them
        assert metrics["AR1"] == pytest.approx(0.5, abs=1e-12)


def _compressed(seg):
    if not seg or isinstance(seg["counts"], str):
        return seg
    enc = mask_utils.frPyObjects(seg, *seg["size"])
    return {"size": enc["size"], "counts": enc["counts"].decode("ascii")}


def test_inputs_are_not_modified():
    gt, results = make_case(3)
    gt_copy, results_copy = copy.deepcopy(gt), copy.deepcopy(results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_ytvis(gt, results)
    assert gt == gt_copy and results == results_copy


def _one_video(length=3, h=8, w=8):
    return {"videos": [{"id": 1, "height": h, "width": w, "length": length}],
            "categories": [{"id": 1, "name": "a"}], "annotations": []}


def _track(box, frames, h=8, w=8, **extra):
    segs = [rle(rect_mask(h, w, box)) if present else None for present in frames]
    areas = [int(rect_mask(h, w, box).sum()) if present else None for present in frames]
    return {"video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": segs, "areas": areas, **extra}


def test_truncation_to_shorter_list():
    """A 1-frame prediction matching frame 0 of a 3-frame GT has IoU 1 (reference §3.2)."""
    gt = _one_video()
    gt["annotations"] = [_track((0, 0, 4, 4), [1, 1, 1], id=1)]
    gt["annotations"][0]["segmentations"][1] = rle(rect_mask(8, 8, (4, 4, 8, 8)))
    pred = {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [rle(rect_mask(8, 8, (0, 0, 4, 4)))]}
    assert evaluate_ytvis(gt, [pred])["AP75"] == pytest.approx(1.0, abs=1e-12)


def test_crowd_absorbs_predictions_and_areas_come_from_json():
    gt = _one_video()
    gt["annotations"] = [_track((0, 0, 4, 4), [1, 1, 1], id=1),
                         _track((4, 4, 8, 8), [1, 1, 1], id=2, iscrowd=1)]
    gt["annotations"][0]["areas"] = [20000, None, 0]  # JSON area: medium, despite 16-pixel masks
    crowd = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": gt["annotations"][1]["segmentations"]}] * 3
    hit = {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": gt["annotations"][0]["segmentations"]}
    metrics = evaluate_ytvis(gt, [hit, *crowd])
    # The three crowd matches are ignored, so precision stays 1; the GT counts as medium, not small.
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["APm"] == pytest.approx(1.0, abs=1e-12) and metrics["APs"] == -1


def test_wrong_size_masks_warn_and_count_zero():
    gt = _one_video(length=2)
    gt["annotations"] = [_track((0, 0, 4, 4), [1, 1], id=1)]
    pred = {"video_id": 1, "category_id": 1, "score": 0.9,
            "segmentations": [rle(rect_mask(8, 8, (0, 0, 4, 4))), rle(rect_mask(9, 9, (0, 0, 4, 4)))]}
    with pytest.warns(UserWarning, match="differ in size in video 1"):
        metrics = evaluate_ytvis(gt, [pred])
    # Frame 1 adds nothing to intersection or union, so the track IoU is 16/16 = 1.
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)


# -- errors ---------------------------------------------------------------------------------------
def _error(gt, results) -> str:
    with pytest.raises(CrossVISError) as info:
        evaluate_ytvis(gt, results)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_malformed_json_names_file_line_and_column(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('[{"video_id": 1,\n  "score": }]')
    message = _error(FIXTURES / "ann_cocovid.json", bad)
    assert f"{bad}:2:12: malformed JSON" in message


def test_missing_file():
    assert "does not exist" in _error(FIXTURES / "nope.json", [])


@pytest.mark.parametrize("results, expected", [
    ({"video_id": 1}, "must be a JSON list"),
    ([], "has no predictions"),
    ([{"video_id": 1, "category_id": 1, "segmentations": []}], "'score'"),
    ([{"video_id": 7, "category_id": 1, "score": 1.0, "segmentations": []}], "video_id 7"),
    ([{"video_id": 1, "category_id": 1, "score": "high", "segmentations": []}], "non-numeric score"),
])
def test_bad_results(results, expected):
    gt = _one_video()
    assert expected in _error(gt, results)


def test_uncompressed_rle_is_named():
    gt = _one_video()
    good = rle(rect_mask(8, 8, (0, 0, 2, 2)))
    bad = {"size": [8, 8], "counts": [0, 4, 60]}
    results = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [good, good]},
               {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [None, bad]}]
    message = _error(gt, results)
    assert "prediction #1 frame 1" in message and "uncompressed RLE" in message and "encode" in message


@pytest.mark.parametrize("mutate, expected", [
    (lambda g: g["annotations"][0].pop("areas"), "'areas'"),
    (lambda g: g["annotations"][0].update(id=0), "non-zero"),
    (lambda g: g.pop("categories"), "'categories'"),
])
def test_bad_ground_truth(mutate, expected):
    gt = _one_video()
    gt["annotations"] = [_track((0, 0, 4, 4), [1, 1, 1], id=1)]
    mutate(gt)
    pred = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [None]}]
    assert expected in _error(gt, pred)


def test_allow_empty_scores_all_misses():
    gt = _one_video()
    gt["annotations"] = [_track((0, 0, 4, 4), [1, 1, 1], id=1)]
    metrics = evaluate_ytvis(gt, [], allow_empty=True)
    assert [metrics[k] for k in ("AP", "AP50", "APs", "AR1", "AR100")] == [0, 0, 0, 0, 0]
    assert metrics["APm"] == -1 and metrics["APl"] == -1


def test_unannotated_ground_truth_gives_minus_one():
    gt = _one_video()
    pred = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [rle(rect_mask(8, 8, (0, 0, 2, 2)))]}]
    metrics = evaluate_ytvis(gt, pred)
    assert all(metrics[k] == -1 for k in ("AP", "AR1", "APs"))
    assert json.loads(json.dumps(metrics)) == metrics and not any(math.isnan(v) for v in metrics.values())
