"""``crossvis quickstart``: which video it draws, reusing data and a finished run, the core count."""
from __future__ import annotations

import json

import pytest

from crossvis.commands.quickstart import pick_video_to_draw, prepare_data


def _track(video_id: int, boxes: list) -> dict:
    return {"video_id": video_id, "category_id": 1, "bboxes": boxes}


def test_draws_the_video_with_most_tracks_among_those_that_cross(tmp_path):
    apart = [[0, 0, 10, 10], [0, 0, 10, 10]]
    far = [[50, 50, 10, 10], [50, 50, 10, 10]]
    touching = [[5, 5, 10, 10], None]
    data = {"videos": [{"id": 1}, {"id": 2}, {"id": 3}],
            "annotations": [  # video 1: 4 tracks that never meet; video 2: 2 that cross; video 3: 1 track
                *[_track(1, [[20 * k, 0, 10, 10]] * 2) for k in range(4)],
                _track(2, apart), _track(2, touching), _track(3, far)]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    assert pick_video_to_draw(path) == 1
    data["annotations"] = data["annotations"][:4] + [_track(3, far)]  # nothing crosses: most tracks
    path.write_text(json.dumps(data))
    assert pick_video_to_draw(path) == 0


def test_data_is_reused_when_the_settings_match(tmp_path, capsys):
    settings = {"train_videos": 2, "test_videos": 1, "num_frames": 3, "height": 32, "width": 48,
                "num_categories": 2, "max_objects": 2, "seed": 0, "appearance": "varied"}
    first = prepare_data(tmp_path, settings)
    stamp = first["train"].annotations.stat().st_mtime_ns
    again = prepare_data(tmp_path, settings)
    assert again["train"].annotations == first["train"].annotations
    assert again["train"].annotations.stat().st_mtime_ns == stamp
    assert "reusing the data" in capsys.readouterr().out
    prepare_data(tmp_path, {**settings, "seed": 1})  # other settings: written anew
    assert json.loads((tmp_path / "settings.json").read_text())["seed"] == 1


TINY = ["runtime.num_threads=1", "solver.max_iter=4", "solver.steps=[3]", "solver.warmup_iters=1",
        "solver.checkpoint_period=100"]


@pytest.mark.slow
def test_fast_quickstart_end_to_end_then_reused(tmp_path, capsys):
    from crossvis.cli import main

    out = tmp_path / "qs"
    assert main(["quickstart", "--output", str(out), "--fast", "--set", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "AP " in printed and "(fractions)" in printed and "contact sheet" in printed
    metrics = json.loads((out / "run" / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    assert (out / "overlays" / "contact_sheet.png").is_file()
    assert len(list((out / "overlays").glob("*/*.jpg"))) == 6
    stamp = (out / "run" / "checkpoints" / "model_final.pth").stat().st_mtime_ns
    assert main(["quickstart", "--output", str(out), "--fast", "--set", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "reusing the data" in printed and "reusing the finished run" in printed
    assert (out / "run" / "checkpoints" / "model_final.pth").stat().st_mtime_ns == stamp


def test_a_run_made_with_other_settings_is_not_reused(tmp_path):
    from crossvis.commands.quickstart import _check_run_settings
    from crossvis.errors import CrossVISError

    run = tmp_path / "run"
    _check_run_settings(run, {"fast": True})
    _check_run_settings(run, {"fast": True})  # same settings: fine
    with pytest.raises(CrossVISError, match="other quickstart settings"):
        _check_run_settings(run, {"fast": False})
    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "model_final.pth").write_bytes(b"x")
    with pytest.raises(CrossVISError, match="did not start"):
        _check_run_settings(foreign, {"fast": True})
