import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from crossvis.data import (RandomHorizontalFlip, ResizeShortestEdge, YTVISFrameDataset, YTVISPairDataset,
                           YTVISVideoDataset)
from crossvis.plugins import get_registry
from crossvis.errors import CrossVISError
from vis_data_helpers import KEPT_FRAMES, VIDEOS, make_vis_dataset


def _datasets(path, images, **kw):
    return YTVISFrameDataset(str(path), str(images), **kw), YTVISPairDataset(str(path), str(images), **kw)


def test_frame_dataset_follows_the_contract(vis_dataset):
    path, images, truth = vis_dataset
    ds = YTVISFrameDataset(str(path), str(images), seed=0)
    assert ds.frames == [(v, f) for v in (10, 20) for f in KEPT_FRAMES[v]]  # frame 4 of 10 is crowd-only
    assert (ds.num_classes, ds.num_identities, ds.class_names) == (3, 4, ["c3", "c7", "c12"])
    identity = {8: 0, 30: 1, 55: 2}
    label = {8: 2, 30: 0, 55: 1}  # category ids 12, 3, 7 → sorted positions
    for index, (vid, f) in enumerate(ds.frames):
        s = ds[index]
        assert set(s) == {"image", "instances", "orig_size", "video_id", "frame_index", "file_name"}
        h, w, _ = VIDEOS[vid]
        assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, h, w)
        np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), np.asarray(Image.open(s["file_name"])))
        assert (s["orig_size"], s["video_id"], s["frame_index"]) == ((h, w), vid, f)
        inst = s["instances"]
        expected = [aid for (v, ff, aid) in truth if (v, ff) == (vid, f) and aid != 99]
        by_id = {identity[a]: a for a in expected}
        assert sorted(inst["ids"].tolist()) == sorted(by_id)
        assert inst["masks"].dtype == torch.uint8 and inst["labels"].dtype == torch.int64
        assert inst["boxes"].dtype == torch.float32 and inst["ids"].dtype == torch.int64
        for k, ident in enumerate(inst["ids"].tolist()):
            aid = by_id[ident]
            np.testing.assert_array_equal(inst["masks"][k].numpy(), truth[(vid, f, aid)])
            assert inst["labels"][k] == label[aid]
            ys, xs = np.nonzero(truth[(vid, f, aid)])
            assert inst["boxes"][k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_aspect_ratio_groups(list_dataset):
    frames, pairs = _datasets(*list_dataset[:2], seed=0)
    videos = YTVISVideoDataset(str(list_dataset[0]), str(list_dataset[1]))
    for ds in (frames, pairs):
        groups = [ds.aspect_ratio_group(i) for i in range(len(ds))]
        assert groups == [0] * len(KEPT_FRAMES[10]) + [1] * len(KEPT_FRAMES[20])  # 10 is 24x32, 20 is 32x24
    assert [videos.aspect_ratio_group(i) for i in range(2)] == [0, 1]


@pytest.mark.parametrize("region", [1, 2, 20, 0, -1])
def test_reference_frames_stay_within_the_sample_region(list_dataset, region):
    ds = YTVISPairDataset(str(list_dataset[0]), str(list_dataset[1]), seed=1, sample_region=region)
    for epoch in range(8):
        ds.set_epoch(epoch)
        for index, (vid, anchor) in enumerate(ds.frames):
            pair = ds[index]
            a, r = pair["anchor"], pair["reference"]
            assert a["video_id"] == r["video_id"] == vid and a["frame_index"] == anchor
            d = abs(r["frame_index"] - anchor)
            assert r["frame_index"] in KEPT_FRAMES[vid]
            has_candidate = any(0 < abs(f - anchor) <= (region if region > 0 else 99) for f in KEPT_FRAMES[vid])
            if has_candidate:
                assert 1 <= d and (region <= 0 or d <= region)
            else:
                assert d == 0


def test_reference_candidates_and_fallback(list_dataset):
    ds = YTVISPairDataset(str(list_dataset[0]), str(list_dataset[1]), seed=0, sample_region=1)
    assert ds.reference_candidates(10, 3) == [2]          # frame 4 is not kept, 5 is 2 away
    assert ds.reference_candidates(10, 5) == []
    assert ds.reference_candidates(10, 0) == [1]
    index = ds.frames.index((10, 5))
    pair = ds[index]
    assert pair["reference"]["frame_index"] == 5          # no candidate: the anchor is its own reference
    ds.sample_region = 0
    assert ds.reference_candidates(10, 5) == [0, 1, 2, 3]


def test_reference_choice_is_roughly_uniform(list_dataset):
    ds = YTVISPairDataset(str(list_dataset[0]), str(list_dataset[1]), seed=5, sample_region=2)
    index = ds.frames.index((10, 2))
    seen = []
    for epoch in range(200):
        ds.set_epoch(epoch)
        seen.append(ds.reference_candidates(10, 2)[int(torch.randint(3, (1,), generator=ds.generator(index)))])
    counts = np.bincount(seen, minlength=5)
    assert counts[4] == 0 and counts[2] == 0 and min(counts[[0, 1, 3]]) > 40  # candidates 0, 1, 3


def test_samples_are_reproducible_from_seed_epoch_and_index(list_dataset):
    tf = [ResizeShortestEdge([16, 20, 28], 40), RandomHorizontalFlip(0.5)]
    a = YTVISPairDataset(str(list_dataset[0]), str(list_dataset[1]), transforms=tf, seed=7)
    b = YTVISPairDataset(str(list_dataset[0]), str(list_dataset[1]), transforms=tf, seed=7)

    def signature(ds, i):
        p = ds[i]
        return (p["reference"]["frame_index"], tuple(p["anchor"]["image"].shape),
                int(p["anchor"]["image"].sum()), int(p["reference"]["image"].sum()))

    b.set_epoch(3)
    a.set_epoch(3)
    assert [signature(a, i) for i in range(len(a))] == [signature(b, i) for i in reversed(range(len(b)))][::-1]
    draws = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        draws.add(signature(a, 0))
    assert len(draws) > 1  # a new epoch gives new draws


def test_pair_frames_share_scale_and_flip(list_dataset):
    path, images, truth = list_dataset
    plain = YTVISPairDataset(str(path), str(images), seed=2)
    flipped = YTVISPairDataset(str(path), str(images), seed=2,
                               transforms=[ResizeShortestEdge(12, 100), RandomHorizontalFlip(1.0)])
    for index in range(len(plain)):
        p, q = plain[index], flipped[index]
        assert q["reference"]["frame_index"] == p["reference"]["frame_index"]  # same draw for the reference
        for key in ("anchor", "reference"):
            h, w = p[key]["orig_size"]
            scale = 12 / min(h, w)
            assert q[key]["image"].shape[1:] == (round(h * scale), round(w * scale))
            # mirrored: flipping back and resizing the original with the same nearest rule must agree
            expected = torch.nn.functional.interpolate(p[key]["instances"]["masks"][:, None].float(),
                                                       size=q[key]["image"].shape[1:], mode="nearest-exact")
            expected = expected[:, 0].flip(-1).to(torch.uint8)
            keep = expected.flatten(1).bool().any(1)
            np.testing.assert_array_equal(q[key]["instances"]["masks"].numpy(), expected[keep].numpy())
            assert torch.equal(q[key]["instances"]["ids"], p[key]["instances"]["ids"][keep])
            if len(expected[keep]):
                box = masks_to_boxes(expected[keep]) + torch.tensor([0, 0, 1, 1])
                assert torch.equal(q[key]["instances"]["boxes"], box)


def test_transform_nodes_are_built_through_the_registry(list_dataset):
    assert "resize_shortest_edge" in get_registry().names("transform")
    ds = YTVISFrameDataset(str(list_dataset[0]), str(list_dataset[1]), seed=0,
                           transforms=[{"type": "resize_shortest_edge", "min_size": 48, "max_size": 64}])
    assert ds[0]["image"].shape == (3, 48, 64)


def test_missing_frame_error_names_the_file(tmp_path):
    path, images, _ = make_vis_dataset(tmp_path)
    (images / "v10" / "00002.png").unlink()
    ds = YTVISPairDataset(str(path), str(images), seed=0)
    with pytest.raises(CrossVISError, match=r"frame file not found: .*v10/00002\.png"):
        ds[ds.frames.index((10, 2))]
    (images / "v10" / "00003.png").write_bytes(b"not an image")
    with pytest.raises(CrossVISError, match=r"cannot read frame .*v10/00003\.png"):
        ds[ds.frames.index((10, 3))]
    with pytest.raises(CrossVISError, match="images folder not found"):
        YTVISFrameDataset(str(path), str(tmp_path / "nowhere"))


def test_video_dataset_streams_frames(list_dataset):
    path, images, _ = list_dataset
    ds = YTVISVideoDataset(str(path), str(images))
    assert len(ds) == 2 and ds.num_classes == 3
    item = ds[1]
    assert (item["video_id"], item["name"], item["orig_size"], item["length"]) == (20, "v20", (32, 24), 4)
    stream = iter(item["frames"])
    first = next(stream)
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 24)
    np.testing.assert_array_equal(first.permute(1, 2, 0).numpy(), np.asarray(Image.open(item["file_names"][0])))
    assert len(list(stream)) == 3 and len(item["frames"]) == 4
