"""Regressions of issue 14 for results files: corrupt RLE never reaches pycocotools (it used to hang),
frame counts and scores are no longer silent."""
from __future__ import annotations

import faulthandler
import json
import time
from pathlib import Path

import numpy as np
import pytest

from crossvis.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = json.loads((FIXTURES / "results.json").read_text())


@pytest.fixture(autouse=True)
def _time_bound():
    """A hang in C code cannot be interrupted from Python: dump the stacks and exit after 60 s."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def evaluate(tmp_path, results, capsys, *extra):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    start = time.perf_counter()
    code = main(["evaluate", "--annotations", str(FIXTURES / "ann_cocovid.json"), "--results", str(path), *extra])
    assert time.perf_counter() - start < 30
    out, err = capsys.readouterr()
    return code, out, err, path


def first_mask(results):
    n, pred = next((n, p) for n, p in enumerate(results) if any(p["segmentations"]))
    f = next(f for f, s in enumerate(pred["segmentations"]) if s)
    return n, f, pred["segmentations"][f]


@pytest.mark.parametrize("alter", ["truncate", "drop_middle", "bump_char", "append"])
def test_corrupt_counts_are_one_error_not_a_hang(tmp_path, capsys, alter):
    results = json.loads(json.dumps(RESULTS))
    n, f, seg = first_mask(results)
    counts = seg["counts"]
    seg["counts"] = {"truncate": counts[: len(counts) // 2], "drop_middle": counts[:5] + counts[9:],
                     "bump_char": counts[:3] + chr(ord(counts[3]) ^ 0x08) + counts[4:],
                     "append": counts + "0a"}[alter]
    code, out, err, path = evaluate(tmp_path, results, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"crossvis: error: results file {path}: prediction #{n} frame {f} "
                                                   f"(video_id {results[n]['video_id']}): compressed RLE")


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_scores_are_errors(tmp_path, capsys, score):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS).replace('"score": ' + json.dumps(RESULTS[2]["score"]), f'"score": {score}', 1))
    code = main(["evaluate", "--annotations", str(FIXTURES / "ann_cocovid.json"), "--results", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"prediction #2 (video_id 1) has score {float(score.replace('Infinity', 'inf'))!r}" in err
    assert "must be finite" in err


@pytest.mark.parametrize("score", [-0.5, 1.5])
def test_scores_outside_the_unit_interval_warn_and_rank_as_officially(tmp_path, capsys, score):
    results = json.loads(json.dumps(RESULTS))
    baseline = evaluate(tmp_path, results, capsys, "--json")[1]
    ranks = sorted(range(len(results)), key=lambda i: -results[i]["score"])
    # moving the lowest score below 0 (or the highest above 1) keeps the order, so the metrics
    i = ranks[-1] if score < 0 else ranks[0]
    results[i]["score"] = score
    code, out, err, _ = evaluate(tmp_path, results, capsys, "--json")
    assert code == 0 and json.loads(out) == json.loads(baseline)
    assert err.count("\n") == 1 and err.startswith(f"crossvis: warning: results file") and "outside [0, 1]" in err


@pytest.mark.parametrize("frames", [5, 25])
def test_frame_count_differing_from_the_video_warns(tmp_path, capsys, frames):
    results = json.loads(json.dumps(RESULTS))
    segs = results[1]["segmentations"]
    results[1]["segmentations"] = (segs + [None] * 10)[:frames]
    code, out, err, _ = evaluate(tmp_path, results, capsys, "--json")
    assert code == 0 and "AP" in json.loads(out)
    assert err.count("\n") == 1
    assert f"prediction #1 (video_id 1) has {frames} 'segmentations' entries but the video has 20 frames" in err


def test_uncompressed_and_polygon_masks_are_named(tmp_path, capsys):
    results = json.loads(json.dumps(RESULTS))
    results[0]["segmentations"][0] = [[0, 0, 10, 0, 10, 10]]
    code, _, err, _ = evaluate(tmp_path, results, capsys)
    assert code == 2 and "prediction #0 frame 0 (video_id 1): a mask must be compressed RLE" in err


def test_the_first_corrupt_mask_is_named_whichever_category_it_is_in():
    """Masks with ground truth to meet and masks without are decoded in separate batches; the
    error still names the first corrupt mask in results order."""
    from pycocotools import mask as mask_utils

    from crossvis.errors import CrossVISError
    from crossvis.eval import YTVISEvaluator

    box = np.zeros((6, 8), dtype=np.uint8, order="F")
    box[1:4, 2:6] = 1
    rle = mask_utils.encode(box)
    good = {"size": [6, 8], "counts": rle["counts"].decode()}
    bad = {"size": [6, 8], "counts": good["counts"][:-1]}  # the last run left out: the total is short
    other_bad = {"size": [6, 8], "counts": good["counts"] + "0a"}  # runs past the mask
    gt = {"videos": [{"id": 1, "height": 6, "width": 8, "length": 2, "file_names": ["a.jpg", "b.jpg"]}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [good, good],
                           "areas": [12, 12], "bboxes": [[2, 1, 4, 3]] * 2}]}
    results = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [good, good]},
               {"video_id": 1, "category_id": 2, "score": 0.8, "segmentations": [good, bad]},  # no dog here
               {"video_id": 1, "category_id": 1, "score": 0.7, "segmentations": [other_bad, good]}]
    with pytest.raises(CrossVISError, match=r"prediction #1 frame 1 \(video_id 1\): compressed RLE"):
        YTVISEvaluator(gt).evaluate(results)
    results[1]["category_id"] = 1  # now both meet the ground truth: still #1
    with pytest.raises(CrossVISError, match=r"prediction #1 frame 1 "):
        YTVISEvaluator(gt).evaluate(results)
    results[2]["segmentations"][0] = good
    results[1]["category_id"] = 2
    results[1]["segmentations"][1] = good
    assert YTVISEvaluator(gt).evaluate(results)["AP"] > 0.99
