"""The OVIS protocol (reference/vis-evaluation.md §3.9): occlusion scores, bins, errors and the CLI.

Expected numbers are worked out by hand in the comments; the random cross-check against an
independent brute force lives in test_ytvis_bruteforce.py.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from crossvis.cli import main
from crossvis.errors import CrossVISError
from crossvis.eval import OVIS_METRIC_KEYS, YTVISEvaluator, evaluate_ovis, evaluate_ytvis, occlusion_score
from crossvis.eval.ytvis import METRIC_KEYS

from ytvis_cases import make_ovis_case, rect_mask, rle

H = W = 10
NO, SLIGHT, SEVERE = "no_occlusion", "slight_occlusion", "severe_occlusion"
BOX_A, BOX_B, BOX_ELSEWHERE = (0, 0, 5, 5), (5, 5, 10, 10), (0, 7, 3, 10)


def masks(box, frames):
    return [rle(rect_mask(H, W, box)) for _ in range(frames)]


def gt_track(track_id, box, occlusion, category=1):
    frames = len(occlusion)
    return {"id": track_id, "video_id": 1, "category_id": category, "iscrowd": 0,
            "segmentations": masks(box, frames), "areas": [25] * frames, "occlusion": occlusion}


def ground_truth(*tracks, frames=2):
    return {"videos": [{"id": 1, "height": H, "width": W, "length": frames}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": list(tracks)}


def pred(box, score, frames=2):
    return {"video_id": 1, "category_id": 1, "score": score, "segmentations": masks(box, frames)}


def light_and_heavy_case(with_unmatched: bool):
    """GT A is light (score 0), GT B heavy (0.75); P2 = B (score .9), P1 = A (.8), U matches nothing (.95)."""
    gt = ground_truth(gt_track(1, BOX_A, [NO, NO]), gt_track(2, BOX_B, [SEVERE, SLIGHT]))
    results = [pred(BOX_B, 0.9), pred(BOX_A, 0.8)]
    if with_unmatched:
        results.append(pred(BOX_ELSEWHERE, 0.95))
    return gt, results


@pytest.mark.parametrize("labels, expected", [
    ([NO], 0.0),
    ([NO, NO, NO], 0.0),
    ([SLIGHT], 0.25),
    ([SEVERE, SLIGHT], 0.75),              # sorted [.25, .75]; top ceil(2/2) = 1 -> .75
    ([NO, SEVERE, NO], 0.375),             # [0, 0, .75]; top 2 -> (0 + .75) / 2
    ([NO, SLIGHT, SEVERE], 0.5),           # [0, .25, .75]; top 2 -> (.25 + .75) / 2
    ([None, NO, SLIGHT, None, SLIGHT, SEVERE], 0.5),  # nulls skipped: [0, .25, .25, .75]; top 2
    ([None, SLIGHT, None], 0.25),
    ([SLIGHT, NO, NO, NO, NO], 0.0833333333333333),   # [0, 0, 0, 0, .25]; top 3 -> .25 / 3
])
def test_occlusion_score_by_hand(labels, expected):
    assert math.isclose(occlusion_score(labels, "track"), expected, rel_tol=0, abs_tol=1e-15)


def test_light_and_heavy_bins_by_hand():
    gt, results = light_and_heavy_case(with_unmatched=True)
    m = evaluate_ovis(gt, results)
    assert list(m)[:18] == list(OVIS_METRIC_KEYS)
    # Every match has IoU 1, so all ten thresholds agree. Score order: U (FP), P2, P1.
    # all: FP, TP, TP over 2 GT -> recall [0, .5, 1], precision [0, 1/2, 2/3] -> 2/3 at every recall.
    # light: B ignored, so P2 (matched to B) drops out: FP, TP over 1 GT -> 1/2 everywhere.
    # heavy: A ignored, P1 drops out: FP, TP -> 1/2. medium: no GT -> -1.
    expected = {"AP": 2 / 3, "AP50": 2 / 3, "AP75": 2 / 3, "APs": 2 / 3, "APm": -1, "APl": -1,
                "APso": 0.5, "APmo": -1, "APho": 0.5,
                "AR1": 0.0,  # maxDet 1 keeps only U
                "AR10": 1.0, "AR100": 1.0, "ARs": 1.0, "ARm": -1, "ARl": -1, "ARso": 1.0, "ARmo": -1, "ARho": 1.0,
                "AP/thing": 2 / 3}
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(m[key], value, rel_tol=0, abs_tol=1e-12), (key, m[key], value)


def test_unmatched_predictions_are_false_positives_in_every_occlusion_bin():
    gt, clean = light_and_heavy_case(with_unmatched=False)
    _, noisy = light_and_heavy_case(with_unmatched=True)
    before, after = evaluate_ovis(gt, clean), evaluate_ovis(gt, noisy)
    for key in ("AP", "APso", "APho"):
        assert math.isclose(before[key], 1.0, abs_tol=1e-12), key
    # The unmatched U outranks every match; in each bin it is one FP ahead of one TP.
    assert math.isclose(after["APso"], 0.5, abs_tol=1e-12) and math.isclose(after["APho"], 0.5, abs_tol=1e-12)
    # Had the out-of-bin GT been dropped instead of ignored, P2 would be a second FP in the light bin (1/3).


@pytest.mark.parametrize("labels, inside", [
    ([NO, NO, NO], ("APso",)),                      # 0
    ([SLIGHT, SLIGHT, SLIGHT], ("APso", "APmo")),   # 0.25: light and medium (inclusive bounds)
    ([SEVERE, NO, NO], ("APmo",)),                  # [0, 0, .75] -> top 2 -> 0.375
    ([NO, SLIGHT, SEVERE], ("APmo", "APho")),       # [0, .25, .75] -> top 2 -> 0.5: medium and heavy
    ([SEVERE, SEVERE, SLIGHT], ("APho",)),          # [.25, .75, .75] -> top 2 -> 0.75
])
def test_bin_bounds_are_inclusive(labels, inside):
    m = evaluate_ovis(ground_truth(gt_track(1, BOX_A, labels), frames=3), [pred(BOX_A, 0.5, frames=3)])
    for key in ("APso", "APmo", "APho"):
        assert math.isclose(m[key], 1.0, abs_tol=1e-12) if key in inside else m[key] == -1, (key, m[key])


def test_all_no_occlusion_equals_youtube_vis():
    for seed in range(6):
        gt, results = make_ovis_case(seed, n_videos=3)
        for ann in gt["annotations"]:
            ann["occlusion"] = [NO] * len(ann["segmentations"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # predictions in unknown categories
            ovis_ev, ytvis_ev = YTVISEvaluator(gt, protocol="ovis"), YTVISEvaluator(gt)
            ovis, ytvis = ovis_ev.evaluate(results), ytvis_ev.evaluate(results)
        assert {k: ovis[k] for k in ytvis} == ytvis
        assert ovis["APso"] == ovis["AP"] and ovis["ARso"] == ovis["AR100"]
        assert ovis["APmo"] == ovis["APho"] == ovis["ARmo"] == ovis["ARho"] == -1
        assert ovis_ev.precision.shape[4] == 4 and ytvis_ev.precision.ndim == 5
        np.testing.assert_array_equal(ovis_ev.precision[:, :, :, :, 0], ytvis_ev.precision)
        np.testing.assert_array_equal(ovis_ev.precision[:, :, :, :, 1], ytvis_ev.precision)
        np.testing.assert_array_equal(ovis_ev.recall[:, :, :, 0], ytvis_ev.recall)


def test_youtube_vis_protocol_ignores_occlusion_labels():
    gt, results = light_and_heavy_case(with_unmatched=True)
    m = evaluate_ytvis(gt, results)
    assert list(m) == [*METRIC_KEYS, "AP/thing"]
    assert math.isclose(m["AP"], 2 / 3, abs_tol=1e-12)


# -- errors ----------------------------------------------------------------------------------------
def test_track_without_occlusion_names_its_id():
    track = gt_track(7, BOX_A, [NO, NO])
    del track["occlusion"]
    with pytest.raises(CrossVISError, match=r"track id 7 has no 'occlusion' list"):
        YTVISEvaluator(ground_truth(gt_track(3, BOX_B, [NO, NO]), track), protocol="ovis")
    YTVISEvaluator(ground_truth(track))  # the YouTube-VIS protocol does not need it


@pytest.mark.parametrize("labels, message", [
    ([None, None], r"track id 5: every 'occlusion' label is null"),
    ([], r"annotation 5 \(annotations\[0\], video 1\): 'occlusion' has 0 entries but the video has 2 frames"),
    ([NO, "partial"], r"track id 5: unknown occlusion label 'partial' in frame 1"),
    ("no_occlusion", r"annotation 5 \(annotations\[0\], video 1\): 'occlusion' has str entries"),
])
def test_unusable_occlusion_labels(labels, message):
    track = gt_track(5, BOX_A, [NO, NO])
    track["occlusion"] = labels
    with pytest.raises(CrossVISError, match=message):
        evaluate_ovis(ground_truth(track), [pred(BOX_A, 0.5)])


@pytest.mark.parametrize("frames", [1, 3])
def test_prediction_length_must_equal_the_video_length(frames):
    gt = ground_truth(gt_track(1, BOX_A, [NO, NO]))
    results = [pred(BOX_A, 0.5), pred(BOX_A, 0.4, frames=frames)]
    with pytest.raises(CrossVISError, match=rf"prediction #1 \(video_id 1\) has {frames} 'segmentations' "
                                            r"entries but the video has 2 frames"):
        evaluate_ovis(gt, results)
    # YouTube-VIS scores the shorter list, as officially, and says so
    with pytest.warns(UserWarning, match=rf"prediction #1 \(video_id 1\) has {frames} 'segmentations' entries but "
                                         r"the video has 2 frames; they are scored over the shorter"):
        evaluate_ytvis(gt, results)


def test_ground_truth_length_must_equal_the_video_length():
    gt = ground_truth(gt_track(4, BOX_A, [NO, NO, NO]))  # the video has 2 frames
    with pytest.raises(CrossVISError, match=r"annotation 4 \(annotations\[0\], video 1\): 'segmentations' has 3 entries but the video has 2 frames"):
        YTVISEvaluator(gt, protocol="ovis")


def test_unknown_protocol():
    with pytest.raises(CrossVISError, match=r"unknown evaluation protocol 'coco'; use one of ytvis, ovis"):
        YTVISEvaluator(ground_truth(), protocol="coco")


# -- command line ----------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    gt, results = light_and_heavy_case(with_unmatched=True)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return ["evaluate", "--annotations", str(tmp_path / "gt.json"), "--results", str(tmp_path / "results.json")]


def test_cli_ovis_json(files, capsys):
    assert main([*files, "--protocol", "ovis", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert list(metrics) == [*OVIS_METRIC_KEYS, "AP/thing"]
    assert math.isclose(metrics["APso"], 0.5, abs_tol=1e-12) and metrics["APmo"] == -1


def test_cli_ovis_table(files, capsys):
    assert main([*files, "--protocol", "ovis"]) == 0
    out = capsys.readouterr().out
    rows = dict(line.split() for line in out.splitlines()[2:])
    assert list(rows) == list(OVIS_METRIC_KEYS) and rows["APho"] == "50.00" and rows["APmo"] == "-"


def test_cli_default_is_youtube_vis_with_a_hint(files, capsys):
    assert main([*files, "--json"]) == 0
    captured = capsys.readouterr()
    assert list(json.loads(captured.out)) == [*METRIC_KEYS, "AP/thing"]
    assert "pass --protocol ovis" in captured.err


def test_cli_missing_occlusion_exits_2(tmp_path, files, capsys):
    gt = json.loads((tmp_path / "gt.json").read_text())
    del gt["annotations"][1]["occlusion"]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert main([*files, "--protocol", "ovis"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "track id 2 has no 'occlusion' list" in err
