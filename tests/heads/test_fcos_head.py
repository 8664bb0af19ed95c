"""FCOS head: parameter counts, official module layout, initialisation, output shapes."""
import math

import pytest
import torch

from crossvis.heads import FCOSHead
from crossvis.structures import CrossVISError, ShapeSpec

P3_P7 = {f"p{i}": ShapeSpec(256, 2 ** i) for i in range(3, 8)}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_condinst():
    # 2 towers × 4 × (3·3·256·256 + 256 + GN 512) + cls 40 + bbox 4 + ctrness 1 predictors + 5 scales.
    assert _count(FCOSHead(P3_P7, num_classes=40)) == 4_828_466


def test_parameter_count_with_embedding_tower():
    # + a third tower (2,362,368) + 1×1 conv 256→256 (65,792) + BatchNorm (512) = the official head.
    assert _count(FCOSHead(P3_P7, num_classes=40, embed_dim=256)) == 7_257_138


def test_official_module_layout():
    keys = set(FCOSHead(P3_P7, num_classes=40).state_dict())
    for tower in ("cls_tower", "bbox_tower"):
        for conv, gn in ((0, 1), (3, 4), (6, 7), (9, 10)):
            assert {f"{tower}.{conv}.weight", f"{tower}.{conv}.bias", f"{tower}.{gn}.weight"} <= keys
    assert {"cls_logits.weight", "bbox_pred.bias", "ctrness.weight", "scales.4.scale"} <= keys
    assert not any(k.startswith("embed") for k in keys)


def test_initialisation():
    torch.manual_seed(0)
    head = FCOSHead(P3_P7, num_classes=40, embed_dim=256)
    assert torch.allclose(head.cls_logits.bias, torch.full((40,), -math.log(99.0)))
    for conv in (head.cls_tower[0], head.bbox_tower[9], head.bbox_pred, head.ctrness, head.embed_pred):
        assert conv.bias.abs().max() == 0
        assert abs(conv.weight.std().item() - 0.01) < 0.002
    assert all(s.scale.item() == 1.0 for s in head.scales)


def test_outputs_per_level():
    shapes = {"p3": ShapeSpec(32, 8), "p4": ShapeSpec(32, 16), "p5": ShapeSpec(32, 32)}
    head = FCOSHead(shapes, num_classes=3, num_convs=1, embed_dim=16)
    feats = [torch.randn(2, 32, 8, 12), torch.randn(2, 32, 4, 6), torch.randn(2, 32, 2, 3)]
    out = head(feats)
    assert head.strides == [8, 16, 32]
    for level, f in enumerate(feats):
        hw = f.shape[-2:]
        assert out.cls_logits[level].shape == (2, 3, *hw)
        assert out.bbox_reg[level].shape == (2, 4, *hw)
        assert out.ctrness[level].shape == (2, 1, *hw)
        assert out.bbox_features[level].shape == (2, 32, *hw)
        assert out.embeddings[level].shape == (2, 16, *hw)
        assert (out.bbox_reg[level] >= 0).all()
    assert out.embed_features is None


def test_sparse_embedding_outputs_hold_the_tower_features_and_project_to_the_dense_embeddings():
    torch.manual_seed(0)
    shapes = {"p3": ShapeSpec(32, 8), "p4": ShapeSpec(32, 16)}
    head = FCOSHead(shapes, num_classes=3, num_convs=1, embed_dim=16).eval()
    feats = [torch.randn(1, 32, 6, 10), torch.randn(1, 32, 3, 5)]
    dense, sparse = head(feats), head(feats, dense_embeddings=False)
    assert sparse.embeddings is None and len(sparse.embed_features) == 2
    for level, f in enumerate(feats):
        assert sparse.embed_features[level].shape == (1, 32, *f.shape[-2:])
        index = torch.tensor([0, 7, f.shape[-2] * f.shape[-1] - 1])
        expected = dense.embeddings[level][0].flatten(1)[:, index].t()
        torch.testing.assert_close(head.embeddings_at(sparse.embed_features[level][0], index), expected)
    plain = FCOSHead(shapes, num_classes=3, num_convs=1)(feats)
    assert plain.embeddings is None and plain.embed_features is None


def test_bbox_reg_is_relu_of_scaled_prediction():
    shapes = {"p3": ShapeSpec(32, 8)}
    head = FCOSHead(shapes, num_classes=2, num_convs=1)
    with torch.no_grad():
        head.scales[0].scale.fill_(-2.0)
    x = torch.randn(1, 32, 4, 4)
    raw = head.bbox_pred(head.bbox_tower(x))
    torch.testing.assert_close(head([x]).bbox_reg[0], torch.relu(-2.0 * raw))


def test_errors_name_the_recipe_key():
    with pytest.raises(CrossVISError, match="num_classes"):
        FCOSHead(P3_P7, num_classes=None)
    with pytest.raises(CrossVISError, match="in_features"):
        FCOSHead(P3_P7, num_classes=3, in_features=["p2"])
    with pytest.raises(CrossVISError, match="out_channels"):
        FCOSHead({"p3": ShapeSpec(256, 8), "p4": ShapeSpec(128, 16)}, num_classes=3)
