"""Export of the per-frame network: the exported graph gives the eager outputs and the same detections."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossvis.cli import main as cli_main
from crossvis.deploy.export import (FlatNetwork, export_network, load_exported, onnx_available, output_names,
                                    predict_from_outputs, unflatten_outputs)
from crossvis.models import build_model
from crossvis.recipes import load_recipe
from crossvis.errors import CrossVISError

RECIPE = Path(__file__).parents[1] / "helpers" / "tiny_crossvis.yaml"


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(load_recipe(RECIPE)).eval()
    with torch.no_grad():  # p_cls·p_ctr ≈ 0.25 everywhere: every frame yields max_detections detections
        model.network.head.cls_logits.bias.zero_()
    path = tmp_path_factory.mktemp("export") / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def _frames() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 256, (3, 60, 90), generator=g, dtype=torch.uint8)]


def test_exported_graph_matches_eager_and_predict(model_and_ckpt, tmp_path, capsys):
    model, ckpt = model_and_ckpt
    out = tmp_path / "net.pt2"
    assert cli_main(["export", str(RECIPE), "--checkpoint", str(ckpt), "--output", str(out),
                     "--height", "64", "--width", "96"]) == 0
    assert "mask_feats" in capsys.readouterr().out
    exported = load_exported(out)
    frames = _frames()
    resized = [model.preprocessor.resize_for_test(f) for f in frames]
    batch, sizes = model.preprocessor.batch(resized)
    assert batch.shape[-2:] == (64, 96)
    names = output_names(model)
    with torch.no_grad():
        got = exported(batch)
        eager = model.forward_network(batch)
    assert len(got) == len(names) == 5 * 3 + 1
    for name, tensor in zip(names, got):
        kind, _, level = name.partition(".")
        want = getattr(eager, kind)[int(level)] if level else getattr(eager, kind)
        assert tensor.shape == want.shape, name
        assert torch.allclose(tensor, want, atol=1e-5, rtol=1e-5), name

    expected = model.predict(frames)[0]
    result = predict_from_outputs(model, names, got, sizes, [(60, 90)])[0]
    assert len(result) == len(expected) > 10
    assert torch.allclose(result.boxes, expected.boxes, atol=1e-4)
    assert torch.allclose(result.scores, expected.scores, atol=1e-5)
    assert torch.equal(result.labels, expected.labels)
    assert torch.allclose(result.embeddings, expected.embeddings, atol=1e-5)
    assert (result.masks != expected.masks).float().mean() < 1e-4


def test_flat_network_in_memory_export_has_no_python_postprocessing(model_and_ckpt):
    model, _ = model_and_ckpt
    program = torch.export.export(FlatNetwork(model).eval(), (torch.zeros(1, 3, 64, 96),))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("conv" in t for t in targets)
    assert not any("nms" in t or "topk" in t or "nonzero" in t for t in targets)


def test_export_errors(model_and_ckpt, tmp_path):
    model, _ = model_and_ckpt
    with pytest.raises(CrossVISError, match="multiples of 32"):
        export_network(model, tmp_path / "x.pt2", height=60, width=96)
    with pytest.raises(CrossVISError, match="unknown export format"):
        export_network(model, tmp_path / "x.bin", fmt="tflite", height=64, width=96)
    with pytest.raises(CrossVISError, match="not a torch.export program"):
        (tmp_path / "junk.pt2").write_bytes(b"junk")
        load_exported(tmp_path / "junk.pt2")


def test_an_interrupted_export_leaves_the_old_file_whole(model_and_ckpt, tmp_path, monkeypatch):
    """The exported file is written all-or-nothing: a failure half-way keeps what was there."""
    model, _ = model_and_ckpt
    target = tmp_path / "net.pt2"
    target.write_bytes(b"the previous export")

    def half_written(program, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.export, "save", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        export_network(model, target, height=64, width=96)
    assert target.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["net.pt2"]


def test_onnx_export_or_clear_error(model_and_ckpt, tmp_path):
    model, _ = model_and_ckpt
    if not onnx_available():
        with pytest.raises(CrossVISError, match="pip install onnx"):
            export_network(model, tmp_path / "net.onnx", fmt="onnx", height=64, width=96)
        return
    path = export_network(model, tmp_path / "net.onnx", fmt="onnx", height=64, width=96)
    assert path.stat().st_size > 0


def test_flat_outputs_unflatten_to_the_network_outputs(model_and_ckpt):
    model, _ = model_and_ckpt
    images = torch.randn(1, 3, 64, 96)
    names = output_names(model)
    with torch.no_grad():
        flat, eager = FlatNetwork(model)(images), model.forward_network(images)
    back = unflatten_outputs(names, flat)
    assert set(back.present()) == set(eager.present()) == {"cls_logits", "bbox_reg", "ctrness", "controller",
                                                           "embeddings", "mask_feats"}
    for name, value in eager.present().items():
        got = back.present()[name]
        assert all(torch.equal(a, b) for a, b in zip(got if isinstance(got, list) else [got],
                                                     value if isinstance(value, list) else [value])), name
    with pytest.raises(CrossVISError, match="gave 15 outputs for 16 names"):
        unflatten_outputs(names, flat[:-1])
    with pytest.raises(CrossVISError, match="'scores.0' is not a network output"):
        unflatten_outputs(["scores.0", *names[1:]], flat)
    with pytest.raises(CrossVISError, match="lack mask_feats"):
        unflatten_outputs(names[:-1], flat[:-1])
