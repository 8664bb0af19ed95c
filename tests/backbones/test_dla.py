import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossvis.backbones import DLA, dla34
from crossvis.errors import CrossVISError

ALL_LEVELS = tuple(f"level{i}" for i in range(6))
BODY = "backbone.bottom_up."


def test_parameter_count_matches_official():
    assert sum(p.numel() for p in dla34().parameters()) == 15_270_832


def test_state_dict_names_and_shapes_equal_the_official_dla34(official_keys):
    official = {k[len(BODY):]: shape for k, shape in official_keys("dla").items() if k.startswith(BODY)}
    ours = {k: tuple(v.shape) for k, v in dla34(out_features=ALL_LEVELS).state_dict().items()}
    assert ours == official


def _randomise_batch_norms(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(generator=g)
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def _bn(m, x):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _block(b, x, residual, stride):
    """ucbdrive BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + residual)."""
    y = F.relu(_bn(b.bn1, F.conv2d(x, b.conv1.weight, stride=stride, padding=1)))
    return F.relu(_bn(b.bn2, F.conv2d(y, b.conv2.weight, padding=1)) + residual)


def _root(r, children):
    return F.relu(_bn(r.bn, F.conv2d(torch.cat(children, 1), r.conv.weight)))


def _project(p, x):
    return _bn(p[1], F.conv2d(x, p[0].weight))


def _depth1_tree(t, x, children, stride=2):
    """Two blocks, root over [x2, x1, *children]; the shortcut is project(maxpool(x))."""
    bottom = F.max_pool2d(x, stride, stride) if stride > 1 else x
    residual = _project(t.project, bottom) if t.project is not None else bottom
    x1 = _block(t.tree1, x, residual, stride)
    x2 = _block(t.tree2, x1, x1, 1)
    return _root(t.root, [x2, x1, *children])


def test_forward_equals_the_reference_aggregation_order():
    """Hand-written DLA-34 forward (eval mode), following the ucbdrive tree recursion."""
    torch.manual_seed(0)
    model = dla34(out_features=ALL_LEVELS).eval()
    _randomise_batch_norms(model)
    x = torch.randn(1, 3, 64, 96)

    def conv_level(seq, x, stride):
        return F.relu(_bn(seq[1], F.conv2d(x, seq[0].weight, stride=stride, padding=1)))

    expected = {}
    y = F.relu(_bn(model.base_layer[1], F.conv2d(x, model.base_layer[0].weight, padding=3)))
    expected["level0"] = y = conv_level(model.level0, y, 1)
    expected["level1"] = y = conv_level(model.level1, y, 2)
    expected["level2"] = y = _depth1_tree(model.level2, y, [])
    for name in ("level3", "level4"):  # depth 2, level root: bottom and tree1's output feed tree2's root
        level = getattr(model, name)
        bottom = F.max_pool2d(y, 2, 2)
        x1 = _depth1_tree(level.tree1, y, [])
        expected[name] = y = _depth1_tree(level.tree2, x1, [bottom, x1], stride=1)
    expected["level5"] = _depth1_tree(model.level5, y, [F.max_pool2d(y, 2, 2)])

    with torch.no_grad():
        got = model(x)
    assert list(got) == list(ALL_LEVELS)
    for name in ALL_LEVELS:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)


def test_only_the_dead_projections_get_no_gradient():
    """level3/level4 ``project`` exist only for checkpoint compatibility; everything else trains."""
    torch.manual_seed(0)
    model = dla34(out_features=("level5",)).train()
    model(torch.randn(2, 3, 32, 32))["level5"].square().mean().backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert no_grad == frozen
    assert {n.rsplit(".", 2)[0] for n in frozen} == {"level3.project", "level4.project"}


def test_output_shape_strides_and_channels():
    shapes = dla34(out_features=ALL_LEVELS).output_shape()
    assert [(s.channels, s.stride) for s in shapes.values()] == [
        (16, 1), (32, 2), (64, 4), (128, 8), (256, 16), (512, 32)]


def test_only_needed_levels_are_built():
    model = dla34(out_features=("level2",))
    assert not any(hasattr(model, f"level{i}") for i in (3, 4, 5))
    assert model(torch.randn(1, 3, 33, 17))["level2"].shape == (1, 64, 9, 5)


@pytest.mark.parametrize("norm", ["FrozenBN", "GN"])
def test_other_norms(norm):
    model = dla34(norm=norm, out_features=("level3",))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32))["level3"].shape == (1, 128, 4, 4)


def test_stem_stride_two_halves_only_the_first_two_layers():
    """stem_stride=2 keeps every parameter's shape and the strides from level1 on; the base layer
    and level0 run at half resolution, and level1 then does not stride."""
    torch.manual_seed(0)
    ref, fast = DLA(out_features=ALL_LEVELS), DLA(out_features=ALL_LEVELS, stem_stride=2)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}
    assert [s.stride for s in fast.output_shape().values()] == [2, 2, 4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 96)
    shapes = {k: tuple(v.shape) for k, v in fast.eval()(x).items()}
    assert shapes["level0"] == (1, 16, 32, 48) and shapes["level1"] == (1, 32, 32, 48)
    assert shapes["level5"] == tuple(ref.eval()(x)["level5"].shape) == (1, 512, 2, 3)
    assert fast.base_layer[0].stride == (2, 2) and fast.level1[0].stride == (1, 1)
    # with equal weights, level0 of the strided stem is the reference base layer + level0 computed
    # on the stride-2 grid of the 7x7 convolution: the stem equals a strided reference stem
    fast.load_state_dict(ref.state_dict())
    stem = F.conv2d(x, ref.base_layer[0].weight, stride=2, padding=3)
    expected = ref.level0(ref.base_layer[2](ref.base_layer[1](stem)))
    assert torch.allclose(fast(x)["level0"], expected, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"norm": "LN"}, {"out_features": ("level6",)}, {"levels": (1, 1, 1)}, {"channels": (0,) * 6},
    {"stem_stride": 4}])
def test_bad_arguments_raise_a_clear_error(kwargs):
    with pytest.raises(CrossVISError, match="DLA"):
        DLA(**kwargs)
