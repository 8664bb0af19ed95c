"""The evaluator against a brute-force YouTube-VIS / OVIS AP/AR written from the spec in this file.

The reference decodes every mask to a numpy array and follows reference/vis-evaluation.md §3 (and
§3.9 for the OVIS occlusion axis) with plain loops (no code shared with crossvis.eval). Hypothesis
draws the cases (see ytvis_cases.py).
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pycocotools import mask as mask_utils

from crossvis.eval import YTVISEvaluator
from crossvis.eval.ytvis import METRIC_KEYS, OVIS_METRIC_KEYS

from ytvis_cases import make_case, make_ovis_case

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode on numpy 2

IOUS = np.linspace(0.5, 0.95, 10).tolist()  # the spec's exact thresholds (element 8 is 0.8999999999999999)
RECALLS = np.linspace(0.0, 1.0, 101).tolist()
MAXDETS = [1, 10, 100]
AREAS = [(0, 1e10), (0, 128 * 128), (128 * 128, 256 * 256), (256 * 256, 1e10)]
OCCLUSIONS = [(0, 1), (0, 0.25), (0.25, 0.5), (0.5, 1)]  # all, light, medium, heavy (inclusive)
OCCLUSION_VALUE = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


def decoded(seg):
    """(mask array, area) of a truthy RLE entry, or None for an absent frame."""
    if not seg:
        return None
    if isinstance(seg["counts"], list):
        seg = mask_utils.frPyObjects(seg, *seg["size"])
    m = mask_utils.decode(seg).astype(bool)
    return m


def truthy_mean(values):
    kept = [v for v in values if v]
    return sum(kept) / len(kept) if kept else 0.0


def brute_occlusion(labels):
    """Mean of the most occluded half (rounded up) of the labelled frames."""
    values = sorted((OCCLUSION_VALUE[label] for label in labels if label is not None), reverse=True)
    worst = values[:(len(values) + 1) // 2]
    return sum(worst) / len(worst)


def brute_iou(pred, gt):
    inter = union = 0
    for d, g in zip(pred, gt):  # zip stops at the shorter list
        if d is not None and g is not None:
            if d.shape == g.shape:
                inter += int(np.logical_and(d, g).sum())
                union += int(np.logical_or(d, g).sum())
        elif g is not None:
            union += int(g.sum())
        elif d is not None:
            union += int(d.sum())
    return inter / union if union > 0 else 0.0


def brute_force_stats(gt: dict, results: list, ovis: bool = False) -> tuple[list[float], dict]:
    """(stats in the official order, {category id: AP}); ``ovis`` adds the occlusion axis (18 stats)."""
    occlusions = OCCLUSIONS if ovis else [(-math.inf, math.inf)]
    video_ids = sorted({v["id"] for v in gt["videos"]})
    cat_ids = sorted({c["id"] for c in gt["categories"]})
    gts = []
    for ann in gt["annotations"]:
        if ann["video_id"] in video_ids and ann["category_id"] in cat_ids:
            gts.append(dict(vid=ann["video_id"], cat=ann["category_id"], crowd=int(ann["iscrowd"]),
                            masks=[decoded(s) for s in ann["segmentations"]], area=truthy_mean(ann["areas"]),
                            occ=brute_occlusion(ann["occlusion"]) if ovis else 0.0))
    dts = []
    for res in results:
        if res["category_id"] not in cat_ids:
            continue
        masks = [decoded(s) for s in res["segmentations"]]
        dts.append(dict(vid=res["video_id"], cat=res["category_id"], score=res["score"], masks=masks,
                        area=truthy_mean([int(m.sum()) if m is not None else None for m in masks])))

    # evals[k, a, o] = list over videos of (scores, matched[t][d], ignored[t][d], n_gt_not_ignored)
    evals = {(k, a, o): [] for k in range(len(cat_ids)) for a in range(4) for o in range(len(occlusions))}
    for vid in video_ids:
        for k, cat in enumerate(cat_ids):
            g_list = [g for g in gts if g["vid"] == vid and g["cat"] == cat]
            d_list = [d for d in dts if d["vid"] == vid and d["cat"] == cat]
            if not g_list and not d_list:
                continue
            d_list = sorted(d_list, key=lambda d: -d["score"])[:100]  # Python's sort is stable
            iou_of = {(id(d), id(g)): brute_iou(d["masks"], g["masks"]) for d in d_list for g in g_list}
            for (a, (lo, hi)), (o, (olo, ohi)) in itertools.product(enumerate(AREAS), enumerate(occlusions)):
                ig = [bool(g["crowd"]) or g["area"] < lo or g["area"] > hi or g["occ"] < olo or g["occ"] > ohi
                      for g in g_list]
                g_sorted = [g for g, i in zip(g_list, ig) if not i] + [g for g, i in zip(g_list, ig) if i]
                g_ig = sorted(ig)
                iou = [[iou_of[id(d), id(g)] for g in g_sorted] for d in d_list]
                matched = [[False] * len(d_list) for _ in IOUS]
                ignored = [[False] * len(d_list) for _ in IOUS]
                for t, thr in enumerate(IOUS):
                    used = [False] * len(g_sorted)
                    for di in range(len(d_list)):
                        best, choice = min(thr, 1 - 1e-10), None
                        for gi, g in enumerate(g_sorted):
                            if used[gi] and not g["crowd"]:
                                continue
                            if choice is not None and not g_ig[choice] and g_ig[gi]:
                                break
                            if iou[di][gi] >= best:
                                best, choice = iou[di][gi], gi
                        if choice is not None:
                            used[choice] = True
                            matched[t][di] = True
                            ignored[t][di] = g_ig[choice]
                        else:
                            ignored[t][di] = not (lo <= d_list[di]["area"] <= hi)  # never by occlusion
                evals[k, a, o].append(([d["score"] for d in d_list], matched, ignored, g_ig.count(False)))

    K = len(cat_ids)
    O = len(occlusions)
    precision = -np.ones((10, 101, K, 4, O, 3))
    recall = -np.ones((10, K, 4, O, 3))
    for (k, a, o), per_video in evals.items():
        n_gt = sum(e[3] for e in per_video)
        if not per_video or n_gt == 0:
            continue
        for m, max_det in enumerate(MAXDETS):
            entries = []  # (-score, video order, rank in video)
            for vi, (scores, _, _, _) in enumerate(per_video):
                entries += [(-s, vi, r) for r, s in enumerate(scores[:max_det])]
            entries.sort(key=lambda e: e[0])  # stable: ties keep video, then rank order
            for t in range(10):
                tp = fp = 0
                rc, pr = [], []
                for _, vi, r in entries:
                    _, matched, ignored, _ = per_video[vi]
                    if ignored[t][r]:
                        continue  # ignored predictions drop out
                    tp, fp = tp + matched[t][r], fp + (not matched[t][r])
                    rc.append(tp / n_gt)
                    pr.append(tp / (tp + fp + np.spacing(1)))
                recall[t, k, a, o, m] = rc[-1] if rc else 0.0
                for i in range(len(pr) - 2, -1, -1):
                    pr[i] = max(pr[i], pr[i + 1])
                for ri, r in enumerate(RECALLS):
                    pos = next((i for i, v in enumerate(rc) if v >= r), None)
                    precision[t, ri, k, a, o, m] = pr[pos] if pos is not None else 0.0

    def avg(values):
        vals = [v for v in np.ravel(values) if v > -1]
        return sum(vals) / len(vals) if vals else -1.0

    ap = [avg(precision[:, :, :, 0, 0, 2]), avg(precision[0, :, :, 0, 0, 2]), avg(precision[5, :, :, 0, 0, 2]),
          avg(precision[:, :, :, 1, 0, 2]), avg(precision[:, :, :, 2, 0, 2]), avg(precision[:, :, :, 3, 0, 2])]
    ar = [avg(recall[:, :, 0, 0, 0]), avg(recall[:, :, 0, 0, 1]), avg(recall[:, :, 0, 0, 2]),
          avg(recall[:, :, 1, 0, 2]), avg(recall[:, :, 2, 0, 2]), avg(recall[:, :, 3, 0, 2])]
    if ovis:  # AP and AR of the light, medium and heavy occlusion bins follow each group
        ap += [avg(precision[:, :, :, 0, o, 2]) for o in (1, 2, 3)]
        ar += [avg(recall[:, :, 0, o, 2]) for o in (1, 2, 3)]
    per_cat = {cat: avg(precision[:, :, k, 0, 0, 2]) for k, cat in enumerate(cat_ids)}
    return ap + ar, per_cat


def _evaluate(gt, results, protocol="ytvis"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return YTVISEvaluator(gt, protocol=protocol).evaluate(results)


def _assert_agree(gt, results, ovis=False):
    metrics = _evaluate(gt, results, "ovis" if ovis else "ytvis")
    stats, per_cat = brute_force_stats(gt, results, ovis)
    keys = OVIS_METRIC_KEYS if ovis else METRIC_KEYS
    assert [k for k in metrics if not k.startswith("AP/")] == list(keys)
    for key, expected in zip(keys, stats, strict=True):
        assert math.isclose(metrics[key], expected, rel_tol=0, abs_tol=1e-9), (key, metrics[key], expected)
    for cat in gt["categories"]:
        got = metrics[f"AP/{cat['name']}"]
        assert math.isclose(got, per_cat[cat["id"]], rel_tol=0, abs_tol=1e-9), (cat, got, per_cat[cat["id"]])
    return stats


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_videos=st.integers(1, 4), n_categories=st.integers(1, 3))
def test_matches_brute_force(seed, n_videos, n_categories):
    gt, results = make_case(seed, n_videos=n_videos, n_categories=n_categories)
    _assert_agree(gt, results)


def test_cases_cover_every_size_bin():
    """The generator reaches defined APs/APm/APl, so the property test exercises all three bins."""
    defined = np.zeros(12, dtype=int)
    for seed in range(12):
        gt, results = make_case(seed, n_videos=4)
        defined += np.array(_assert_agree(gt, results)) > -1
    assert (defined[3:6] > 0).all() and (defined[9:12] > 0).all(), defined


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_videos=st.integers(1, 4), n_categories=st.integers(1, 3))
def test_ovis_matches_brute_force(seed, n_videos, n_categories):
    gt, results = make_ovis_case(seed, n_videos=n_videos, n_categories=n_categories)
    _assert_agree(gt, results, ovis=True)


def test_ovis_cases_cover_every_occlusion_bin():
    """The OVIS generator reaches defined APso/APmo/APho, so the property test exercises all three bins."""
    defined = np.zeros(18, dtype=int)
    for seed in range(8):
        gt, results = make_ovis_case(seed, n_videos=4)
        defined += np.array(_assert_agree(gt, results, ovis=True)) > -1
    assert (defined[6:9] > 0).all() and (defined[15:18] > 0).all(), defined


def test_parallel_track_ious_match_brute_force(monkeypatch):
    """With forked workers (thresholds lowered so these small cases fork and decode in many small
    batches), the metrics still equal the brute force's, and the workers really ran."""
    import os

    import crossvis.eval.predictions as predictions
    import crossvis.formats.rle as rle
    import crossvis.parallel as parallel

    if not parallel.can_fork():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(predictions, "PARALLEL_MIN_PREDICTIONS", 2)
    monkeypatch.setattr(rle, "_CHUNK_CHARS", 64)
    forked = []
    real_fork = os.fork

    def spying_fork():
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(parallel.os, "fork", spying_fork)
    for seed in (3, 17):
        gt, results = make_case(seed, n_videos=4, n_categories=3)
        stats, per_cat = brute_force_stats(gt, results, False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = YTVISEvaluator(gt, workers=2).evaluate(results)
        assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(stats, abs=1e-9)
    assert len(forked) == 2  # one worker besides this process per evaluation
    with pytest.raises(Exception, match="workers"):
        YTVISEvaluator(make_case(0)[0], workers=0)


def test_a_results_file_scored_in_pieces_by_workers(monkeypatch, tmp_path):
    """Parsed in pieces by forked workers, a results file gives the brute force's metrics; a bad
    prediction or a NaN in it gives the same error as one process (numbered in the whole file)."""
    import json

    import crossvis.eval.predictions as predictions
    from crossvis.errors import CrossVISError
    from crossvis.parallel import can_fork

    if not can_fork():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(predictions, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(predictions, "PARALLEL_MIN_PREDICTIONS", 2)
    cut, whole = [], []  # what the parent did: cut the text, or parse it whole (the fallback)
    real_pieces, real_parse = predictions.array_pieces, predictions.parse_json
    monkeypatch.setattr(predictions, "array_pieces", lambda *a: cut.append(real_pieces(*a)) or cut[-1])
    monkeypatch.setattr(predictions, "parse_json", lambda *a: whole.append(1) or real_parse(*a))
    gt, results = make_case(21, n_videos=4, n_categories=3)
    stats, _ = brute_force_stats(gt, results, False)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = YTVISEvaluator(gt, workers=2).evaluate(path)
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(stats, abs=1e-9)
    assert len(cut[0]) == 8 and not whole  # 2 workers x 4 pieces, each parsed by a worker

    def error(text: str, workers: int) -> str:
        path.write_text(text)
        with warnings.catch_warnings(), pytest.raises(CrossVISError) as info:
            warnings.simplefilter("ignore")
            YTVISEvaluator(gt, workers=workers).evaluate(path)
        return str(info.value)

    bad = [dict(r) for r in results]
    frame = next(f for f, s in enumerate(bad[-1]["segmentations"]) if s)
    bad[-1]["segmentations"] = list(bad[-1]["segmentations"])
    bad[-1]["segmentations"][frame] = {"size": bad[-1]["segmentations"][frame]["size"], "counts": "0000"}
    message = error(json.dumps(bad), 2)
    assert message == error(json.dumps(bad), 1) and f"prediction #{len(bad) - 1} frame {frame}" in message
    nan = json.dumps(results[:-1] + [{**results[-1], "score": float("nan")}])
    assert "NaN" in nan and error(nan, 2) == error(nan, 1)
    assert len(whole) == 4  # each error was found by reading the file whole


def test_an_ovis_results_file_scored_in_pieces(monkeypatch, tmp_path):
    """The OVIS protocol through the pieces path: the brute force's 18 metrics, and a frame count
    that differs from the video's is an error numbered in the whole file."""
    import json

    import crossvis.eval.predictions as predictions
    from crossvis.errors import CrossVISError
    from crossvis.parallel import can_fork

    if not can_fork():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(predictions, "PARALLEL_MIN_BYTES", 0)
    gt, results = make_ovis_case(5, n_videos=4)
    stats, _ = brute_force_stats(gt, results, True)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results, indent=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = YTVISEvaluator(gt, protocol="ovis", workers=2).evaluate(path)
    assert [metrics[k] for k in OVIS_METRIC_KEYS] == pytest.approx(stats, abs=1e-9)
    short = [dict(r) for r in results]
    short[-1]["segmentations"] = short[-1]["segmentations"][:-1]
    path.write_text(json.dumps(short))
    with pytest.raises(CrossVISError, match=f"prediction #{len(short) - 1} .* the OVIS evaluation needs"):
        YTVISEvaluator(gt, protocol="ovis", workers=2).evaluate(path)
