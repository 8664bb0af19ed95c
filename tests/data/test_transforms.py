import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossvis.data import (ColorJitter, Compose, RandomCrop, RandomHorizontalFlip, RandomRotation,
                           ResizeShortestEdge, finalize_instances)
from crossvis.data.transforms import rotate_hue


def _sample(masks: np.ndarray, seed: int = 0) -> dict:
    n, h, w = masks.shape
    rng = np.random.default_rng(seed)
    instances = {"boxes": torch.zeros((n, 4)), "labels": torch.arange(n, dtype=torch.int64) % 3,
                 "masks": torch.from_numpy(masks.astype(np.uint8)), "ids": torch.arange(10, 10 + n)}
    return {"image": torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)),
            "instances": finalize_instances(instances), "orig_size": (h, w), "video_id": 1,
            "frame_index": 0, "file_name": "x.jpg"}


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@pytest.mark.parametrize("size,min_size,max_size,expected", [
    ((720, 1280), 360, 640, (360, 640)),      # the official YouTube-VIS setting
    ((480, 640), 360, 640, (360, 480)),
    ((100, 1000), 50, 200, (20, 200)),        # long side capped: scale 0.2
    ((33, 21), 10, 1000, (16, 10)),           # 33 * 10 / 21 = 15.71 -> 16
])
def test_resize_output_size(size, min_size, max_size, expected):
    out = ResizeShortestEdge(min_size, max_size)([_sample(np.ones((1, *size)))])[0]
    assert tuple(out["image"].shape) == (3, *expected) and out["image"].dtype == torch.uint8
    assert tuple(out["instances"]["masks"].shape) == (1, *expected)


def test_scale_choice_is_shared_by_the_clip_and_varies_between_clips():
    t = ResizeShortestEdge([10, 20, 30], 1000)
    shorts = set()
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        clip = t([_sample(np.ones((1, 40, 60))), _sample(np.ones((1, 40, 60)), seed=1)], g)
        assert clip[0]["image"].shape == clip[1]["image"].shape
        shorts.add(clip[0]["image"].shape[1])
    assert shorts == {10, 20, 30}


def test_flip_is_one_decision_per_clip():
    masks = np.zeros((1, 8, 10), np.uint8)
    masks[0, 2:5, 1:3] = 1
    flips = set()
    for seed in range(40):
        clip = [_sample(masks), _sample(masks, seed=1)]
        out = RandomHorizontalFlip(0.5)(clip, torch.Generator().manual_seed(seed))
        done = [bool(torch.equal(o["image"], c["image"].flip(-1))) for o, c in zip(out, clip)]
        assert done[0] == done[1]
        flips.add(done[0])
        if done[0]:
            assert out[0]["instances"]["boxes"].tolist() == [[7.0, 2.0, 9.0, 5.0]]  # x 1..2 -> 7..8
    assert flips == {True, False}


def test_vanished_instances_are_dropped_consistently():
    masks = np.zeros((3, 40, 40), np.uint8)
    masks[0, 10:30, 5:25] = 1
    masks[1, 1, 1] = 1                 # one pixel: nearest-exact at 1/4 scale samples rows/cols 2, 6, ...
    masks[2, 20:40, 20:40] = 1
    out = ResizeShortestEdge(10, 100)([_sample(masks)])[0]["instances"]
    assert out["ids"].tolist() == [10, 12] and out["labels"].tolist() == [0, 2]
    assert out["masks"].shape == (2, 10, 10) and out["boxes"].shape == (2, 4)
    assert out["boxes"].tolist() == [_tight_box(m) for m in out["masks"].numpy()]


def test_empty_instances_pass_through():
    out = Compose([ResizeShortestEdge(8, 16), RandomHorizontalFlip(1.0)])([_sample(np.zeros((0, 20, 30)))])[0]
    assert out["image"].shape == (3, 8, 12)
    assert out["instances"]["masks"].shape == (0, 8, 12) and out["instances"]["boxes"].shape == (0, 4)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), n=st.integers(1, 4), short=st.integers(4, 48),
       flip=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_boxes_are_inside_the_image_and_tight_around_masks(h, w, n, short, flip, seed):
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, h, w)) < rng.uniform(0.01, 0.3)).astype(np.uint8)
    transform = Compose([ResizeShortestEdge(short, 64), RandomHorizontalFlip(1.0 if flip else 0.0)])
    out = transform([_sample(masks, seed)], torch.Generator().manual_seed(seed))[0]
    inst = out["instances"]
    H, W = out["image"].shape[1:]
    assert inst["masks"].shape[1:] == (H, W)
    n_out = inst["masks"].shape[0]
    assert inst["boxes"].shape == (n_out, 4) and inst["ids"].shape == inst["labels"].shape == (n_out,)
    b = inst["boxes"]
    assert ((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= W) & (b[:, 3] <= H)).all()
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    assert b.tolist() == [_tight_box(m) for m in inst["masks"].numpy()]
    # the ids kept are exactly those whose mask survives a nearest resize, in the original order
    resized = torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None].float(), size=(H, W),
                                              mode="nearest-exact")[:, 0]
    assert inst["ids"].tolist() == [10 + k for k in range(n) if resized[k].any()]
    assert inst["labels"].tolist() == [k % 3 for k in range(n) if resized[k].any()]


# -- random crop and colour jitter -------------------------------------------------------------------
def _two_frame_clip(h: int = 30, w: int = 40) -> list[dict]:
    masks = np.zeros((3, h, w), np.uint8)
    masks[0, 2:10, 3:12] = 1        # top-left object
    masks[1, 20:28, 28:38] = 1      # bottom-right object
    masks[2, 12:18, 15:25] = 1      # centre object
    return [_sample(masks, seed=0), _sample(masks[[0, 2]], seed=1)]


def test_crop_is_one_window_for_the_clip_and_matches_slicing():
    crop = RandomCrop(min_scale=0.5, p=1.0, min_keep=0.0)
    windows = set()
    for seed in range(25):
        clip = _two_frame_clip()
        out = crop(clip, torch.Generator().manual_seed(seed))
        assert out[0]["image"].shape == out[1]["image"].shape
        h, w = out[0]["image"].shape[1:]
        assert 15 <= h <= 30 and 20 <= w <= 40
        # find the window by matching pixels: the crop is a plain slice of the original image
        found = [(t, l) for t in range(30 - h + 1) for l in range(40 - w + 1)
                 if torch.equal(clip[0]["image"][:, t:t + h, l:l + w], out[0]["image"])]
        assert found
        t, l = found[0]
        assert torch.equal(clip[1]["image"][:, t:t + h, l:l + w], out[1]["image"])
        windows.add((t, l, h, w))
        for before, after in zip(clip, out):
            kept = [i for i in range(before["instances"]["masks"].shape[0])
                    if before["instances"]["masks"][i, t:t + h, l:l + w].any()]
            assert after["instances"]["ids"].tolist() == before["instances"]["ids"][kept].tolist()
            assert after["instances"]["boxes"].tolist() == [_tight_box(m) for m in after["instances"]["masks"].numpy()]
    assert len(windows) > 10


def test_crop_keeps_enough_of_the_objects_or_leaves_the_clip_alone():
    masks = np.zeros((1, 40, 40), np.uint8)
    masks[0, 0:4, 0:4] = 1  # a corner object: most windows lose it
    crop = RandomCrop(min_scale=0.3, p=1.0, min_keep=1.0)
    for seed in range(20):
        out = crop([_sample(masks)], torch.Generator().manual_seed(seed))[0]
        assert int(out["instances"]["masks"].sum()) == 16  # all of it, whatever window was taken
    assert RandomCrop(p=0.0)([_sample(masks)], torch.Generator().manual_seed(0))[0]["image"].shape == (3, 40, 40)


def test_color_jitter_is_shared_by_the_clip_and_leaves_instances_alone():
    jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.5, p=1.0)
    frame = _sample(np.ones((1, 12, 16), np.uint8), seed=3)
    changed = 0
    for seed in range(10):
        out = jitter([frame, dict(frame)], torch.Generator().manual_seed(seed))
        assert torch.equal(out[0]["image"], out[1]["image"]) and out[0]["image"].dtype == torch.uint8
        assert out[0]["instances"] is frame["instances"]
        changed += not torch.equal(out[0]["image"], frame["image"])
    assert changed == 10
    assert ColorJitter(p=0.0)([frame], torch.Generator().manual_seed(0))[0]["image"] is frame["image"]


def test_rotate_hue_turns_primaries_and_keeps_greys():
    # red + 1/3 turn -> green, + 2/3 -> blue (as an HSV hue shift); greys have no chroma to rotate
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)
    assert int(rotate_hue(red, 1 / 3).argmax()) == 1 and int(rotate_hue(red, 2 / 3).argmax()) == 2
    greys = torch.arange(0, 256, 15, dtype=torch.uint8).repeat(3, 1).view(3, 1, -1)
    assert (rotate_hue(greys, 0.37).int() - greys.int()).abs().max() <= 1
    image = torch.from_numpy(np.random.default_rng(0).integers(40, 200, (3, 8, 8), dtype=np.uint8))
    assert (rotate_hue(image, 1.0).int() - image.int()).abs().max() <= 1  # a full turn
    # a small shift moves hues the way torchvision's adjust_hue does
    import torchvision.transforms.v2.functional as TF
    ours, theirs, opposite = rotate_hue(image, 0.05).float(), TF.adjust_hue(image, 0.05).float(), \
        TF.adjust_hue(image, -0.05).float()
    assert (ours - theirs).abs().mean() < (ours - opposite).abs().mean()


def test_new_transforms_are_registered():
    from crossvis.plugins import get_registry
    from crossvis.recipes import build

    registry = get_registry()
    assert isinstance(build("transform", {"type": "random_crop", "min_scale": 0.7}, registry=registry), RandomCrop)
    assert isinstance(build("transform", {"type": "color_jitter", "hue": 0.5}, registry=registry), ColorJitter)
    with pytest.raises(ValueError):
        ColorJitter(hue=0.7)
    with pytest.raises(ValueError):
        RandomCrop(min_scale=0.0)


def test_rotation_turns_are_exact_and_shared_by_the_clip():
    clip = _two_frame_clip()
    seen = set()
    for seed in range(16):
        out = RandomRotation(turns=4, p=1.0)(clip, torch.Generator().manual_seed(seed))
        k = next(k for k in range(4) if torch.equal(out[0]["image"], torch.rot90(clip[0]["image"], k, (1, 2))))
        seen.add(k)
        for before, after in zip(clip, out):  # every frame: the same quarter turns, masks with it
            assert torch.equal(after["image"], torch.rot90(before["image"], k, (1, 2)))
            assert torch.equal(after["instances"]["masks"], torch.rot90(before["instances"]["masks"], k, (1, 2)))
            assert after["instances"]["boxes"].tolist() == [_tight_box(m) for m in after["instances"]["masks"].numpy()]
            assert torch.equal(after["instances"]["ids"], before["instances"]["ids"])
    assert seen == {0, 1, 2, 3}
    for seed in range(8):  # two orientations: the frame keeps its shape
        out = RandomRotation(turns=2, p=1.0)(clip, torch.Generator().manual_seed(seed))
        assert out[0]["image"].shape == clip[0]["image"].shape
    assert RandomRotation(p=0.0)(clip, torch.Generator().manual_seed(0)) is clip


def test_free_rotation_keeps_the_frame_and_turns_a_bar():
    masks = np.zeros((1, 41, 41), np.uint8)
    masks[0, 18:23, 4:37] = 1  # a horizontal bar through the centre
    frame = _sample(masks)
    rotate = RandomRotation(turns=1, degrees=90.0, p=1.0)
    for seed in range(6):
        gen = torch.Generator().manual_seed(seed)
        out = rotate([frame, frame], gen)
        gen = torch.Generator().manual_seed(seed)
        float(torch.rand((), generator=gen))  # the p draw
        angle = -90.0 + 180.0 * float(torch.rand((), generator=gen))
        assert out[0]["image"].shape == (3, 41, 41) and torch.equal(out[0]["image"], out[1]["image"])
        x1, y1, x2, y2 = out[0]["instances"]["boxes"][0].tolist()
        # the bar's box is that of a 33 x 5 rectangle turned by the angle (about the centre)
        a = np.deg2rad(abs(angle))
        assert x2 - x1 == pytest.approx(33 * np.cos(a) + 5 * np.sin(a), abs=2.5)
        assert y2 - y1 == pytest.approx(33 * np.sin(a) + 5 * np.cos(a), abs=2.5)
        assert int(out[0]["instances"]["masks"].sum()) == pytest.approx(33 * 5, rel=0.15)
    with pytest.raises(ValueError):
        RandomRotation(turns=3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_mask_boxes_equal_torchvision_plus_one(n, h, w, seed):
    """The vectorised tight boxes equal torchvision's masks_to_boxes with exclusive ends."""
    from torchvision.ops import masks_to_boxes

    from crossvis.data import mask_boxes

    masks = torch.from_numpy(np.random.default_rng(seed).random((n, h, w)) < 0.3)
    masks[:, h // 2, w // 2] = True  # non-empty, as the function requires
    expected = masks_to_boxes(masks).float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.equal(mask_boxes(masks.to(torch.uint8)), expected)
    assert [_tight_box(m) for m in masks.numpy()] == expected.tolist()
