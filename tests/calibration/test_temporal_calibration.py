"""Temporal feature calibration: identity cases, deform_conv2d against conv2d, and the frame bookkeeping."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossvis.backbones import FPN
from crossvis.calibration import FeatureAlignment, TemporalCalibrationNeck, local_correlation
from crossvis.errors import CrossVISError
from crossvis.structures import ShapeSpec


def test_zero_offsets_and_identity_fusion_reproduce_the_uncalibrated_features():
    torch.manual_seed(0)
    module = FeatureAlignment(6, max_displacement=2, fusion="gated")  # gate starts at 0: identity fusion
    nn.init.normal_(module.weight)  # any alignment kernel
    current, previous = torch.randn(2, 6, 9, 11), torch.randn(2, 6, 9, 11)
    assert torch.count_nonzero(module.offsets(current, previous)) == 0  # zero-initialised offset net
    assert torch.equal(module(current, previous), current)


def test_zero_offsets_make_the_deformable_conv_a_plain_conv():
    torch.manual_seed(0)
    module = FeatureAlignment(4, max_displacement=1, kernel_size=3)
    nn.init.normal_(module.weight)
    nn.init.normal_(module.bias)
    previous = torch.randn(1, 4, 7, 8)
    zero = torch.zeros(1, 18, 7, 8)
    expected = F.conv2d(previous, module.weight, module.bias, padding=1)
    assert torch.allclose(module.align(previous, zero), expected, atol=1e-5)


def test_initial_module_aligns_to_the_previous_frame_and_sums():
    torch.manual_seed(0)
    module = FeatureAlignment(5)  # identity kernel at the centre, zero offsets, sum fusion (OVIS)
    current, previous = torch.randn(1, 5, 6, 6), torch.randn(1, 5, 6, 6)
    assert torch.allclose(module(current, previous), current + previous, atol=1e-6)


def test_integer_offsets_shift_the_sampled_previous_features():
    # a 1x1 identity kernel with offset (dy, dx) = (1, 2) reads previous[y + 1, x + 2]
    module = FeatureAlignment(3, kernel_size=1)
    previous = torch.randn(1, 3, 6, 7)
    offsets = torch.zeros(1, 2, 6, 7)
    offsets[:, 0], offsets[:, 1] = 1.0, 2.0
    aligned = module.align(previous, offsets)
    assert torch.allclose(aligned[:, :, :5, :5], previous[:, :, 1:, 2:], atol=1e-6)
    assert torch.count_nonzero(aligned[:, :, 5:, :]) == 0  # outside the map reads zeros


def test_local_correlation_matches_a_direct_computation():
    torch.manual_seed(0)
    current, previous = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    corr = local_correlation(current, previous, 1)
    assert corr.shape == (2, 9, 5, 6)
    for channel, (dy, dx) in enumerate([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]):
        for y, x in [(0, 0), (2, 3), (4, 5)]:
            yy, xx = y + dy, x + dx
            want = 0.0 if not (0 <= yy < 5 and 0 <= xx < 6) else \
                float((current[1, :, y, x] * previous[1, :, yy, xx]).mean())
            assert float(corr[1, channel, y, x]) == pytest.approx(want, abs=1e-6)


def _neck(**kwargs):
    torch.manual_seed(0)
    shapes = {"c3": ShapeSpec(8, 8), "c4": ShapeSpec(16, 16)}
    return TemporalCalibrationNeck(FPN(shapes, in_features=["c3", "c4"], out_channels=8, top_levels=0),
                                   max_displacement=1, **kwargs)


def _inputs(batch, seed):
    g = torch.Generator().manual_seed(seed)
    return {"c3": torch.randn(batch, 8, 8, 8, generator=g), "c4": torch.randn(batch, 16, 4, 4, generator=g)}


def test_stream_uses_the_previous_frame_and_resets_per_video():
    neck = _neck().eval()
    first, second = _inputs(1, 1), _inputs(1, 2)
    with torch.no_grad():
        inner1, inner2 = neck.inner(first), neck.inner(second)
        out1 = neck(first)   # first frame of a video: calibrated with itself
        out2 = neck(second)  # calibrated with frame 1
        for k in ("p3", "p4"):
            assert torch.allclose(out1[k], neck.calibrator(k)(inner1[k], inner1[k]))
            assert torch.allclose(out2[k], neck.calibrator(k)(inner2[k], inner1[k]))
        neck.reset_stream()
        again = neck(second)  # a new video starts: no memory of frame 1
        assert torch.allclose(again["p3"], neck.calibrator("p3")(inner2["p3"], inner2["p3"]))
        # a batch of consecutive frames = the same frames one by one
        neck.reset_stream()
        both = neck({k: torch.cat([first[k], second[k]]) for k in first})
        assert torch.allclose(both["p3"][1:], out2["p3"], atol=1e-6)


def test_training_pairs_use_each_others_features():
    neck = _neck().train()
    inputs = _inputs(4, 3)  # 2 key frames, then their 2 reference frames
    inner = neck.inner(inputs)
    neck.set_frame_pairs(2)
    out = neck(inputs)
    swapped = torch.cat([inner["p3"][2:], inner["p3"][:2]])
    assert torch.allclose(out["p3"], neck.calibrator("p3")(inner["p3"], swapped))
    out["p3"].sum().backward()
    assert neck.align["shared"].offset_net[0].weight.grad is not None
    neck.set_frame_pairs(None)
    alone = neck(inputs)  # independent frames: each one with itself
    assert torch.allclose(alone["p3"], neck.calibrator("p3")(inner["p3"], inner["p3"]))
    neck.set_frame_pairs(3)
    with pytest.raises(CrossVISError, match="3 frame pairs"):
        neck(inputs)


def test_levels_and_per_level_modules():
    neck = _neck(levels=["p4"], shared=False)
    assert list(neck.align) == ["p4"]
    inputs = _inputs(1, 4)
    out = neck.eval()(inputs)
    assert torch.equal(out["p3"], neck.inner(inputs)["p3"])  # not calibrated
    assert neck.output_shape() == neck.inner.output_shape()
    with pytest.raises(CrossVISError, match="not outputs"):
        _neck(levels=["p9"])
    with pytest.raises(CrossVISError, match="fusion"):
        FeatureAlignment(4, fusion="concat")
