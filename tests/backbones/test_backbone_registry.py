"""Every registered backbone honours its declared ``output_shape()``, alone and under the FPN."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crossvis.backbones.components as components
from crossvis.backbones import DLA, ResNet
from crossvis.plugins import CrossVISPluginManager
from crossvis.registry import Registry


def _registry() -> Registry:
    manager = CrossVISPluginManager()
    manager.add_plugin(components, name="crossvis.backbones.components", distribution="crossvis (test)")
    return manager.registry


REGISTRY = _registry()


def test_components_are_registered_through_the_hook():
    assert REGISTRY.names("backbone") == ["dla", "dla34", "resnet"]
    assert REGISTRY.names("neck") == ["fpn"]
    assert {e.provider for e in REGISTRY.entries("backbone")} == {"crossvis"}


def _check_against_output_shape(outputs, shapes, h, w):
    assert list(outputs) == list(shapes)
    for name, spec in shapes.items():
        assert outputs[name].shape == (2, spec.channels, math.ceil(h / spec.stride),
                                       math.ceil(w / spec.stride)), name


@pytest.mark.parametrize("name", REGISTRY.names("backbone"))
def test_backbone_and_fpn_outputs_match_output_shape_on_odd_sizes(name):
    torch.manual_seed(0)
    backbone = REGISTRY.get("backbone", name)()
    shapes = backbone.output_shape()
    assert [s.stride for s in shapes.values()] == sorted(s.stride for s in shapes.values())
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        features = backbone(x)
        _check_against_output_shape(features, shapes, 65, 97)
        neck = REGISTRY.get("neck", "fpn")(input_shape=shapes, in_features=tuple(shapes)[-3:])
        _check_against_output_shape(neck(features), neck.output_shape(), 65, 97)


SMALL_RESNET = ResNet(depth=18, out_features=("res2", "res3", "res4", "res5")).eval()
SMALL_DLA = DLA(channels=(4, 4, 8, 8, 8, 8), out_features=tuple(f"level{i}" for i in range(6))).eval()


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70))
def test_small_backbones_keep_ceil_division_sizes(h, w):
    with torch.no_grad():
        for body in (SMALL_RESNET, SMALL_DLA):
            _check_against_output_shape(body(torch.zeros(2, 3, h, w)), body.output_shape(), h, w)
