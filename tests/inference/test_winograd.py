"""NNPACK Winograd convolutions: the same convolution as ``F.conv2d`` (against float64), chosen
per layer and input size by the timer, and the ``fp32-winograd`` backend end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from crossvis.inference import winograd
from crossvis.inference.winograd import (WinogradConv2d, winograd_eligible, winograd_for_inference,
                                         winograd_unavailable)

CPU = torch.device("cpu")
needs_nnpack = pytest.mark.skipif(winograd_unavailable(CPU) is not None, reason=str(winograd_unavailable(CPU)))


def _relative_error(got: torch.Tensor, conv: nn.Conv2d, x: torch.Tensor) -> float:
    """max |got − conv(x) in float64| / max |conv(x) in float64|."""
    with torch.no_grad():
        bias = conv.bias.double() if conv.bias is not None else None
        reference = F.conv2d(x.double(), conv.weight.double(), bias, padding=conv.padding)
        return float((got.double() - reference).abs().max() / reference.abs().max().clamp(min=1e-12))


@needs_nnpack
@settings(max_examples=40, deadline=None)
@given(c_in=st.integers(1, 24), c_out=st.integers(1, 24), h=st.integers(1, 19), w=st.integers(1, 19),
       pad_h=st.integers(0, 2), pad_w=st.integers(0, 2), bias=st.booleans(), batch=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_nnpack_gives_the_convolution_to_float32_rounding(c_in, c_out, h, w, pad_h, pad_w, bias, batch, seed):
    if h + 2 * pad_h < 3 or w + 2 * pad_w < 3:
        return  # no output pixel
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, padding=(pad_h, pad_w), bias=bias)
    x = torch.randn(batch, c_in, h, w)
    layer = WinogradConv2d(conv, sizes=[(h, w)])
    with torch.inference_mode():
        got = layer(x)
    assert got.shape == (batch, c_out, h + 2 * pad_h - 2, w + 2 * pad_w - 2) and got.dtype == torch.float32
    assert _relative_error(got, conv, x) < 1e-4
    # a channels-last input gives the same numbers (NNPACK reads it contiguous)
    with torch.inference_mode():
        assert torch.equal(layer(x.contiguous(memory_format=torch.channels_last)), got)


@needs_nnpack
def test_sizes_not_chosen_run_the_layers_own_convolution():
    """Without a timer, a size not in ``sizes`` runs the layer's own convolution."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    layer = WinogradConv2d(conv, sizes=[(16, 16)])
    small, large = torch.randn(1, 8, 9, 9), torch.randn(1, 8, 16, 16)
    with torch.inference_mode():
        assert torch.equal(layer(small), conv(small))
        nnpack = layer(large)
    assert _relative_error(nnpack, conv, large) < 1e-4
    assert not torch.equal(nnpack, conv(large))   # a different algorithm: not bit-identical


@pytest.mark.parametrize("conv, eligible", [
    (nn.Conv2d(4, 4, 3, padding=1), True),
    (nn.Conv2d(4, 4, 3, padding=0, bias=False), True),
    (nn.Conv2d(4, 4, 3, padding=(2, 1)), True),
    (nn.Conv2d(4, 4, 3, stride=2, padding=1), False),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), False),
    (nn.Conv2d(4, 4, 3, padding=1, groups=2), False),
    (nn.Conv2d(4, 4, 1), False),
    (nn.Conv2d(4, 4, 5, padding=2), False),
    (nn.Conv2d(4, 4, 3, padding=3), False),
    (nn.Conv2d(4, 4, 3, padding="same"), False),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), False),
    (nn.Conv1d(4, 4, 3, padding=1), False),
])
def test_only_3x3_stride1_single_group_zero_padded_convolutions_are_eligible(conv, eligible):
    assert winograd_eligible(conv) is eligible
    if not eligible and isinstance(conv, nn.Conv2d):
        with pytest.raises(ValueError):
            WinogradConv2d(conv)


class _Shared(nn.Module):
    """One 3×3 convolution applied at two sizes (like an FCOS tower over the levels), one that
    never wins, and a stride-2 one (not eligible)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.loser = nn.Conv2d(6, 6, 3, padding=1, bias=False)   # another shape: timed on its own
        self.down = nn.Conv2d(6, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        small = self.down(x)
        return [self.loser(self.shared(x)), self.shared(small)]


@needs_nnpack
def test_the_timer_decides_per_layer_and_size_with_the_margin():
    torch.manual_seed(0)
    network = _Shared().eval()
    x = torch.randn(1, 6, 20, 24)
    with torch.inference_mode():
        reference = network(x)
    asked = []

    def timer(layer, shape):
        asked.append((layer.conv, tuple(shape)))
        if layer.conv is network.loser:
            return 1.0, 0.96          # 4% faster: inside the 5% margin
        return (1.0, 0.5) if shape[-1] == 24 else (1.0, 2.0)

    shared, loser = network.shared, network.loser
    out = winograd_for_inference(network, lambda n: n(x), timer=timer)
    assert out is network
    assert sorted(asked, key=str) == sorted([(shared, (1, 6, 20, 24)), (shared, (1, 6, 10, 12)),
                                             (loser, (1, 6, 20, 24))], key=str)
    assert isinstance(network.shared, WinogradConv2d) and network.shared.sizes == {(20, 24)}
    assert network.shared.conv is shared
    assert network.loser.conv is loser and network.loser.sizes == set()   # kept to time new sizes
    assert network.loser.choices == {(20, 24): False}
    assert type(network.down) is nn.Conv2d
    asked.clear()
    with torch.inference_mode():
        got = network(x)
    assert asked == []   # the sizes were decided when it was built
    for g, r in zip(got, reference):
        assert float((g - r).abs().max() / r.abs().max()) < 1e-4


@needs_nnpack
def test_a_size_met_later_is_timed_once_then_kept():
    torch.manual_seed(0)
    network = _Shared().eval()
    asked = []

    def timer(layer, shape):
        asked.append((layer.conv, tuple(shape)))
        return (1.0, 0.5) if shape[-1] == 30 else (1.0, 2.0)

    shared = network.shared
    winograd_for_inference(network, lambda n: n(torch.randn(1, 6, 20, 24)), timer=timer)
    asked.clear()
    x = torch.randn(1, 6, 16, 30)   # another video's size: new sizes for all three layers
    with torch.inference_mode():
        first = network(x)
        again = network(x)
    assert sorted(asked, key=str) == sorted([(shared, (1, 6, 16, 30)), (shared, (1, 6, 8, 15)),
                                             (network.loser.conv, (1, 6, 16, 30))], key=str)
    assert network.shared.sizes == {(16, 30)} and network.loser.sizes == {(16, 30)}
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with torch.no_grad():
        reference = _unwrapped(network)(x)
    for g, r in zip(first, reference):
        assert float((g - r).abs().max() / r.abs().max()) < 1e-4


def _unwrapped(network: nn.Module) -> nn.Module:
    """``network`` with each WinogradConv2d back to its own convolution (a copy)."""
    import copy

    plain = copy.deepcopy(network)
    for name, module in list(plain.named_children()):
        if isinstance(module, WinogradConv2d):
            setattr(plain, name, module.conv)
    return plain


@needs_nnpack
def test_the_default_timer_times_both_ways_on_the_shape():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    direct, nnpack = winograd.time_both_ways(WinogradConv2d(conv), torch.Size((1, 4, 12, 12)), repeats=2)
    assert direct > 0 and nnpack > 0


@needs_nnpack
def _tiny_model_and_batch(monkeypatch, cache_dir: Path):
    """The tests' tiny CrossVIS and a 64×96 batch, with the backend caches in ``cache_dir`` (no
    decisions kept by an earlier test)."""
    from crossvis.models import build_model
    from crossvis.recipes import load_recipe

    monkeypatch.setenv("CROSSVIS_CACHE_DIR", str(cache_dir))
    torch.manual_seed(0)
    model = build_model(load_recipe(Path(__file__).parents[1] / "helpers" / "tiny_crossvis.yaml")).eval()
    return model, torch.randn(1, 3, 64, 96)


def _nnpack_always(monkeypatch) -> list:
    """Make every timing choose NNPACK; returns the list the timed input shapes are appended to."""
    timed = []

    def timer(layer, shape):
        timed.append(tuple(shape))
        return 1.0, 0.1
    monkeypatch.setattr(winograd, "time_both_ways", timer)
    return timed


def test_fp32_winograd_backend_runs_nnpack_and_matches_float32(monkeypatch, tmp_path):
    from crossvis.inference.backends import build_backend

    model, batch = _tiny_model_and_batch(monkeypatch, tmp_path)
    chosen = _nnpack_always(monkeypatch)
    backend = build_backend("fp32-winograd", model, [batch])
    reference_backend = build_backend("fp32", model, [batch])
    got, reference = backend(batch), reference_backend(batch)
    assert chosen, "the tiny model has eligible 3×3 convolutions"
    identical = True
    for key in ("cls_logits", "bbox_reg", "ctrness", "bbox_features"):
        for g, r in zip(getattr(got, key), getattr(reference, key)):
            assert g.dtype == torch.float32 and g.shape == r.shape
            assert float((g - r).abs().max() / r.abs().max().clamp(min=1e-6)) < 1e-4, key
            identical &= torch.equal(g, r)
    assert not identical   # NNPACK really ran
    assert not backend.float32   # a guarded fast-path candidate, not a float32 layout


def test_unavailable_off_the_cpu():
    assert "CPU" in winograd_unavailable(torch.device("cuda"))


@needs_nnpack
def test_layers_of_one_shape_share_one_timing_per_size():
    """The timing depends on the shapes only: three towers of equal convolutions over two levels
    are timed twice, and every layer takes the decision for its size."""
    torch.manual_seed(0)
    towers = nn.ModuleList(nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)]) for _ in range(3))
    levels = [torch.randn(1, 4, 16, 20), torch.randn(1, 4, 8, 10)]
    asked = []

    def timer(layer, shape):
        asked.append(tuple(shape))
        return (1.0, 0.5) if shape[-1] == 20 else (1.0, 2.0)

    winograd_for_inference(towers, lambda n: [tower(x) for tower in n for x in levels], timer=timer)
    assert sorted(asked) == [(1, 4, 8, 10), (1, 4, 16, 20)]
    layers = [m for m in towers.modules() if isinstance(m, WinogradConv2d)]
    assert len(layers) == 6 and all(layer.sizes == {(16, 20)} for layer in layers)
    assert all(layer.choices == {(16, 20): True, (8, 10): False} for layer in layers)


@needs_nnpack
def test_the_decisions_are_kept_for_the_next_build_on_this_cpu_and_thread_count(monkeypatch, tmp_path):
    """A second build (a later process) reads the NNPACK-or-direct decisions from
    ``winograd.json`` instead of timing again; another thread count, or a broken file, is timed."""
    import json

    from crossvis.inference.backends import build_backend

    model, batch = _tiny_model_and_batch(monkeypatch, tmp_path)
    timed = []

    def timer(layer, shape):
        timed.append(tuple(shape))
        return (1.0, 0.1) if shape[-1] >= 24 else (1.0, 2.0)   # NNPACK on the larger maps only
    monkeypatch.setattr(winograd, "time_both_ways", timer)
    first = build_backend("fp32-winograd", model, [batch])
    assert timed
    cache = json.loads((tmp_path / "winograd.json").read_text())
    (entry,) = cache["entries"].values()
    assert len(entry) == len(timed) and any(entry.values()) and not all(entry.values())
    timed.clear()
    second = build_backend("fp32-winograd", model, [batch])
    assert timed == []                                       # read, not timed
    assert torch.equal(first(batch).cls_logits[0], second(batch).cls_logits[0])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        build_backend("fp32-winograd", model, [batch])
        assert timed                                         # another thread count: timed again
    finally:
        torch.set_num_threads(threads)
    assert len(json.loads((tmp_path / "winograd.json").read_text())["entries"]) == 2
    (tmp_path / "winograd.json").write_text("{not json")
    timed.clear()
    build_backend("fp32-winograd", model, [batch])
    assert timed and len(json.loads((tmp_path / "winograd.json").read_text())["entries"]) == 1


@needs_nnpack
def test_a_size_first_met_at_run_time_is_kept_for_the_next_process(monkeypatch, tmp_path):
    """A frame of another shape is timed when it comes, and its decisions join ``winograd.json``:
    a later build that meets the same shape runs it without timing."""
    import json

    from crossvis.inference.backends import build_backend

    model, batch = _tiny_model_and_batch(monkeypatch, tmp_path)
    other = torch.randn(1, 3, 96, 64)                        # a portrait video
    timed = _nnpack_always(monkeypatch)
    first = build_backend("fp32-winograd", model, [batch])
    at_build = len(json.loads((tmp_path / "winograd.json").read_text())["entries"].popitem()[1])
    timed.clear()
    expected = first(other).cls_logits[0]
    assert timed                                             # the new sizes were timed at run time
    (entry,) = json.loads((tmp_path / "winograd.json").read_text())["entries"].values()
    assert len(entry) == at_build + len(timed)               # ... and written back
    timed.clear()
    second = build_backend("fp32-winograd", model, [batch])
    assert torch.equal(second(other).cls_logits[0], expected)
    assert timed == []                                       # read, not timed again
