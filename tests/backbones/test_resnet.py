import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from crossvis.backbones import ResNet
from crossvis.errors import CrossVISError

ALL_STAGES = ("res2", "res3", "res4", "res5")


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth, expected", [(50, 23_454_912), (101, 42_394_816)])
def test_parameter_count_matches_official(depth, expected):
    # official counts (reference §5.3): trainable + frozen parameters, FrozenBN buffers excluded
    body = ResNet(depth=depth, norm="FrozenBN", freeze_at=2, out_features=ALL_STAGES)
    assert num_params(body) == expected


def test_bn_variant_matches_torchvision_resnet50_without_classifier():
    ours = ResNet(depth=50, norm="BN", freeze_at=0, out_features=ALL_STAGES)
    reference = torchvision.models.resnet50(weights=None)
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    assert num_params(ours) == num_params(reference) - num_params(reference.fc)


def test_frozen_bn_has_no_parameters_and_is_the_affine_map():
    body = ResNet(depth=18, norm="FrozenBN", freeze_at=0, out_features=ALL_STAGES)
    norms = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and all(not list(m.parameters()) for m in norms)
    conv_params = {id(p) for m in body.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()}
    assert all(id(p) in conv_params for p in body.parameters())  # only convolutions have parameters

    bn = body.bn1
    g = torch.Generator().manual_seed(0)
    for buf in (bn.weight, bn.bias, bn.running_mean):
        buf.copy_(torch.randn(buf.shape, generator=g))
    bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    x = torch.randn(2, 64, 5, 7, generator=g)
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-5)
    expected = x * scale[:, None, None] + (bn.bias - bn.running_mean * scale)[:, None, None]
    body.train()
    torch.testing.assert_close(bn(x), expected)


def _part_index(param_name: str) -> int:
    """0 for the stem, k for layer{k} (= stage res{k+1})."""
    head = param_name.split(".")[0]
    return int(head[len("layer"):]) if head.startswith("layer") else 0


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at_sets_requires_grad_and_freezes_batch_norms(freeze_at):
    body = ResNet(depth=18, norm="BN", freeze_at=freeze_at, out_features=ALL_STAGES)
    for name, p in body.named_parameters():
        assert p.requires_grad == (_part_index(name) >= freeze_at), name
    for name, m in body.named_modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            assert isinstance(m, FrozenBatchNorm2d) == (_part_index(name) < freeze_at), name
    # the frozen parameters are really the first ones: their count grows with freeze_at
    frozen = sum(p.numel() for p in body.parameters() if not p.requires_grad)
    assert (frozen == 0) == (freeze_at == 0)


def test_frozen_stages_get_no_gradient_and_keep_statistics():
    torch.manual_seed(0)
    body = ResNet(depth=18, norm="BN", freeze_at=2, out_features=("res2", "res3"))
    body.train()
    before = body.layer1[0].bn1.running_mean.clone(), body.layer2[0].bn1.running_mean.clone()
    outputs = body(torch.randn(2, 3, 33, 41))
    sum(o.square().mean() for o in outputs.values()).backward()
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
    assert body.layer2[0].conv1.weight.grad is not None
    assert torch.equal(body.layer1[0].bn1.running_mean, before[0])      # frozen: FrozenBN
    assert not torch.equal(body.layer2[0].bn1.running_mean, before[1])  # trained: BN updates


def test_group_norm_variant():
    body = ResNet(depth=18, norm="GN", freeze_at=0, out_features=("res2",))
    norms = [m for m in body.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 for m in norms)
    assert body(torch.randn(1, 3, 32, 32))["res2"].shape == (1, 64, 8, 8)


def test_stride_in_1x1_moves_the_stride_and_keeps_shapes():
    torch.manual_seed(0)
    msra = ResNet(depth=50, stride_in_1x1=True, out_features=ALL_STAGES)
    tv = ResNet(depth=50, stride_in_1x1=False, out_features=ALL_STAGES)
    for layer in ("layer2", "layer3", "layer4"):
        first = getattr(msra, layer)[0]
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
        first = getattr(tv, layer)[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    assert msra.layer1[0].conv1.stride == (1, 1)
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        shapes_msra = {k: v.shape for k, v in msra(x).items()}
        shapes_tv = {k: v.shape for k, v in tv(x).items()}
    assert shapes_msra == shapes_tv


def test_stride_in_1x1_block_equals_msra_bottleneck():
    """res3 block 0 with stride_in_1x1 computes the detectron2 bottleneck (stride in the 1x1)."""
    torch.manual_seed(0)
    body = ResNet(depth=50, norm="FrozenBN", freeze_at=0, stride_in_1x1=True, out_features=("res3",))
    block = body.layer2[0]
    for m in block.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)

    def fbn(m, x):
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-5)

    x = torch.randn(1, 256, 9, 13)
    y = F.relu(fbn(block.bn1, F.conv2d(x, block.conv1.weight, stride=2)))
    y = F.relu(fbn(block.bn2, F.conv2d(y, block.conv2.weight, padding=1)))
    y = fbn(block.bn3, F.conv2d(y, block.conv3.weight))
    shortcut = fbn(block.downsample[1], F.conv2d(x, block.downsample[0].weight, stride=2))
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(y + shortcut), rtol=1e-4, atol=1e-4)


def test_only_needed_stages_are_built():
    body = ResNet(depth=18, out_features=("res3",))
    assert not hasattr(body, "layer3") and not hasattr(body, "layer4")
    assert list(body(torch.randn(1, 3, 32, 32))) == ["res3"]
    assert list(body.output_shape()) == ["res3"]


def test_outputs_are_ordered_fine_to_coarse_whatever_the_request_order():
    body = ResNet(depth=18, out_features=("res5", "res3"))
    assert list(body.output_shape()) == ["res3", "res5"]
    assert [s.stride for s in body.output_shape().values()] == [8, 32]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"depth": 42}, "depth"),
    ({"norm": "SyncBN"}, "norm"),
    ({"freeze_at": 6}, "freeze_at"),
    ({"out_features": ("res6",)}, "out_features"),
    ({"out_features": ()}, "out_features"),
    ({"depth": 18, "stride_in_1x1": True}, "stride_in_1x1"),
])
def test_bad_arguments_raise_a_clear_error(kwargs, fragment):
    with pytest.raises(CrossVISError, match=fragment):
        ResNet(**kwargs)


def test_bad_input_shape_raises():
    with pytest.raises(CrossVISError, match=r"\[B, 3, H, W\]"):
        ResNet(depth=18)(torch.zeros(3, 32, 32))
