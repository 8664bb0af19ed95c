"""CondInst mask branch: parameter count, official layout, fusion of the three levels."""
import torch

from crossvis.heads import MaskBranch, aligned_bilinear
from crossvis.structures import ShapeSpec

P3_P7 = {f"p{i}": ShapeSpec(256, 2 ** i) for i in range(3, 8)}


def test_parameter_count_and_layout():
    branch = MaskBranch(P3_P7)
    # 3 refine (3·3·256·128 + BN 256) + 4 tower (3·3·128·128 + BN 256) + 1×1 128→8 with bias.
    assert sum(p.numel() for p in branch.parameters()) == 1_477_384
    keys = set(branch.state_dict())
    assert {"refine.0.0.weight", "refine.2.1.running_mean", "tower.3.0.weight", "tower.4.weight", "tower.4.bias"} <= keys
    assert "refine.0.0.bias" not in keys
    assert branch.out_stride == 8 and branch.out_channels == 8


def test_output_shape_and_fusion():
    shapes = {"p3": ShapeSpec(16, 8), "p4": ShapeSpec(16, 16), "p5": ShapeSpec(16, 32)}
    branch = MaskBranch(shapes, channels=8, out_channels=4, num_convs=1).eval()
    feats = {"p3": torch.randn(2, 16, 8, 12), "p4": torch.randn(2, 16, 4, 6), "p5": torch.randn(2, 16, 2, 3)}
    out = branch(feats)
    assert out.shape == (2, 4, 8, 12)
    fused = (branch.refine[0](feats["p3"]) + aligned_bilinear(branch.refine[1](feats["p4"]), 2)
             + aligned_bilinear(branch.refine[2](feats["p5"]), 4))
    torch.testing.assert_close(out, branch.tower(fused))
