"""Fused oneDNN convolutions: each equals ``F.conv2d`` (float64) with its ReLU / residual sum, and a
fused backbone computes what the folded one does, with no ``nn.Conv2d`` left."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from crossvis.backbones import ResNet, dla34
from crossvis.inference.backends import backend_unavailable
from crossvis.inference.fold import fold_batchnorm
from crossvis.inference.fused import Float32Part, FusedConv2d, fuse_for_inference, fusion_unavailable

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(fusion_unavailable(CPU) is not None, reason=str(fusion_unavailable(CPU)))


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _reference(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The convolution in float64, independent of oneDNN's kernels."""
    bias = None if conv.bias is None else conv.bias.detach().double()
    return F.conv2d(x.double(), conv.weight.detach().double(), bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    assert got.shape == expected.shape
    err = float((got.double() - expected).abs().max() / expected.abs().max().clamp(min=1e-6))
    assert err < rtol, err


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 3), cout=st.integers(1, 3), kernel=st.sampled_from([1, 3, 5]),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), groups=st.sampled_from([1, 2]),
       bias=st.booleans(), size=st.tuples(st.integers(6, 17), st.integers(6, 17)), batch=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_fused_conv_equals_conv2d_and_relu(cin, cout, kernel, stride, dilation, groups, bias, size, batch, seed):
    torch.manual_seed(seed)
    cin, cout = cin * 4 * groups, cout * 4 * groups
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation,
                     groups=groups, bias=bias)
    x = _cl(torch.randn(batch, cin, *size))
    expected = _reference(conv, x)
    with torch.inference_mode():
        plain = FusedConv2d(conv, x.shape, "none")(x)
        relu = FusedConv2d(conv, x.shape, "relu")(x)
        other = torch.randn(expected.shape)
        summed = FusedConv2d(conv, x.shape, "none").add_relu(x, other)
    _close(plain, expected)
    _close(relu, expected.clamp(min=0))
    _close(summed, (expected + other.double()).clamp(min=0))
    assert plain.is_contiguous(memory_format=torch.channels_last)


def test_a_size_other_than_the_packed_one_and_a_specialised_size_give_the_same_numbers():
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 40, 3, padding=1)
    big, small = _cl(torch.randn(1, 32, 48, 80)), _cl(torch.randn(1, 32, 3, 5))
    fused = FusedConv2d(conv, big.shape, "none")
    with torch.inference_mode():
        unspecialised = fused(small)
        kept = fused.specialise(small.shape)
        specialised = fused(small)
        contiguous_input = fused(big.contiguous())   # converted to channels-last on the way in
    assert isinstance(kept, bool) and (tuple(small.shape) in fused.packed_for) == kept
    for got in (unspecialised, specialised):
        _close(got, _reference(conv, small))
    _close(contiguous_input, _reference(conv, big))


@pytest.mark.skipif(backend_unavailable("bf16-fused", CPU) is not None,
                    reason=str(backend_unavailable("bf16-fused", CPU)))  # oneDNN's bf16 weights need AVX-512 here
def test_bfloat16_fused_conv_equals_conv2d_on_bf16_rounded_operands():
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    x = _cl(torch.randn(1, 16, 20, 24)).to(torch.bfloat16)
    with torch.inference_mode():
        got = FusedConv2d(conv, x.shape, "relu", torch.bfloat16)(x)
    rounded = copy.deepcopy(conv)
    with torch.no_grad():
        rounded.weight.copy_(conv.weight.to(torch.bfloat16).float())
        rounded.bias.copy_(conv.bias.to(torch.bfloat16).float())
    assert got.dtype == torch.bfloat16
    _close(got.float(), _reference(rounded, x.float()).clamp(min=0), rtol=1e-2)  # bf16 output rounding


def test_a_plain_conv_only_is_rejected():
    with pytest.raises(ValueError, match="numeric zero padding"):
        FusedConv2d(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), (1, 4, 8, 8))
    with pytest.raises(ValueError, match="unary"):
        FusedConv2d(nn.Conv2d(4, 4, 3), (1, 4, 8, 8), "gelu")


def _randomised_folded(backbone: nn.Module, seed: int) -> nn.Module:
    """``backbone`` in eval mode with random norm statistics, folded (so its blocks are fusable)."""
    g = torch.Generator().manual_seed(seed)
    for m in backbone.modules():
        if hasattr(m, "running_var"):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    fold_batchnorm(backbone.eval())
    return backbone.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("make", [lambda: ResNet(depth=50), lambda: ResNet(depth=18), dla34],
                         ids=["resnet50", "resnet18", "dla34"])
def test_a_fused_backbone_computes_the_folded_ones_features(make):
    folded = _randomised_folded(make(), seed=3)
    convs = sum(type(m) is nn.Conv2d for m in folded.modules())
    x = _cl(torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(4)))
    other = _cl(torch.randn(1, 3, 64, 160, generator=torch.Generator().manual_seed(5)))
    fused = fuse_for_inference(copy.deepcopy(folded), lambda net: net(x))
    assert sum(type(m) is nn.Conv2d for m in fused.modules()) == 0
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == convs
    with torch.inference_mode():
        for batch in (x, other):   # the size packed for, and another one
            expected, got = folded(batch), fused(batch)
            assert set(got) == set(expected)
            for key in expected:
                _close(got[key], expected[key].double(), rtol=1e-4)


def test_fusion_is_a_cpu_feature():
    assert fusion_unavailable(CPU) is None
    assert "CPU" in fusion_unavailable(torch.device("cuda"))


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 here")
def test_a_bfloat16_network_keeps_its_float32_parts_in_float32():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.GroupNorm(4, 16), nn.Conv2d(16, 5, 3, padding=1))
    net = net.eval().to(memory_format=torch.channels_last)
    reference = copy.deepcopy(net)
    x = _cl(torch.randn(1, 8, 20, 28))
    fused = fuse_for_inference(net, lambda n: n(x), torch.bfloat16, float32_parts=["3", "no.such.part"])
    assert isinstance(fused[3], Float32Part) and fused[3].module.packed.dtype == torch.float32
    assert fused[0].packed.dtype == torch.bfloat16 and fused[2].weight.dtype == torch.bfloat16
    with torch.inference_mode():
        got = fused(x.to(torch.bfloat16))
        # the same float32 computation with the activations rounded to bf16 where the network is bf16
        hidden = reference[2](torch.relu(reference[0](x))).to(torch.bfloat16).float()
        expected = _reference(reference[3], hidden)
    assert got.dtype == torch.float32
    _close(got, expected, rtol=0.02)   # the bf16 first layer (weights and output rounded): ~0.003
