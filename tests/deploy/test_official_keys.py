import pytest
import torch

from crossvis.backbones import DLA, FPN, ResNet
from crossvis.deploy.official_keys import map_official_backbone_key
from crossvis.errors import CrossVISError


def _crossvis_modules(which: str) -> dict[str, torch.nn.Module]:
    if which == "dla":
        body = DLA(norm="BN", out_features=("level3", "level4", "level5"))
        neck = FPN(body.output_shape(), in_features=("level3", "level4", "level5"), top_levels=0)
    else:
        body = ResNet(depth=int(which[1:]), norm="FrozenBN", freeze_at=2, stride_in_1x1=True,
                      out_features=("res2", "res3", "res4", "res5"))
        neck = FPN(body.output_shape(), in_features=("res3", "res4", "res5"), top_levels=2)
    return {"backbone": body, "neck": neck}


@pytest.mark.parametrize("which", ["r50", "r101", "dla"])
def test_every_official_backbone_key_maps_onto_our_state_dict(official_keys, which):
    official = official_keys(which)
    ours = {(component, k): tuple(v.shape) for component, module in _crossvis_modules(which).items()
            for k, v in module.state_dict().items()}
    mapped = {}
    for key, shape in official.items():
        target = map_official_backbone_key(key)
        if target is None:
            assert not key.startswith("backbone."), key
            continue
        assert target in ours, f"{key} -> {target}"
        assert ours[target] == shape, key
        mapped[target] = key
    # one-to-one and complete: every tensor of ours receives exactly one official tensor
    assert set(mapped) == set(ours)
    assert len(mapped) == sum(1 for k in official if k.startswith("backbone."))


def test_converted_random_dla_checkpoint_loads_strictly(official_keys):
    modules = _crossvis_modules("dla")
    converted = {"backbone": {}, "neck": {}}
    for key, shape in official_keys("dla").items():
        target = map_official_backbone_key(key)
        if target is not None:
            dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
            converted[target[0]][target[1]] = torch.ones(shape, dtype=dtype)
    for component, module in modules.items():
        module.load_state_dict(converted[component], strict=True)


@pytest.mark.parametrize("key, expected", [
    ("backbone.bottom_up.stem.conv1.weight", ("backbone", "conv1.weight")),
    ("backbone.bottom_up.stem.conv1.norm.running_var", ("backbone", "bn1.running_var")),
    ("backbone.bottom_up.res2.0.shortcut.weight", ("backbone", "layer1.0.downsample.0.weight")),
    ("backbone.bottom_up.res4.22.conv3.norm.bias", ("backbone", "layer3.22.bn3.bias")),
    ("backbone.bottom_up.res5.0.shortcut.norm.running_mean", ("backbone", "layer4.0.downsample.1.running_mean")),
    ("backbone.bottom_up.level3.tree2.root.bn.num_batches_tracked",
     ("backbone", "level3.tree2.root.bn.num_batches_tracked")),
    ("backbone.fpn_output5.bias", ("neck", "output.p5.bias")),
    ("backbone.top_block.p7.weight", ("neck", "top_block.p7.weight")),
    ("proposal_generator.fcos_head.cls_logits.weight", None),
    ("mask_head.sizes_of_interest", None),
])
def test_single_keys(key, expected):
    assert map_official_backbone_key(key) == expected


@pytest.mark.parametrize("key", ["backbone.bottom_up.res6.0.conv1.weight", "backbone.fpn_extra.weight",
                                 "backbone.bottom_up.stem.conv2.weight"])
def test_unknown_backbone_key_raises(key):
    with pytest.raises(CrossVISError, match="not a known"):
        map_official_backbone_key(key)
