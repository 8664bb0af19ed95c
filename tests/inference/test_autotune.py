"""Network backends and the measuring autotuner: outputs match float32, the guard, the cache, pinning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossvis.errors import CrossVISError
from crossvis.inference.autotune import (AutotuneSettings, TunedInference, autotune, autotune_settings, cache_key,
                                         mask_agreement)
from crossvis.inference.backends import BACKENDS, NetworkBackend, backend_unavailable, build_backend
from crossvis.models import build_model
from crossvis.recipes import load_recipe
from crossvis.structures import FrameDetections

RECIPE = Path(__file__).parents[1] / "helpers" / "tiny_crossvis.yaml"
CPU = torch.device("cpu")
#: largest |candidate − fp32| / max |fp32| allowed per output map
TOLERANCE = {"fp32-cl": 1e-4, "fp32-fused": 1e-4, "fp32-winograd": 1e-4, "onnxruntime": 1e-4, "openvino": 1e-4,
             "bf16": 0.08, "bf16-fused": 0.08, "openvino-bf16": 0.08,
             "onnxruntime-int8": 0.2, "openvino-int8": 0.2}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(load_recipe(RECIPE)).eval()
    with torch.no_grad():  # every frame yields detections (p_cls·p_ctr ≈ 0.25 before NMS)
        model.network.head.cls_logits.bias.zero_()
    return model


def _batches(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[list[tuple[int, int]]]]:
    g = torch.Generator().manual_seed(5)
    base = torch.randint(0, 256, (3, 12, 18), generator=g, dtype=torch.uint8)
    frame = torch.nn.functional.interpolate(base[None].float(), size=(60, 90), mode="bilinear")[0]
    batch, sizes = model.preprocessor.batch([model.preprocessor.resize_for_test(frame.round().to(torch.uint8))])
    return [batch, batch.flip(-1)], [sizes, sizes]


def _maps(outputs: dict) -> dict[str, torch.Tensor]:
    flat = {}
    items = outputs.present() if hasattr(outputs, "present") else outputs
    for key, value in items.items():
        for level, tensor in enumerate(value if isinstance(value, list) else [value]):
            flat[f"{key}.{level}"] = tensor
    return flat


@pytest.mark.parametrize("name", ["fp32-cl", "fp32-fused", "fp32-winograd", "bf16", "bf16-fused",
                                  pytest.param("onnxruntime", marks=pytest.mark.slow),
                                  pytest.param("openvino", marks=pytest.mark.slow),
                                  pytest.param("openvino-bf16", marks=pytest.mark.slow),
                                  pytest.param("onnxruntime-int8", marks=pytest.mark.slow),
                                  pytest.param("openvino-int8", marks=pytest.mark.slow)])
def test_each_available_backend_matches_the_float32_network(name):
    why = backend_unavailable(name, CPU)
    if why is not None:
        pytest.skip(why)
    model = _model()
    batches, _ = _batches(model)
    with torch.no_grad():
        reference = _maps(model.network(batches[0], dense=False))
    backend = build_backend(name, model, batches)
    try:
        got = _maps(backend(batches[0]))
    finally:
        backend.close()
    assert set(got) == set(reference)
    for key, ref in reference.items():
        assert got[key].dtype == torch.float32 and got[key].shape == ref.shape, key
        err = (got[key] - ref).abs().max() / ref.abs().max().clamp(min=1e-6)
        assert err < TOLERANCE[name], (key, float(err))
    if name.endswith("-int8"):  # really quantized: int8 rounding shows in the outputs
        assert max(float((got[k] - r).abs().max() / r.abs().max()) for k, r in reference.items()) > 1e-3
    # the model itself is left as it was (each backend has its own copy of the network)
    assert all(p.is_contiguous() for p in model.network.parameters())


@pytest.mark.parametrize("path", ["fused", "fused-differs", "no-fusion"])
def test_bf16_backend_gives_autocasts_own_outputs_with_weights_stored_in_bf16(path, monkeypatch, caplog):
    """Autocast casts a float32 weight on every call in inference; the bf16 backend stores the
    convolutions in bf16 once: packed and fused with their ReLU where oneDNN fusion is available
    and gives autocast's own bits on the example batch, cast in place otherwise. Either way the
    outputs must be exactly what autocast on the float32 network gives, with the norms left in
    float32 as autocast leaves them."""
    import logging

    import crossvis.inference.backends as backends
    from crossvis.inference.fused import FusedConv2d

    why = backend_unavailable("bf16", CPU) or (backends._fusion_unavailable("cpu") if path != "no-fusion" else None)
    if why is not None:
        pytest.skip(why)
    if path == "no-fusion":
        monkeypatch.setattr(backends, "_fusion_unavailable", lambda device_type: "forced off by the test")
    if path == "fused-differs":
        monkeypatch.setattr(backends, "_identical", lambda a, b: False)
    model = _model()
    batches, _ = _batches(model)
    with caplog.at_level(logging.INFO, logger="crossvis.inference.backends"):
        backend = build_backend("bf16", model, batches)
    differs = "differ from autocast" in caplog.text
    network = backends._folded_network(model).to(memory_format=torch.channels_last)   # float32 weights
    batch = batches[0].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = _maps(network(batch, dense=False))
    got = _maps(backend(batches[0]))
    assert set(got) == set(reference)
    for key, ref in reference.items():
        assert torch.equal(got[key], ref.float()), key
    copy = next(c.cell_contents for c in backend._run.__closure__ if isinstance(c.cell_contents, torch.nn.Module))
    convs = [m for m in copy.modules() if isinstance(m, (torch.nn.Conv2d, FusedConv2d))]
    assert differs if path == "fused-differs" else (path == "fused" or not differs)
    packed = path == "fused" and not differs   # on this CPU the fused convolutions matched autocast
    assert convs and all(isinstance(m, FusedConv2d) == packed for m in convs)
    assert all((m._weight if packed else m.weight).dtype == torch.bfloat16 for m in convs)
    assert all(m.weight.dtype == torch.float32 for m in copy.modules() if isinstance(m, torch.nn.GroupNorm))
    assert all(p.dtype == torch.float32 for p in model.network.parameters())   # the model is untouched


def test_mask_agreement_against_hand_computed_ious():
    def dets(masks, labels):
        m = torch.tensor(masks, dtype=torch.bool)
        n = m.shape[0]
        return FrameDetections(boxes=torch.zeros(n, 4), scores=torch.ones(n), labels=torch.tensor(labels),
                               image_size=(2, 2), masks=m)
    ref = dets([[[1, 1], [0, 0]], [[0, 0], [1, 1]]], [0, 1])
    # first: IoU 1/2 with the same class; second: only a different-class candidate overlaps → 0
    got = dets([[[1, 0], [0, 0]], [[0, 0], [1, 1]]], [0, 2])
    assert mask_agreement([ref], [got]) == pytest.approx((0.5 + 0.0) / 2)
    assert mask_agreement([ref], [got.select(torch.tensor([], dtype=torch.long))]) == 0.0
    assert mask_agreement([ref.select(torch.tensor([], dtype=torch.long))],
                          [ref.select(torch.tensor([], dtype=torch.long))]) == 1.0


@pytest.mark.slow
def test_measured_choice_is_cached_per_key_and_reused(tmp_path):
    model = _model()
    batches, sizes = _batches(model)
    batches, sizes = batches[:1], sizes[:1]
    settings = AutotuneSettings(candidates=("fp32", "fp32-cl"), tune_frames=1, rounds=2)
    cache = tmp_path / "autotune.json"
    first = autotune(model, batches, sizes, settings, cache)
    assert first.source == "measured"
    reports = {r.name: r for r in first.reports}
    assert reports["fp32"].passed and reports["fp32"].mask_iou == 1.0
    passed = [r for r in first.reports if r.passed]
    assert first.name == min(passed, key=lambda r: r.ms).name      # the fastest that passed the guard
    stored = json.loads(cache.read_text())["entries"]
    assert len(stored) == 1
    entry = next(iter(stored.values()))
    # keyed by the machine, the model and the candidate set (the default path's fp32 layouts and the
    # fast path's candidates are separate choices)
    assert entry["backend"] == first.name and entry["key"] == {**cache_key(model, CPU), "candidates": "fp32,fp32-cl"}
    assert entry["key"]["torch"] == torch.__version__ and entry["key"]["cpu"]

    again = autotune(model, batches, sizes, settings, cache)
    assert again.source == "cache" and again.name == first.name and again.reports == []

    other = _model(seed=1)  # other weights: another key, measured again, both entries kept
    assert cache_key(other, CPU)["model"] != cache_key(model, CPU)["model"]
    assert autotune(other, batches, sizes, settings, cache).source == "measured"
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_a_candidate_failing_the_accuracy_guard_is_not_chosen(tmp_path, monkeypatch):
    """fp32-cl with a corrupted mask branch output is much faster than fp32 here (it skips the
    network) but its masks disagree: the guard rejects it and fp32 is kept."""
    import crossvis.inference.autotune as tuner

    model = _model()
    batches, sizes = _batches(model)
    real_build = tuner.build_backend
    cached_outputs = real_build("fp32", model)(batches[0])

    def build(name, model, calibration=()):
        if name != "fp32-cl":
            return real_build(name, model, calibration)
        if isinstance(cached_outputs, dict):
            wrong = dict(cached_outputs, mask_feats=-cached_outputs["mask_feats"])
        else:
            from dataclasses import replace
            wrong = replace(cached_outputs, mask_feats=-cached_outputs.mask_feats)
        return NetworkBackend("fp32-cl", lambda batch: wrong)

    monkeypatch.setattr(tuner, "build_backend", build)
    result = autotune(model, batches[:1], sizes[:1], AutotuneSettings(candidates=("fp32", "fp32-cl"), rounds=1),
                      tmp_path / "c.json")
    reports = {r.name: r for r in result.reports}
    assert reports["fp32-cl"].mask_iou < 0.98 and not reports["fp32-cl"].passed
    assert result.name == "fp32"


def test_a_pinned_backend_is_honoured_without_measuring(tmp_path):
    model = _model()
    batches, sizes = _batches(model)
    cache = tmp_path / "c.json"
    result = autotune(model, batches, sizes, AutotuneSettings(backend="fp32-cl"), cache)
    assert (result.source, result.name) == ("pinned", "fp32-cl")
    assert not cache.exists()
    enabled, settings = autotune_settings({"inference": {"fast": True, "backend": "bf16"}})
    assert enabled and settings.backend == "bf16"


def test_tuned_inference_pinned_fp32_gives_the_models_own_detections(tmp_path):
    model = _model()
    g = torch.Generator().manual_seed(5)
    frame = torch.randint(0, 256, (3, 60, 90), generator=g, dtype=torch.uint8)
    expected = model.predict([frame])[0]
    fast = TunedInference(model, AutotuneSettings(backend="fp32"), tmp_path / "c.json")
    got = fast.predict([frame])[0]
    assert fast.result.name == "fp32" and len(got) == len(expected) > 0
    assert torch.equal(got.masks, expected.masks) and torch.allclose(got.scores, expected.scores)


def test_recipe_section_parsing_keeps_the_older_keys_meaning():
    assert autotune_settings({})[1].backend == "auto"
    assert autotune_settings({"inference": {"fast": True}})[1].backend == "auto"
    assert autotune_settings({"inference": {"fast": True, "dtype": "bf16"}})[1].backend == "bf16"
    assert autotune_settings({"inference": {"dtype": "fp32", "channels_last": False}})[1].backend == "fp32"
    assert autotune_settings({"inference": {"dtype": "fp32", "compile": True}})[1].backend == "compile"
    with pytest.raises(CrossVISError, match="inference.speed is unknown"):
        autotune_settings({"inference": {"speed": 1}})
    with pytest.raises(CrossVISError, match="inference.backend"):
        autotune_settings({"inference": {"backend": "tpu"}})
    with pytest.raises(CrossVISError, match="inference.candidates"):
        autotune_settings({"inference": {"candidates": ["fp32", "fp64"]}})
    assert set(AutotuneSettings().candidates) <= set(BACKENDS)


def test_tuned_runner_follows_weights_changed_in_place():
    """The backends run copies of the network; weights loaded after the first frame are used."""
    model, other = _model(), _model()
    with torch.no_grad():
        for p in other.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    runner = TunedInference(model, AutotuneSettings(backend="fp32"))
    frame = torch.randint(0, 256, (3, 64, 96), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    before = runner.predict([frame])[0]
    model.load_state_dict(other.state_dict())
    after = runner.predict([frame])[0]
    expected = model.predict([frame])[0]
    assert runner.result.source == "rebuilt"
    torch.testing.assert_close(after.scores, expected.scores, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before.scores, after.scores) if len(before) == len(after) else True


@pytest.mark.parametrize("name", ["fp32", "fp32-fused", "bf16"])
def test_reduced_precision_outputs_order_equal_scores_stably(name, monkeypatch):
    """A bf16 network's many equal scores are ordered by index (no full NMS run to match
    torchvision's unstable order); a float32 backend's keep torchvision's order exactly."""
    import crossvis.models.postprocess as postprocess
    from crossvis.inference.autotune import backend_detections

    why = backend_unavailable(name, CPU)
    if why is not None:
        pytest.skip(why)
    model = _model()
    batches, sizes = _batches(model)
    seen = []
    real = postprocess.batched_nms
    monkeypatch.setattr(postprocess, "batched_nms", lambda *a: seen.append(a[-1]) or real(*a))
    detections = backend_detections(model, build_backend(name, model, batches), batches[0], sizes[0], sizes[0])
    assert detections and seen == [name == "bf16"]
