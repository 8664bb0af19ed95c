"""Labels that do not pile up, the contact sheet (frames × time, one colour and id per track), and
``crossvis demo --contact-sheet``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tracking_fixtures import save_checkpoint, single_thread, synthetic_frames, tiny_recipe  # noqa: F401 (autouse fixture)

from crossvis.cli import main
from crossvis.inference.predictor import Predictor
from crossvis.inference.visualize import ContactSheet, draw_tracked_instances, label_text, place_labels, track_color
from crossvis.structures import TrackedInstances

NAMES = ["circle", "square", "triangle"]


def _instances(boxes: list[list[float]], ids: list[int], h: int = 96, w: int = 128) -> TrackedInstances:
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, int(y1):int(y2), int(x1):int(x2)] = True
    return TrackedInstances(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            scores=torch.linspace(0.9, 0.5, len(boxes)), labels=torch.arange(len(boxes)) % 3,
                            masks=masks, track_ids=torch.tensor(ids, dtype=torch.int64), image_size=(h, w))


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_label_reads_id_then_score():
    assert label_text("circle", 0, 0.891) == ("circle", "#0", "0.89")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 70), st.floats(5, 60), st.floats(5, 40)),
                min_size=1, max_size=5),
       st.integers(20, 60))
def test_labels_never_cover_each_other_when_there_is_room(raw, label_w):
    """Five labels of height 12 always fit in a 96-pixel-high image, wherever the boxes are."""
    boxes = [[x, y, min(x + w, 128), min(y + h, 96)] for x, y, w, h in raw]
    sizes = [(label_w, 12)] * len(boxes)
    spots = place_labels(boxes, sizes, (96, 128))
    rects = [(x, y, x + tw, y + th) for (x, y), (tw, th) in zip(spots, sizes)]
    for i, r in enumerate(rects):
        assert 0 <= r[0] and r[2] <= 128 and 0 <= r[1] and r[3] <= 96
        assert not any(_overlap(r, o) for o in rects[:i])


def test_a_free_label_sits_just_above_its_box():
    assert place_labels([[40, 50, 80, 90]], [(30, 12)], (96, 128)) == [(40, 38)]
    # two boxes at the same spot: the second label moves off the first one
    a, b = place_labels([[40, 50, 80, 90]] * 2, [(30, 12)] * 2, (96, 128))
    assert a == (40, 38) and not _overlap((*a, a[0] + 30, a[1] + 12), (*b, b[0] + 30, b[1] + 12))


def test_drawn_labels_keep_each_track_colour():
    frame = np.full((96, 128, 3), 90, np.uint8)
    inst = _instances([[20, 40, 60, 80], [22, 42, 62, 82]], [3, 7])
    out = draw_tracked_instances(frame, inst, NAMES.__getitem__)
    for track in (3, 7):  # each label's background is filled with its track's colour
        colour = np.array(track_color(track))
        assert (np.abs(out.astype(int) - colour).sum(axis=2) == 0).sum() > 100


def test_contact_sheet_keeps_an_even_subset_and_every_track():
    sheet = ContactSheet(NAMES.__getitem__, max_frames=4, thumb_width=64, columns=2)
    frame = np.full((96, 128, 3), 90, np.uint8)
    for t in range(10):
        boxes, ids = [[10 + 3 * t, 20, 50 + 3 * t, 60]], [0]
        if 3 <= t <= 6:
            boxes.append([70, 30, 110, 70])
            ids.append(5)
        inst = _instances(boxes, ids)
        sheet.add(t, draw_tracked_instances(frame, inst, NAMES.__getitem__), inst)
    assert sorted(sheet.thumbs) == [0, 4, 8] and sheet.stride == 4
    assert sheet.tracks == {0: set(range(10)), 5: {3, 4, 5, 6}}
    image = np.asarray(sheet.render(title="clip"))
    assert image.shape[1] == 6 + 2 * (64 + 6)
    timeline = image[-40:]  # the two timeline rows at the bottom, filled in each track's colour
    for track, frames in ((0, 10), (5, 4)):
        filled = (np.abs(timeline.astype(int) - np.array(track_color(track))).sum(axis=2) == 0).any(axis=0).sum()
        assert filled > 0
    with pytest.raises(ValueError):
        ContactSheet(NAMES.__getitem__).render()


def test_demo_writes_a_contact_sheet(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    torch.manual_seed(0)
    ckpt = save_checkpoint(Predictor(tiny_recipe()).model, tmp_path / "model.pth")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(synthetic_frames(5, 64, 96)):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    assert main(["demo", str(folder), "--recipe", str(recipe), "--checkpoint", str(ckpt), "--output", str(out),
                 "--score-threshold", "0", "--no-video", "--no-progress", "--contact-sheet"]) == 0
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.width >= 4 * 96
    assert "contact sheet" in capsys.readouterr().out


def test_a_crowded_frame_does_not_pile_labels_up():
    """Six 12-px labels of one box in a 60-px-high frame cannot all be free; still no two share a
    spot and none is hidden whole by another."""
    spots = place_labels([[10, 20, 60, 50]] * 6, [(50, 12)] * 6, (60, 128))
    assert len(set(spots)) == 6
    rects = [(x, y, x + 50, y + 12) for x, y in spots]
    for i, a in enumerate(rects):
        for b in rects[:i]:
            assert max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1])) < 600
