"""The optimised inference path (controller/embeddings at kept locations only, cheaper mask pasting)
gives the results of a straightforward implementation computed here from the dense network maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torchvision.ops import batched_nms

from crossvis.backbones import FPN
from crossvis.heads import FCOSHead, MaskBranch, conv2d_at_locations, gather_locations
from crossvis.heads.upsample import aligned_bilinear, aligned_bilinear_crop
from crossvis.models import CrossVIS
from model_toys import TinyBackbone


def _model() -> CrossVIS:
    """An R-50-like CrossVIS in miniature: P3–P7, 256-d → 32-d embeddings, the official 169-parameter
    mask head and inference settings, biased (as the latency benchmark does) so that every frame
    fills the 100-detection cap with masks that have both foreground and background."""
    torch.manual_seed(0)
    backbone = TinyBackbone()
    neck = FPN(backbone.output_shape(), in_features=("res3", "res4", "res5"), out_channels=32, top_levels=2)
    head = FCOSHead(neck.output_shape(), num_classes=5, num_convs=1, embed_dim=32)
    branch = MaskBranch(neck.output_shape(), channels=16, num_convs=1)
    model = CrossVIS(backbone, neck, head, branch, num_identities=10).eval()
    with torch.no_grad():
        head.cls_logits.bias.zero_()
        head.ctrness.bias.zero_()
        head.bbox_pred.bias.fill_(1.0)
        model.network.controller.weight.normal_(0.0, 0.2)
        model.network.controller.bias.normal_(0.0, 0.5)
        head.embed_norm.running_mean.normal_()
        head.embed_norm.running_var.uniform_(0.5, 2.0)
        head.embed_norm.weight.normal_()
        head.embed_norm.bias.normal_()
    return model


def _aligned_reference(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Aligned bilinear upsampling as the reference (§1.4) defines it."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def _reference(model: CrossVIS, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference §4.1 step by step on the dense ``forward_network`` maps (one instance at a time)."""
    pre, pp = model.preprocessor, model.postprocessor
    batch, ((h, w),) = pre.batch([pre.resize_for_test(image)])
    oh, ow = image.shape[-2:]
    with torch.no_grad():
        out = model.forward_network(batch)
    boxes, scores, labels, params, locs, levels, embeds = [], [], [], [], [], [], []
    for level, stride in enumerate(pp.strides):
        cls = out.cls_logits[level][0]
        lw = cls.shape[-1]
        prob = cls.sigmoid().flatten(1).t() * out.ctrness[level][0].sigmoid().flatten()[:, None]
        loc, lab = torch.nonzero(prob > pp.score_threshold, as_tuple=True)
        score = prob[loc, lab]
        if score.numel() > pp.pre_nms_topk:
            score, top = score.topk(pp.pre_nms_topk)
            loc, lab = loc[top], lab[top]
        xy = torch.stack([loc % lw, loc // lw], 1).float() * stride + stride // 2
        reg = out.bbox_reg[level][0].flatten(1)[:, loc].t() * stride
        boxes.append(torch.cat([xy - reg[:, :2], xy + reg[:, 2:]], 1))
        scores.append(score.sqrt())
        labels.append(lab)
        params.append(out.controller[level][0].flatten(1)[:, loc].t())
        embeds.append(out.embeddings[level][0].flatten(1)[:, loc].t())
        locs.append(xy)
        levels.append(torch.full_like(lab, level))
    c = [torch.cat(v) for v in (boxes, scores, labels, params, locs, levels, embeds)]
    keep = batched_nms(c[0], c[1], c[2], pp.nms_threshold)[: pp.max_detections]
    boxes, scores, labels, params, locs, levels, embeds = [v[keep] for v in c]
    boxes = boxes * torch.tensor([ow / w, oh / h, ow / w, oh / h])
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    head = model.mask_head
    feats = out.mask_feats[0]
    fh, fw = feats.shape[-2:]
    gy, gx = torch.meshgrid(torch.arange(fh) * 8.0 + 4, torch.arange(fw) * 8.0 + 4, indexing="ij")
    probs = []
    for p, (x, y), lev in zip(params[ok], locs[ok], levels[ok]):
        soi = head.sizes_of_interest[lev]
        act = torch.cat([((x - gx) / soi)[None], ((y - gy) / soi)[None], feats])[None]
        # the official 169 layout: [W0 (8×10) | W1 (8×8) | W2 (1×8) | b0 (8) | b1 (8) | b2 (1)]
        weights = [p[:80].reshape(8, 10, 1, 1), p[80:144].reshape(8, 8, 1, 1), p[144:152].reshape(1, 8, 1, 1)]
        biases = [p[152:160], p[160:168], p[168:169]]
        for layer, (wt, b) in enumerate(zip(weights, biases)):
            act = F.conv2d(act, wt, b)
            act = act.relu() if layer < len(weights) - 1 else act
        prob = _aligned_reference(_aligned_reference(act, 2).sigmoid(), 4)[:, :, :h, :w]
        probs.append(F.interpolate(prob, size=(oh, ow), mode="bilinear", align_corners=False)[0, 0])
    return {"boxes": boxes[ok], "scores": scores[ok], "labels": labels[ok], "embeddings": embeds[ok],
            "probs": torch.stack(probs)}


@pytest.mark.parametrize("size", [(360, 640), (301, 533), (97, 61)])
def test_predict_matches_dense_reference(size):
    model = _model()
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(size[1]), dtype=torch.uint8)
    ref = _reference(model, image)
    (det,) = model.predict([image])
    assert len(det) == len(ref["boxes"]) >= 90
    for key in ("boxes", "scores", "embeddings"):
        torch.testing.assert_close(getattr(det, key), ref[key], rtol=1e-5, atol=1e-5)
    assert torch.equal(det.labels, ref["labels"])
    expected = ref["probs"] > model.postprocessor.mask_threshold
    assert 0.05 < expected.float().mean() < 0.95  # masks with real shapes, not all-on / all-off
    differs = det.masks != expected
    # Only float summation order differs, so a pixel may flip only where the probability is a tie
    # (within float32 rounding of the logits, whose convolutions the CPU's kernels sum in their own
    # order: up to 1.1e-5 from 0.5 on a Zen 2 EPYC without AVX-512)
    assert differs.float().mean() < 1e-4
    assert ((ref["probs"][differs] - 0.5).abs() < 3e-5).all()


def test_sparse_network_outputs_equal_dense_maps():
    model = _model()
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        dense = model.network(images)
        sparse = model.network(images, dense=False)
        assert sparse.controller is None and sparse.embeddings is None
        for level in range(len(model.network.strides)):
            h, w = dense.controller[level].shape[-2:]
            index = torch.tensor(sorted({0, w - 1, h * w - w, h * w - 1, (h // 2) * w + w // 2}))
            for key in ("controller", "embeddings"):
                expected = getattr(dense, key)[level][1].flatten(1)[:, index].t()
                torch.testing.assert_close(model.network.at_locations(sparse, key, 1, level, index), expected,
                                           rtol=1e-5, atol=1e-5)
                assert torch.equal(model.network.at_locations(dense, key, 1, level, index), expected)
            empty = model.network.at_locations(sparse, "embeddings", 0, level, index[:0])
            assert empty.shape == (0, 32)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_conv_at_locations_equals_dense_conv(kernel):
    torch.manual_seed(kernel)
    conv = nn.Conv2d(6, 7, kernel, padding=kernel // 2, bias=kernel != 5)
    feature = torch.randn(6, 5, 9)
    channels_last = feature[None].contiguous(memory_format=torch.channels_last)[0]   # a backend's layout
    index = torch.randperm(45)[:20]
    with torch.no_grad():
        dense = conv(feature[None])[0]
        torch.testing.assert_close(conv2d_at_locations(conv, feature, index), gather_locations(dense, index))
        every = torch.arange(45)   # the border locations, whose taps fall outside the map, included
        torch.testing.assert_close(conv2d_at_locations(conv, channels_last, every), gather_locations(dense, every))
        torch.testing.assert_close(gather_locations(channels_last, every), gather_locations(feature, every))
        assert conv2d_at_locations(conv, feature, index[:0]).shape == (0, 7)
    with pytest.raises(ValueError, match="stride 1"):
        conv2d_at_locations(nn.Conv2d(6, 7, 3, stride=2, padding=1), feature, index)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("crop", [(1, 1), (2, 3), (3, 2), (30, 41), (36, 48)])
def test_aligned_crop_is_bit_identical(factor, crop):
    x = torch.rand(3, 1, 36 // factor, 48 // factor)
    full = aligned_bilinear(x, factor)[..., : crop[0], : crop[1]]
    out = torch.empty((3, 1, *crop))
    aligned_bilinear_crop(x, factor, out)
    if factor == 2:  # its own formula for ×2 (test_factor_two_crop_matches_interpolate_to_the_last_bit)
        torch.testing.assert_close(out, full, rtol=2.0 ** -22, atol=0)   # two roundings apart
    else:
        assert torch.equal(out, full)
    mask = torch.empty((3, 1, *crop), dtype=torch.bool)
    aligned_bilinear_crop(x, factor, mask, 0.5)
    assert torch.equal(mask, full > 0.5)


@pytest.mark.parametrize("crop", [(2, 2), (2, 9), (17, 24), (24, 17), (47, 63), (48, 64)])
def test_factor_two_crop_reads_the_right_samples(crop):
    """The ×2 crop written as strided quarters (the mask head's upsample), for odd and full sizes
    and maps stored transposed: on integer samples every interpolated value is exact in float32
    (halves and quarters), so it must equal ``F.interpolate`` in float64 exactly."""
    generator = torch.Generator().manual_seed(crop[0] * 100 + crop[1])
    x = torch.randint(-1000, 1000, (5, 1, 32, 24), generator=generator).double().transpose(-1, -2)
    exact = aligned_bilinear(x, 2)[..., : crop[0], : crop[1]]            # [5, 1, *crop] float64
    for dtype in (torch.float32, torch.float64):
        out = torch.full((5, 1, *crop), float("nan"), dtype=dtype)
        aligned_bilinear_crop(x.to(dtype), 2, out)
        assert torch.equal(out.double(), exact)


@pytest.mark.parametrize("size", [(360, 480), (90, 120)])  # kept at its size; resized (×4)
def test_masks_are_the_same_in_any_chunking_and_chunks_follow_the_float_buffers(size, monkeypatch):
    model = _model()
    pp = model.postprocessor
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    with torch.inference_mode():
        batch, sizes = model.preprocessor.batch([model.preprocessor.resize_for_test(image)])
        (det,) = model.predict([image])
    pending = det.pending_masks
    calls: list[int] = []
    head = pp.mask_head.forward

    def counted(feats, stride, params, *rest):
        calls.append(params.shape[0])
        return head(feats, stride, params, *rest)

    monkeypatch.setattr(pp.mask_head, "forward", counted)
    c, h8, w8 = pending.mask_feats.shape[-3:]
    if sizes[0] != size:  # resized at frame size: float buffers of the frame's pixels
        work = max(size[0] * size[1], sizes[0][0] * sizes[0][1])
    else:                 # booleans only: the mask head's input (C + 2 channels at stride 8) bounds them
        work = (c + 2) * h8 * w8
    results = {}
    for per_chunk in (1, 7, len(det)):
        pp.mask_chunk_pixels = per_chunk * work
        calls.clear()
        results[per_chunk] = pending.render()
        assert calls == [min(per_chunk, len(det) - i) for i in range(0, len(det), per_chunk)]
    assert results[1].shape == (len(det), *size)
    assert torch.equal(results[1], results[7]) and torch.equal(results[1], results[len(det)])


def test_masks_are_made_when_read_and_only_for_the_selected_detections():
    model = _model()
    image = torch.randint(0, 256, (3, 90, 120), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    (det,) = model.predict([image])
    (again,) = model.predict([image])
    assert det.pending_masks is not None and len(det.pending_masks) == len(det) >= 90
    keep = torch.tensor([3, 0, 41])
    chosen = det.select(keep)
    assert len(chosen.pending_masks) == 3
    masks = chosen.masks                                    # made now, for three detections
    assert chosen.pending_masks is None and masks.shape == (3, 90, 120) and masks.dtype == torch.bool
    assert torch.equal(masks, again.masks[keep])            # the same as slicing all the masks
    assert 0 < masks.float().mean() < 1
    moved = model.predict([image])[0].select(keep).to("cpu")  # to() carries pending masks along
    assert moved.pending_masks is not None and torch.equal(moved.masks, masks)
    det.masks = None                                        # an explicit value replaces pending ones
    assert det.masks is None and det.pending_masks is None


@pytest.mark.parametrize("per_chunk", [None, 7])
def test_masks_encoded_from_the_low_resolution_maps_equal_the_pasted_masks_encoded(per_chunk):
    from crossvis.formats import encode_masks

    model = _model()
    image = torch.randint(0, 256, (3, 360, 480), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    with torch.inference_mode():
        (det,) = model.predict([image])
    pending = det.pending_masks
    if per_chunk is not None:  # the mask head in several chunks
        c, h8, w8 = pending.mask_feats.shape[-3:]
        model.postprocessor.mask_chunk_pixels = per_chunk * (c + 2) * h8 * w8
    with torch.inference_mode():
        encoded = pending.encode()
        pasted = pending.render()
    assert encoded is not None and len(encoded) == len(det) >= 90
    assert 0 < pasted.float().mean() < 1
    assert encoded == encode_masks(pasted)


@pytest.mark.parametrize("frame", [(90, 120), (720, 960), (361, 479)])
def test_resized_frames_encoded_from_the_low_resolution_maps_equal_the_pasted_masks_encoded(frame):
    """Frames the model resizes (×4 up, ×0.5 down, and by an odd ratio): the runs read through both
    interpolations give the strings of the masks pasted at frame size."""
    from crossvis.formats import encode_masks

    model = _model()
    image = torch.randint(0, 256, (3, *frame), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    with torch.inference_mode():
        (det,) = model.predict([image])
        pending = det.pending_masks
        assert pending.image_size != pending.orig_size
        encoded = pending.encode()
        pasted = pending.render()
    assert encoded is not None and len(encoded) == len(det) >= 90
    assert 0 < pasted.float().mean() < 1
    assert encoded == encode_masks(pasted)


def test_the_accumulator_leaves_masks_pending():
    from crossvis.trackers import VideoAccumulator

    model = _model()
    image = torch.randint(0, 256, (3, 360, 480), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    (det,) = model.predict([image])
    (same,) = model.predict([image])
    ids = torch.arange(len(det))
    ids[::3] = -1                                           # dropped by the tracker
    accumulator, reference = VideoAccumulator(), VideoAccumulator()
    accumulator.add(det, ids)
    assert det.pending_masks is not None                    # encoded without making the masks
    same.masks                                              # made, then encoded as before
    reference.add(same, ids)
    assert accumulator.results(1) == reference.results(1)
    assert len(accumulator.results(1)) == int((ids >= 0).sum())


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 60_000), st.integers(1, 2000), st.sampled_from(["uniform", "steps", "one class", "sorted"]),
       st.integers(0, 2 ** 31 - 1))
def test_the_k_largest_are_the_set_topk_picks_wherever_the_k_th_is_untied(n, k, pattern, seed):
    """``_top_k_untied`` (a sampled bound, then a partition of the scores above it) against ``topk``:
    scores rounded to a few steps (ties at the k-th), one class of every 40 holding the high scores
    (what a strided sample could miss) and sorted scores (the bound's worst case)."""
    from crossvis.models.postprocess import _top_k_untied
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, generator=g)
    if pattern == "steps":
        scores = (scores * 20).round() / 20
    elif pattern == "one class":
        scores = torch.where(torch.arange(n) % 40 == 7, scores + 1.0, scores * 0.1)
    elif pattern == "sorted":
        scores = scores.sort().values
    if n <= k:
        return
    picked = _top_k_untied(scores, k)
    threshold = scores.topk(k).values[-1]
    untied = int((scores >= threshold).sum()) == k
    if not untied:
        assert picked is None
        return
    assert picked is not None and picked.dtype == torch.int64
    assert torch.equal(picked, scores.topk(k).indices.sort().values)


def test_nan_scores_are_left_to_topk():
    from crossvis.models.postprocess import _top_k_untied
    scores = torch.rand(5000, generator=torch.Generator().manual_seed(0))
    scores[4321] = float("nan")
    assert _top_k_untied(scores, 100) is None
    assert _top_k_untied(scores.nan_to_num(0.0), 100) is not None


def test_only_the_scores_above_the_sampled_bound_are_partitioned(monkeypatch):
    from crossvis.models.postprocess import _top_k_untied
    sizes = []
    partition = np.argpartition
    monkeypatch.setattr(np, "argpartition", lambda a, kth: sizes.append(a.size) or partition(a, kth))
    scores = torch.rand(48 * 80 * 40, generator=torch.Generator().manual_seed(1))  # a stride-8 level's
    picked = _top_k_untied(scores, 1000)
    assert torch.equal(picked, scores.topk(1000).indices.sort().values)
    assert sizes and 1000 <= sizes[0] <= 4000
