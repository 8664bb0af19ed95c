"""examples/ablation.py: the identity-switch count against hand-made tracks, and the occlusion setting."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from crossvis.data.synthetic import OcclusionSetting, generate_synthetic_dataset, rle_from_mask
from crossvis.trackers import encode_masks

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _square(x, size=10, h=20, w=40):
    m = np.zeros((h, w), dtype=np.uint8)
    m[5:5 + size, x:x + size] = 1
    return m


def _result(track_masks, score=0.9):
    import torch

    segs = [None if m is None else encode_masks(torch.from_numpy(m[None].astype(bool)))[0] for m in track_masks]
    return {"video_id": 1, "score": score, "category_id": 1, "segmentations": segs}


def test_identity_switches_count_changes_of_the_matched_track(ablation):
    frames = [_square(2 * t) for t in range(5)]
    other = [_square(28) for _ in range(5)]
    gt = {"videos": [{"id": 1, "file_names": [f"{t}.jpg" for t in range(5)]}],
          "annotations": [{"video_id": 1, "segmentations": [rle_from_mask(m) for m in frames]},
                          {"video_id": 1, "segmentations": [rle_from_mask(m) for m in other]}]}
    # track A covers frames 0-1, B frames 2-4 of the first object (1 switch); the second object is
    # found in frames 0, 1 and 4 by track C (missed in between: no switch) and by a low-score track D in 2.
    results = [_result(frames[:2] + [None] * 3), _result([None] * 2 + frames[2:]),
               _result([other[0], other[1], None, None, other[4]]),
               _result([None, None, other[2], None, None], score=0.1)]
    switches, cover = ablation.identity_switches(gt, results, min_score=0.2)
    assert switches == 1 and cover == pytest.approx(8 / 10)
    switches, cover = ablation.identity_switches(gt, results, min_score=0.0)
    assert switches == 3 and cover == pytest.approx(9 / 10)  # C -> D -> C


def test_occlusion_setting_has_many_objects_that_leave_and_return(tmp_path):
    paths = generate_synthetic_dataset(tmp_path, num_videos=4, num_frames=16, max_objects=6, seed=0,
                                       occlusion=OcclusionSetting(min_objects=4, absence_probability=1.0))
    data = json.loads(paths.annotations.read_text())
    per_video = {}
    returns = 0
    for track in data["annotations"]:
        per_video[track["video_id"]] = per_video.get(track["video_id"], 0) + 1
        present = [s is not None for s in track["segmentations"]]
        first, last = present.index(True), len(present) - 1 - present[::-1].index(True)
        returns += not all(present[first:last + 1])
    assert min(per_video.values()) >= 3 and max(per_video.values()) >= 4
    assert returns >= len(data["annotations"]) // 2


def test_default_videos_are_unchanged_by_the_occlusion_option(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", num_videos=2, num_frames=5, seed=4)
    b = generate_synthetic_dataset(tmp_path / "b", num_videos=2, num_frames=5, seed=4, occlusion=None)
    c = generate_synthetic_dataset(tmp_path / "c", num_videos=2, num_frames=5, seed=4, occlusion=OcclusionSetting())
    assert a.annotations.read_bytes() == b.annotations.read_bytes() != c.annotations.read_bytes()


@pytest.mark.parametrize("medians, verdict", [([0.1, 0.2, 0.3, 0.4], "agrees with"),
                                              ([0.2, 0.1, 0.4, 0.3], "differs from")])
def test_table8_summary_compares_the_ordering_with_the_paper(ablation, tmp_path, capsys, medians, verdict):
    import argparse

    rows = [(name, col, gbe, [m - 0.05, m, m + 0.01])
            for (name, col, _), gbe, m in zip(ablation.VARIANTS, [False, False, True, True], medians)]
    args = argparse.Namespace(seeds=3, max_iter=10, train_videos=4, test_videos=2)
    ablation.print_table8(rows, args, tmp_path)
    printed = capsys.readouterr().out
    assert verdict in printed and "32.1" in printed and "34.8" in printed
    summary = json.loads((tmp_path / "table8_summary.json").read_text())
    assert [r["median_AP"] for r in summary["rows"]] == pytest.approx(medians)
    assert [r["paper_AP"] for r in summary["rows"]] == [32.1, 33.1, 33.5, 34.8]
