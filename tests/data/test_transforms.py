import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossvis.data import Compose, RandomHorizontalFlip, ResizeShortestEdge, finalize_instances


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
