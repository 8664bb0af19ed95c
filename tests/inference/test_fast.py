"""The fast inference path: same post-processing in float32, network in channels-last / autocast."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou
from tracking_fixtures import single_thread  # noqa: F401 (autouse fixture: one thread, far faster on a loaded CPU)

from crossvis.inference.fast import (FastInference, FastSettings, cpu_supports_bf16, fast_settings,
                                  resolve_autocast_dtype)
from crossvis.models import build_model
from crossvis.recipes import load_recipe
from crossvis.errors import CrossVISError

RECIPE = Path(__file__).parents[1] / "helpers" / "tiny_crossvis.yaml"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(load_recipe(RECIPE)).eval()
    with torch.no_grad():  # every frame yields detections (p_cls·p_ctr ≈ 0.25 before NMS)
        model.network.head.cls_logits.bias.zero_()
    return model


def _frames() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    base = torch.randint(0, 256, (3, 12, 18), generator=g, dtype=torch.uint8)
    smooth = torch.nn.functional.interpolate(base[None].float(), size=(60, 90), mode="bilinear")[0]
    return [smooth.round().to(torch.uint8)]


def test_fp32_channels_last_path_gives_the_same_detections():
    model = _model()
    frames = _frames()
    expected = model.predict(frames)[0]
    fast = FastInference(model, FastSettings(dtype="fp32", channels_last=True))
    assert fast.autocast_dtype is None
    got = fast.predict(frames)[0]
    assert len(got) == len(expected) > 10
    assert torch.allclose(got.boxes, expected.boxes, atol=1e-3)
    assert torch.allclose(got.scores, expected.scores, atol=1e-5)
    assert torch.equal(got.labels, expected.labels)
    assert (got.masks != expected.masks).float().mean() < 1e-3
    assert got.scores.dtype == torch.float32 and got.masks.dtype == torch.bool


def test_mixed_precision_network_outputs_are_float32_and_close():
    model = _model()
    batch, _ = model.preprocessor.batch([model.preprocessor.resize_for_test(f) for f in _frames()])
    with torch.no_grad():
        reference = model.forward_network(batch)
    fast = FastInference(model, FastSettings(dtype="bf16"))
    assert fast.autocast_dtype == torch.bfloat16
    outputs = fast.network_outputs(batch).present()
    assert set(outputs) == set(reference.present()) == {"cls_logits", "bbox_reg", "ctrness", "controller",
                                                        "embeddings", "mask_feats"}
    differs = False
    for key, ref in reference.present().items():
        got = outputs[key] if isinstance(outputs[key], list) else [outputs[key]]
        ref = ref if isinstance(ref, list) else [ref]
        for a, b in zip(got, ref):
            assert a.dtype == torch.float32 and a.shape == b.shape  # post-processing sees float32
            scale = b.abs().max().clamp(min=1e-3)
            assert (a - b).abs().max() / scale < 0.05, key
            differs |= not torch.equal(a, b)
    assert differs  # the network really ran in bfloat16


def test_mixed_precision_detections_match_fp32():
    model = _model()
    frames = _frames()
    expected = model.predict(frames)[0]
    got = FastInference(model, FastSettings(dtype="bf16")).predict(frames)[0]
    iou = box_iou(expected.boxes[:10], got.boxes)
    best, index = iou.max(dim=1)
    # the ten best fp32 detections are found again (random weights: boxes are small and jittery)
    assert best.median() > 0.9 and (best > 0.5).sum() >= 8
    assert (got.scores[index] - expected.scores[:10]).abs().median() < 0.02


def test_autocast_dtype_resolution():
    assert resolve_autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert resolve_autocast_dtype("fp32", torch.device("cpu")) is None
    assert resolve_autocast_dtype("fp16", torch.device("cpu")) == torch.float16


def test_recipe_switch():
    assert fast_settings({"model": {}}) == (False, FastSettings())
    assert fast_settings({"inference": {"fast": True, "dtype": "bf16", "compile": False}}) == (
        True, FastSettings(dtype="bf16"))
    with pytest.raises(CrossVISError, match="inference.dtpye is unknown"):
        fast_settings({"inference": {"fast": True, "dtpye": "bf16"}})
    with pytest.raises(CrossVISError, match="inference.dtype"):
        fast_settings({"inference": {"dtype": "int8"}})
    with pytest.raises(CrossVISError, match="inference.fast must be true or false"):
        fast_settings({"inference": {"fast": "yes"}})


def test_non_condinst_model_is_rejected():
    with pytest.raises(CrossVISError, match="CondInst-style model"):
        FastInference(torch.nn.Linear(2, 2))


def test_predictor_fast_flag_and_recipe_switch_use_the_fast_runner():
    import numpy as np

    from crossvis.inference.predictor import Predictor

    frame = np.ascontiguousarray(_frames()[0].permute(1, 2, 0).numpy())
    from crossvis.inference.autotune import FP32_LAYOUTS, TunedInference

    plain = Predictor(RECIPE, device="cpu")
    # the default runner chooses between float32 runs of the network only (no guard needed)
    assert not plain.fast and isinstance(plain.runner, TunedInference) and plain.runner.settings == FP32_LAYOUTS
    assert FP32_LAYOUTS.min_mask_iou == 0.0 and not any("bf16" in c or "int8" in c for c in FP32_LAYOUTS.candidates)
    assert {"fp32-fused", "onnxruntime", "openvino"} <= set(FP32_LAYOUTS.candidates)
    flagged = Predictor(RECIPE, device="cpu", fast=True)

    assert flagged.fast and isinstance(flagged.runner, TunedInference) and flagged.runner.model is flagged.model
    switched = Predictor(load_recipe(RECIPE, ["inference.fast=true", "inference.dtype=fp32"]), device="cpu")
    assert switched.fast and switched.runner.settings.backend == "fp32-cl"  # the older keys pin their backend
    from dataclasses import replace

    # the quick candidates only: building every default one (exports, int8 quantization) is the
    # autotuner tests' subject, not this one's
    flagged.runner.settings = replace(flagged.runner.settings, candidates=("fp32", "fp32-cl"), cache=False)
    out = next(iter(flagged.track([frame])))
    assert out.masks.shape[1:] == (60, 90)


def test_online_predictor_with_the_fast_runner_tracks_like_the_plain_one():
    import numpy as np

    from crossvis.inference.predictor import OnlinePredictor

    frames = [np.ascontiguousarray(f.permute(1, 2, 0).numpy()) for f in _frames() * 2]
    plain = OnlinePredictor(_model())
    fast_model = _model()
    fast = OnlinePredictor(fast_model, runner=FastInference(fast_model, FastSettings(dtype="fp32")))
    for a, b in zip(plain.track(frames), fast.track(frames)):
        assert len(a) == len(b) > 0
        assert torch.equal(a.track_ids, b.track_ids) and torch.equal(a.labels, b.labels)
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3) and torch.allclose(a.scores, b.scores, atol=1e-5)
        assert (a.masks != b.masks).float().mean() < 1e-3
    assert [e["score"] for e in plain.video_results(1)] == pytest.approx([e["score"] for e in fast.video_results(1)],
                                                                          abs=1e-5)
