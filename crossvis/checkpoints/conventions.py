"""Input conventions that travel with the weights.

The same tensors mean different things under different input conventions: weights trained on BGR
images normalised with the caffe mean and std 1 (detectron2 / AdelaiDet, the official CrossVIS
checkpoints) produce nonsense features on RGB images divided by the ImageNet std, and a ResNet
trained with the stride in the 1x1 conv (MSRA layout) is another network when the stride sits in
the 3x3 conv (torchvision layout). None of this shows in the tensor shapes, so a tolerant load
would succeed silently.

Every checkpoint crossvis writes (``crossvis train``, ``crossvis convert-checkpoint``) therefore
stores ``ckpt["conventions"]`` = :func:`model_conventions` of the network that produced it, and
every load (``model.weights``, ``--checkpoint``, :class:`~crossvis.inference.Predictor`) calls
:func:`check_weight_conventions`, which refuses weights whose conventions disagree with the
target model in one message naming both sides and the recipe keys to change. A checkpoint
without recorded conventions (a raw third-party state dict) loads as before, with a one-line
note. A torchvision ImageNet classification ResNet state dict (``conv1.*``, ``layer1.*`` …,
``fc.*``) is recognised: its conventions are torchvision's (RGB, ImageNet mean/std, stride in the
3x3 conv) and :func:`adapt_torchvision_resnet` puts its tensors under the model's ResNet.

:func:`check_frozen_initialisation` is the companion check at the start of training: frozen
layers (``freeze_at > 0``, FrozenBN) that no initial weights filled would stay random forever.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Mapping, Optional

from torch import Tensor, nn

from crossvis.errors import CrossVISError

__all__ = ["CONVENTIONS_KEY", "TORCHVISION_IMAGENET", "ALLOW_RANDOM_FROZEN_KEY", "model_conventions",
           "check_weight_conventions", "adapt_torchvision_resnet", "describe_conventions", "frozen_tensor_names",
           "check_frozen_initialisation"]

logger = logging.getLogger(__name__)

#: Checkpoint key holding the conventions of the weights.
CONVENTIONS_KEY = "conventions"

#: Conventions of torchvision's ImageNet ResNets (``IMAGENET1K_V1/V2``): RGB, mean/std
#: (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) on the 0–1 scale, stride in the 3x3 conv.
TORCHVISION_IMAGENET: dict[str, Any] = {"input_format": "RGB", "pixel_mean": [123.675, 116.28, 103.53],
                                        "pixel_std": [58.395, 57.12, 57.375], "resnet_stride_in_1x1": False}

#: convention -> the recipe key that sets it.
_RECIPE_KEYS = {"input_format": "model.input_format", "pixel_mean": "model.pixel_mean",
                "pixel_std": "model.pixel_std", "resnet_stride_in_1x1": "model.backbone.stride_in_1x1"}
_TOLERANCE = 1e-3


def model_conventions(model: nn.Module) -> dict[str, Any]:
    """The input conventions of ``model`` (a DDP wrapper is looked through).

    Returns:
        ``{"input_format": "RGB" | "BGR", "pixel_mean": [3 floats], "pixel_std": [3 floats],
        "resnet_stride_in_1x1": bool}`` for what the model has: the normalisation comes from its
        image preprocessor (a module with ``input_format`` and ``pixel_mean`` / ``pixel_std``
        buffers), the stride placement from its strided bottleneck blocks (absent for models
        without a bottleneck ResNet, e.g. DLA-34 or ResNet-18).
    """
    model = getattr(model, "module", model)
    found: dict[str, Any] = {}
    for module in model.modules():
        if "input_format" not in found and isinstance(getattr(module, "input_format", None), str) \
                and isinstance(getattr(module, "pixel_mean", None), Tensor) \
                and isinstance(getattr(module, "pixel_std", None), Tensor):
            found["input_format"] = module.input_format
            found["pixel_mean"] = [round(float(v), 4) for v in module.pixel_mean.flatten()]
            found["pixel_std"] = [round(float(v), 4) for v in module.pixel_std.flatten()]
        stride_1x1 = _bottleneck_stride_in_1x1(module)
        if stride_1x1 is not None and "resnet_stride_in_1x1" not in found:
            found["resnet_stride_in_1x1"] = stride_1x1
    return found


def _bottleneck_stride_in_1x1(module: nn.Module) -> Optional[bool]:
    """For a strided bottleneck block (conv1 1x1, conv2 3x3, a downsample): where its stride sits."""
    conv1, conv2 = getattr(module, "conv1", None), getattr(module, "conv2", None)
    if not (isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d) and hasattr(module, "conv3")
            and getattr(module, "downsample", None) is not None):
        return None
    if conv1.kernel_size != (1, 1) or conv2.kernel_size != (3, 3):
        return None
    if conv1.stride == (1, 1) and conv2.stride == (1, 1):
        return None
    return conv1.stride != (1, 1)


def describe_conventions(conventions: Mapping[str, Any]) -> str:
    """``input_format BGR, pixel_mean [...], pixel_std [...], stride in the 1x1 conv``."""
    parts = []
    for key in ("input_format", "pixel_mean", "pixel_std"):
        if key in conventions:
            value = conventions[key]
            parts.append(f"{key} {value if isinstance(value, str) else _fmt(value)}")
    if "resnet_stride_in_1x1" in conventions:
        parts.append(f"ResNet stride in the {'1x1' if conventions['resnet_stride_in_1x1'] else '3x3'} conv")
    return ", ".join(parts) or "no recorded conventions"


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _yaml_value(key: str, value: Any) -> str:
    if key == "resnet_stride_in_1x1":
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return _fmt(value)


def _differs(key: str, a: Any, b: Any) -> bool:
    if key in ("pixel_mean", "pixel_std"):
        a, b = list(a), list(b)
        return len(a) != len(b) or any(abs(float(x) - float(y)) > _TOLERANCE for x, y in zip(a, b))
    return a != b


def check_weight_conventions(model: nn.Module, ckpt: Mapping[str, Any], source: str,
                             state: Optional[Mapping[str, Tensor]] = None) -> None:
    """Refuse to load ``ckpt`` into ``model`` when their input conventions disagree.

    Args:
        model: the target model.
        ckpt: the loaded checkpoint (a crossvis checkpoint dict or a bare state dict).
        source: its path, for messages.
        state: its extracted tensors, when already at hand (used to recognise a torchvision
            ImageNet ResNet state dict); default the tensors of ``ckpt`` itself.

    Raises:
        CrossVISError: naming ``source``, both sides' conventions and the recipe keys to change.

    A checkpoint without ``ckpt["conventions"]`` that is not a torchvision ImageNet ResNet is
    loaded unchecked, with a one-line note (logged at INFO).
    """
    recorded = ckpt.get(CONVENTIONS_KEY) if isinstance(ckpt.get(CONVENTIONS_KEY), Mapping) else None
    if recorded is None and _is_torchvision_resnet(state if state is not None else ckpt):
        recorded = TORCHVISION_IMAGENET
    target = model_conventions(model)
    if recorded is None:
        logger.info("note: %s records no input conventions (a raw state dict or an older checkpoint); they were "
                    "not checked against the model's (%s)", source, describe_conventions(target))
        return
    differing = [k for k in _RECIPE_KEYS if k in recorded and k in target and _differs(k, recorded[k], target[k])]
    if not differing:
        return
    changes = " ".join(f"{_RECIPE_KEYS[k]}={_yaml_value(k, recorded[k])}".replace(" ", "") for k in differing)
    raise CrossVISError(
        f"the weights {source} expect {describe_conventions({k: recorded[k] for k in differing})}, but the "
        f"recipe's model uses {describe_conventions({k: target[k] for k in differing})}; loading them would "
        f"give meaningless features. Set {', '.join(_RECIPE_KEYS[k] for k in differing)} to the weights' values "
        f"(--set {changes}) or use weights trained with the recipe's conventions")


def _is_torchvision_resnet(state: Mapping[str, Any]) -> bool:
    keys = set(state)
    return {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "fc.weight"} <= keys


def adapt_torchvision_resnet(model: nn.Module, state: "OrderedDict[str, Tensor]") -> "OrderedDict[str, Tensor]":
    """A torchvision ImageNet ResNet state dict renamed onto ``model``'s ResNet body.

    ``conv1.*``, ``bn1.*``, ``layer{1..4}.*`` get the dotted path of the model's module that has
    torchvision ResNet names (e.g. ``network.backbone.``); the classifier ``fc.*`` and
    ``num_batches_tracked`` counters are dropped. Any other state dict is returned unchanged.
    """
    if not _is_torchvision_resnet(state):
        return state
    model = getattr(model, "module", model)
    own = model.state_dict()
    prefix = next((k[: -len("conv1.weight")] for k in own
                   if k.endswith("conv1.weight") and k[: -len("conv1.weight")] + "layer1.0.conv1.weight" in own), None)
    if prefix is None:
        return state
    return OrderedDict((prefix + k, v) for k, v in state.items()
                       if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))


#: Recipe key that allows training a model whose frozen layers keep their random initialisation.
ALLOW_RANDOM_FROZEN_KEY = "model.allow_random_frozen"


def frozen_tensor_names(model: nn.Module) -> list[str]:
    """State-dict names of the frozen layers training never updates.

    A frozen layer is recognised by its :class:`torchvision.ops.FrozenBatchNorm2d` (the ResNet's
    ``freeze_at`` turns the norms of its frozen parts into FrozenBN; ``norm: FrozenBN`` freezes
    every norm): the FrozenBN buffers, and the ``requires_grad=False`` parameters of the modules
    that hold a FrozenBN (the frozen convolutions beside it). Parameters switched off for another
    reason (e.g. DLA-34's unused ``project`` layers, beside a trainable BatchNorm) do not count.
    """
    from torchvision.ops import FrozenBatchNorm2d

    model = getattr(model, "module", model)
    names: list[str] = []
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        if isinstance(module, FrozenBatchNorm2d):
            names += [_join(prefix, b) for b, _ in module.named_buffers(recurse=False)]
        elif any(isinstance(child, FrozenBatchNorm2d) for _, child in children):
            for child_name, child in children:
                if not isinstance(child, FrozenBatchNorm2d):
                    names += [_join(_join(prefix, child_name), n) for n, p in child.named_parameters(recurse=False)
                              if not p.requires_grad]
    return names


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_frozen_initialisation(model: nn.Module, loaded: Optional[Any], allow: bool = False) -> None:
    """Refuse to train frozen layers that keep their random initialisation.

    Args:
        model: the model about to be trained.
        loaded: the :class:`~crossvis.checkpoints.LoadReport` of ``model.weights``, or None when the
            recipe gives no initial weights.
        allow: the recipe's explicit opt-in (:data:`ALLOW_RANDOM_FROZEN_KEY`).

    Raises:
        CrossVISError: when some frozen tensor (``freeze_at > 0``, FrozenBN) was not loaded from
            the initial weights, saying what to do.
    """
    frozen = frozen_tensor_names(model)
    if allow or not frozen:
        return
    got = set(getattr(loaded, "loaded", ()) or ())
    left = [n for n in frozen if n not in got]
    if not left:
        return
    if loaded is None:
        what = "the recipe gives no initial weights (model.weights)"
    else:
        what = f"{len(left)} of them are not in {loaded.source} (e.g. {left[0]})"
    raise CrossVISError(
        f"the model has {len(frozen)} frozen tensors (backbone freeze_at > 0 or norm FrozenBN) and {what}, "
        f"so they would stay random for the whole training. Set model.weights to pretrained weights "
        f"(docs/training.md, 'Initialisation'), or train everything with model.backbone.freeze_at: 0 and a "
        f"trainable norm (model.backbone.norm: BN or GN), or set {ALLOW_RANDOM_FROZEN_KEY}: true to train "
        f"with random frozen layers anyway")
