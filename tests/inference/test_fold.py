"""Batch-norm folding: the folded network computes what the original does, with every norm that
follows a convolution gone; a norm that does not follow its convolution is detected."""
import copy

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from crossvis.backbones import ResNet, dla34
from crossvis.inference.fold import fold_batchnorm, folded_copy


def _randomise_norms(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _norms(module: nn.Module) -> int:
    return sum(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in module.modules())


def _assert_folds_to_the_same_features(backbone: nn.Module, norms: int, seed: int) -> None:
    """Every norm of ``backbone`` (float64: the folding is exact up to rounding) folds away and the
    features stay the same."""
    _randomise_norms(backbone, seed)
    assert _norms(backbone) == norms
    folded = copy.deepcopy(backbone)
    assert fold_batchnorm(folded) == norms and _norms(folded) == 0
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    with torch.no_grad():
        expected, got = backbone(x), folded(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-9)


def test_resnet50_frozen_bn_folds_to_the_same_features():
    _assert_folds_to_the_same_features(ResNet(depth=50).eval().double(), 53, seed=0)


def test_dla34_batchnorm_in_eval_mode_folds_to_the_same_features():
    backbone = dla34().eval().double()
    _assert_folds_to_the_same_features(backbone, _norms(backbone), seed=2)


def test_training_mode_batchnorm_is_not_folded():
    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(block) == 0 and isinstance(block[1], nn.BatchNorm2d)


class _NormBeforeConv(nn.Module):
    """Named like a conv → norm pair, wired norm → conv: folding it would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 1)
        self.bn1 = FrozenBatchNorm2d(4)

    def forward(self, x):
        return self.conv1(self.bn1(x))


def test_folded_copy_keeps_the_original_when_the_outputs_differ(caplog):
    module = _NormBeforeConv().eval()
    _randomise_norms(module, 4)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(5))
    with caplog.at_level("WARNING"):
        result = folded_copy(module, x)
    assert "running it unfolded" in caplog.text
    assert isinstance(result.bn1, FrozenBatchNorm2d) and result is not module
    torch.testing.assert_close(result(x), module(x))
