"""Names of the official CrossVIS/AdelaiDet (detectron2) backbone weights in crossvis modules.

The official model stores its backbone under ``backbone.bottom_up.`` (ResNet or DLA) and its FPN
under ``backbone.fpn_lateral{k}``, ``backbone.fpn_output{k}`` and ``backbone.top_block.p{k}``.
:func:`map_official_backbone_key` translates one such key into the name of the same tensor in
:class:`~crossvis.backbones.ResNet` / :class:`~crossvis.backbones.DLA` (component ``"backbone"``) or
:class:`~crossvis.backbones.FPN` (component ``"neck"``). Tensor shapes and values are unchanged;
detectron2 FrozenBN buffers (``weight, bias, running_mean, running_var``) are exactly those of
:class:`torchvision.ops.FrozenBatchNorm2d`. ResNet weights from these checkpoints need
``ResNet(stride_in_1x1=True)``.
"""
from __future__ import annotations

import re
from typing import Optional

from crossvis.errors import CrossVISError

__all__ = ["map_official_backbone_key", "OFFICIAL_BACKBONE_PREFIX", "OFFICIAL_BODY_PREFIX"]

#: Prefix of every backbone (body + FPN) key of the official model.
OFFICIAL_BACKBONE_PREFIX = "backbone."
#: Prefix of the ResNet/DLA body keys of the official model.
OFFICIAL_BODY_PREFIX = "backbone.bottom_up."

# detectron2 ResNet -> torchvision ResNet (the layout of crossvis.backbones.ResNet): stage res{k} is
# layer{k-1}; conv{i}.norm is bn{i}; the shortcut conv and its norm are downsample.0 and downsample.1.
_STAGE = r"^res(?P<stage>[2-5])\.(?P<block>\d+)\."
_RESNET_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r) for p, r in (
        (r"^stem\.conv1\.weight$", "conv1.weight"),
        (r"^stem\.conv1\.norm\.(?P<t>\w+)$", r"bn1.\g<t>"),
        (_STAGE + r"conv(?P<i>[1-3])\.weight$", r"layer{stage}.\g<block>.conv\g<i>.weight"),
        (_STAGE + r"conv(?P<i>[1-3])\.norm\.(?P<t>\w+)$", r"layer{stage}.\g<block>.bn\g<i>.\g<t>"),
        (_STAGE + r"shortcut\.weight$", r"layer{stage}.\g<block>.downsample.0.weight"),
        (_STAGE + r"shortcut\.norm\.(?P<t>\w+)$", r"layer{stage}.\g<block>.downsample.1.\g<t>"),
    ))
# AdelaiDet/ucbdrive DLA names are crossvis.backbones.DLA names
_DLA_PATTERN = re.compile(r"^(base_layer|level[0-5])\.")
# detectron2 FPN + FCOS top block -> crossvis.backbones.FPN
_FPN_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r) for p, r in (
        (r"^fpn_lateral(\d+)\.(weight|bias)$", r"lateral.p\1.\2"),
        (r"^fpn_output(\d+)\.(weight|bias)$", r"output.p\1.\2"),
        (r"^top_block\.(p\d+)\.(weight|bias)$", r"top_block.\1.\2"),
    ))


def map_official_backbone_key(key: str) -> Optional[tuple[str, str]]:
    """Map one official state-dict key to ``(component, name)`` in crossvis.

    Args:
        key: a key of the official model's state dict, without a ``module.`` prefix.

    Returns:
        ``("backbone", name)`` for a ResNet/DLA body key, ``("neck", name)`` for an FPN key, or
        ``None`` when ``key`` does not belong to the backbone (heads, mask branch, …).

    Raises:
        CrossVISError: ``key`` starts with ``backbone.`` but matches no known layout.

    Examples:
        >>> map_official_backbone_key("backbone.bottom_up.res3.0.conv1.weight")
        ('backbone', 'layer2.0.conv1.weight')
        >>> map_official_backbone_key("backbone.bottom_up.stem.conv1.norm.running_mean")
        ('backbone', 'bn1.running_mean')
        >>> map_official_backbone_key("backbone.bottom_up.level2.root.conv.weight")
        ('backbone', 'level2.root.conv.weight')
        >>> map_official_backbone_key("backbone.fpn_lateral3.weight")
        ('neck', 'lateral.p3.weight')
        >>> map_official_backbone_key("backbone.top_block.p6.bias")
        ('neck', 'top_block.p6.bias')
        >>> map_official_backbone_key("controller.weight") is None
        True
    """
    if not key.startswith(OFFICIAL_BACKBONE_PREFIX):
        return None
    if key.startswith(OFFICIAL_BODY_PREFIX):
        name = key[len(OFFICIAL_BODY_PREFIX):]
        if _DLA_PATTERN.match(name):
            return "backbone", name
        for pattern, template in _RESNET_RULES:
            match = pattern.match(name)
            if match:
                if "stage" in pattern.groupindex:
                    template = template.replace("{stage}", str(int(match.group("stage")) - 1))
                return "backbone", match.expand(template)
    else:
        name = key[len(OFFICIAL_BACKBONE_PREFIX):]
        for pattern, template in _FPN_RULES:
            if pattern.match(name):
                return "neck", pattern.sub(template, name)
    raise CrossVISError(f"checkpoint key {key!r} is not a known ResNet, DLA or FPN weight of the official "
                        f"CrossVIS/AdelaiDet layout; drop it or convert it by hand")
