import math

import pytest
import torch
import torch.nn.functional as F

from crossvis.backbones import FPN
from crossvis.structures import CrossVISError, ShapeSpec

R50_C3_C5 = {"res3": ShapeSpec(512, 8), "res4": ShapeSpec(1024, 16), "res5": ShapeSpec(2048, 32)}
DLA_L3_L5 = {"level3": ShapeSpec(128, 8), "level4": ShapeSpec(256, 16), "level5": ShapeSpec(512, 32)}


def count(params) -> int:
    return sum(p.numel() for p in params)


def test_parameter_counts_match_official():
    fpn = FPN(R50_C3_C5, top_levels=2)
    top = count(fpn.top_block.parameters())
    assert count(fpn.parameters()) - top == 2_688_512
    assert top == 1_180_160
    dla_fpn = FPN(DLA_L3_L5, in_features=("level3", "level4", "level5"), top_levels=0)
    assert count(dla_fpn.parameters()) == 2_000_384


def test_output_shape_names_and_strides():
    shapes = FPN(R50_C3_C5).output_shape()
    assert list(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64, 128]
    assert {s.channels for s in shapes.values()} == {256}


TINY = {"a": ShapeSpec(3, 4), "b": ShapeSpec(5, 8)}


def _tiny_features(h, w):
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(2, 3, h, w, generator=g),
            "b": torch.randn(2, 5, math.ceil(h / 2), math.ceil(w / 2), generator=g)}


def _conv(m, x, stride=1):
    return F.conv2d(x, m.weight, m.bias, stride=stride, padding=m.weight.shape[-1] // 2)


@pytest.mark.parametrize("top_block_input", ["p5", "c5"])
def test_forward_equals_hand_computation(top_block_input):
    torch.manual_seed(0)
    fpn = FPN(TINY, in_features=("a", "b"), out_channels=4, top_levels=2, top_block_input=top_block_input)
    for p in fpn.parameters():  # non-zero biases so that they are checked too
        p.data.normal_()
    feats = _tiny_features(9, 13)
    lat_b = _conv(fpn.lateral["p3"], feats["b"])
    p3 = _conv(fpn.output["p3"], lat_b)
    lat_a = _conv(fpn.lateral["p2"], feats["a"]) + F.interpolate(lat_b, size=(9, 13), mode="nearest")
    p2 = _conv(fpn.output["p2"], lat_a)
    p4 = _conv(fpn.top_block["p4"], p3 if top_block_input == "p5" else feats["b"], stride=2)
    p5 = _conv(fpn.top_block["p5"], F.relu(p4), stride=2)
    with torch.no_grad():
        got = fpn(feats)
    assert list(got) == ["p2", "p3", "p4", "p5"]
    for name, expected in {"p2": p2, "p3": p3, "p4": p4, "p5": p5}.items():
        torch.testing.assert_close(got[name], expected, msg=name)
    assert got["p4"].shape[-2:] == (3, 4) and got["p5"].shape[-2:] == (2, 2)


def test_top_down_is_nearest_2x_upsampling_on_even_sizes():
    fpn = FPN(TINY, in_features=("a", "b"), out_channels=4, top_levels=0)
    feats = _tiny_features(8, 12)
    lat_b = _conv(fpn.lateral["p3"], feats["b"])
    upsampled = lat_b.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    expected = _conv(fpn.output["p2"], _conv(fpn.lateral["p2"], feats["a"]) + upsampled)
    with torch.no_grad():
        torch.testing.assert_close(fpn(feats)["p2"], expected)


def test_extra_inputs_are_ignored():
    fpn = FPN({"x": ShapeSpec(2, 4), **TINY}, in_features=("a", "b"), out_channels=4, top_levels=1)
    feats = {**_tiny_features(8, 8), "x": torch.zeros(2, 2, 8, 8)}
    assert list(fpn(feats)) == ["p2", "p3", "p4"]


def test_c2_xavier_initialisation():
    fpn = FPN(R50_C3_C5)
    for name, p in fpn.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        else:  # kaiming_uniform(a=1): U(-b, b) with b = sqrt(6 / ((1 + 1) * fan_in))
            bound = math.sqrt(3.0 / p[0].numel())
            assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound, name
            assert abs(p.std().item() - bound / math.sqrt(3)) < 0.05 * bound, name


@pytest.mark.parametrize("kwargs, fragment", [
    ({"in_features": ("res2", "res3")}, "in_features"),
    ({"in_features": ("res3", "res5")}, "strides"),
    ({"in_features": ("res5", "res4")}, "strides"),
    ({"top_block_input": "res5"}, "top_block_input"),
    ({"top_levels": -1}, "top_levels"),
    ({"out_channels": 0}, "out_channels"),
])
def test_bad_arguments_raise_a_clear_error(kwargs, fragment):
    with pytest.raises(CrossVISError, match=fragment):
        FPN(R50_C3_C5, **kwargs)


def test_missing_backbone_output_raises():
    fpn = FPN(TINY, in_features=("a", "b"), out_channels=4)
    with pytest.raises(CrossVISError, match="out_features"):
        fpn({"a": torch.zeros(1, 3, 8, 8)})
