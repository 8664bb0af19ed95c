"""Convert official CrossVIS / AdelaiDet CondInst checkpoints (detectron2 layout) to crossvis.

An official checkpoint is a ``.pth`` (``torch.save`` of ``{"model": state_dict, ...}`` or of a bare
state dict) or a detectron2 ``.pkl`` (pickled dict of numpy arrays). :func:`convert_checkpoint`
reads it safely, renames every tensor to the crossvis layout (the official ``state_dict()`` names, see docs/deploy.md), builds the
crossvis model of the matching architecture from :func:`official_recipe` (the packaged
``crossvis/recipes/builtin/official_crossvis_*.yaml``) and loads the renamed
tensors into it, then writes

* ``DST`` — a crossvis checkpoint ``{"model": state_dict, "recipe": dict, "converted_from": str,
  "conventions": dict}`` that loads strictly into ``build_model(recipe)`` (``conventions``: the
  input conventions the weights need, see :mod:`crossvis.checkpoints.conventions`);
* ``DST`` with suffix ``.yaml`` — that recipe: the official inference settings (BGR input, caffe
  mean/std, FrozenBN ResNet with the stride in the 1×1 conv, 169-parameter dynamic mask head,
  thresholds, the official tracker), so ``crossvis eval`` / ``crossvis demo`` reproduce the
  official inference.

Name mapping (official → crossvis):

=================================================  ===========================================
``backbone.bottom_up.*`` / ``backbone.fpn_*`` …     :func:`crossvis.deploy.official_keys.map_official_backbone_key`
``proposal_generator.fcos_head.{cls,bbox}_tower.*`` ``network.head.{cls,bbox}_tower.*``
``proposal_generator.fcos_head.reid_tower.*``       ``network.head.embed_tower.*``
``proposal_generator.fcos_head.reid_pred(_bn).*``   ``network.head.embed_pred.*`` / ``embed_norm.*``
``proposal_generator.fcos_head.{cls_logits,…}``     ``network.head.{cls_logits,bbox_pred,ctrness,scales}``
``controller.*``, ``mask_branch.*``                 ``network.controller.*``, ``network.mask_branch.*``
``cls.*`` (identity classifier)                     ``proxies.*``
``mask_head.*`` (derived buffers)                   dropped (recomputed from the recipe)
=================================================  ===========================================
"""
from __future__ import annotations

import logging
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from crossvis.deploy.official_keys import map_official_backbone_key
from crossvis.atomic import atomic_write_text
from crossvis.checkpoints import LoadReport, atomic_save, describe_load_failure, load_weights
from crossvis.errors import CrossVISError

__all__ = ["OFFICIAL_ARCHS", "OFFICIAL_RECIPES", "ConversionReport", "read_official_checkpoint", "detect_arch", "official_recipe",
           "map_official_key", "convert_state_dict", "convert_checkpoint"]

logger = logging.getLogger(__name__)

#: Architectures the official code (and AdelaiDet's DLA FPN) defines.
OFFICIAL_ARCHS = ("r50", "r101", "dla34")
#: YouTube-VIS 2019: 40 categories, 3774 annotated instance tracks in train.json (the official ``NUM_IDENTITIES`` / reid classifier size).
YTVIS19_NUM_CLASSES = 40
YTVIS19_NUM_IDENTITIES = 3774

_HEAD_PREFIX = "proposal_generator.fcos_head."
_HEAD_RENAMES = (("reid_tower.", "embed_tower."), ("reid_pred_bn.", "embed_norm."), ("reid_pred.", "embed_pred."))
_HEAD_NAMES = re.compile(r"^(cls_tower|bbox_tower|cls_logits|bbox_pred|ctrness|scales)\.")
_DROPPED_PREFIXES = ("mask_head.",)
# numpy reconstruction is all a detectron2 .pkl needs (numpy 1.x and 2.x module names)
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


@dataclass
class ConversionReport:
    """What :func:`convert_checkpoint` did.

    Attributes:
        load: loaded / skipped (shape mismatch) / missing / unexpected keys, in crossvis names
            (unexpected also lists official keys that have no crossvis counterpart).
        dropped: official keys deliberately not converted (``mask_head.*`` buffers).
        arch: ``"r50"``, ``"r101"`` or ``"dla34"``.
        renamed: official name → crossvis name for every mapped key.
    """

    load: LoadReport
    arch: str
    dropped: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The load table plus one line per dropped key and a note for every re-initialised tensor."""
        lines = [f"official checkpoint {self.load.source} (arch {self.arch}): {len(self.renamed)} tensors renamed, "
                 f"{len(self.dropped)} dropped", self.load.table()]
        lines += [f"dropped     {k} (derived from the recipe, not a weight)" for k in self.dropped]
        for key, (src_shape, dst_shape) in self.load.skipped.items():
            if key.endswith("head.cls_logits.weight") or key.endswith("head.cls_logits.bias"):
                lines.append(f"note: {key} has {src_shape[0]} classes in the checkpoint and {dst_shape[0]} in the "
                             f"model; it keeps its prior-probability initialisation (fine-tune before use)")
        new = sorted({".".join(k.split(".")[:3]) for k in self.load.missing})
        if new:
            lines.append(f"note: {len(self.load.missing)} model tensors are not in the checkpoint and keep their "
                         f"initialisation: {', '.join(new)}")
        return "\n".join(lines)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_official_checkpoint(path: Union[str, Path]) -> "OrderedDict[str, Tensor]":
    """The tensors of an official checkpoint, ``module.`` prefixes removed.

    Args:
        path: a ``.pth`` (``torch.load(weights_only=True)``) or a detectron2 ``.pkl`` (unpickled with
            only numpy array reconstruction allowed). Either holds ``{"model": state_dict, ...}`` or
            the state dict itself.

    Raises:
        CrossVISError: naming ``path`` when it is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CrossVISError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means "not a checkpoint we can read"
        raise CrossVISError(f"{path} cannot be read as a checkpoint ({describe_load_failure(exc)}); pass an official CrossVIS/"
                            f"CondInst .pth or detectron2 .pkl") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CrossVISError(f"{path} holds a {type(obj).__name__}, not a state dict or {{'model': state_dict}}")
    tensors: "OrderedDict[str, Tensor]" = OrderedDict()
    for key, value in obj.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.array(value))
        if isinstance(value, Tensor):
            tensors[str(key)[len("module."):] if str(key).startswith("module.") else str(key)] = value
    if not tensors:
        raise CrossVISError(f"{path} contains no tensors; it is not a model checkpoint")
    return tensors


def detect_arch(state: Mapping[str, Tensor], source: str = "<state dict>") -> str:
    """``"dla34"``, ``"r101"`` or ``"r50"`` from the backbone keys of an official state dict.

    Raises:
        CrossVISError: when the keys belong to none of them.
    """
    if any(k.startswith("backbone.bottom_up.level0.") for k in state):
        return "dla34"
    res4 = {int(m.group(1)) for k in state if (m := re.match(r"^backbone\.bottom_up\.res4\.(\d+)\.", k))}
    if res4:
        blocks = max(res4) + 1
        if blocks == 23:
            return "r101"
        if blocks == 6:
            return "r50"
        raise CrossVISError(f"{source}: a ResNet with {blocks} res4 blocks is neither R-50 (6) nor R-101 (23)")
    raise CrossVISError(f"{source} has no official ResNet/DLA backbone keys (backbone.bottom_up.*); it is not an "
                        f"official CrossVIS or CondInst checkpoint. Pass --arch only for those")


#: The packaged recipe (``crossvis:NAME``) of each official architecture.
OFFICIAL_RECIPES = {"r50": "crossvis:official_crossvis_R50.yaml", "r101": "crossvis:official_crossvis_R101.yaml",
                    "dla34": "crossvis:official_crossvis_DLA34.yaml"}


def official_recipe(arch: str, num_classes: int = YTVIS19_NUM_CLASSES,
                    num_identities: int = YTVIS19_NUM_IDENTITIES) -> dict[str, Any]:
    """The plain recipe of the official CrossVIS model and its inference, from the packaged
    ``crossvis/recipes/builtin/official_crossvis_<ARCH>.yaml`` (see :data:`OFFICIAL_RECIPES`; the
    values are those of configs/CrossVIS/Base-CrossVIS.yaml and tools/test_vis.py of the official code).

    Args:
        arch: one of :data:`OFFICIAL_ARCHS`.
        num_classes: categories C of the classifier (40 for YouTube-VIS 2019).
        num_identities: rows M of the identity proxies (3774 for YouTube-VIS 2019).
    """
    from crossvis.recipes import load_recipe, to_plain

    if arch not in OFFICIAL_ARCHS:
        raise CrossVISError(f"unknown architecture {arch!r}; use one of {', '.join(OFFICIAL_ARCHS)}")
    recipe = to_plain(load_recipe(OFFICIAL_RECIPES[arch]))
    recipe["model"]["num_classes"] = int(num_classes)
    recipe["model"]["num_identities"] = int(num_identities)
    return recipe


def map_official_key(key: str) -> Optional[str]:
    """The crossvis name of one official key, or None for keys crossvis does not store.

    ``None`` is returned for ``mask_head.*`` buffers and for keys that belong to no known module;
    :func:`convert_state_dict` tells the two apart.
    """
    try:
        backbone = map_official_backbone_key(key)
    except CrossVISError:
        return None
    if backbone is not None:
        component, name = backbone
        return f"network.{component}.{name}"
    if key.startswith(_HEAD_PREFIX):
        name = key[len(_HEAD_PREFIX):]
        for old, new in _HEAD_RENAMES:
            if name.startswith(old):
                return "network.head." + new + name[len(old):]
        return "network.head." + name if _HEAD_NAMES.match(name) else None
    for old, new in (("controller.", "network.controller."), ("mask_branch.", "network.mask_branch."),
                     ("cls.", "proxies.")):
        if key.startswith(old):
            return new + key[len(old):]
    return None


def convert_state_dict(state: Mapping[str, Tensor], model: nn.Module, source: str = "<state dict>",
                       arch: str = "?") -> ConversionReport:
    """Rename an official state dict and load it into a crossvis ``model`` (in place, tolerant).

    Tensors whose shape differs from the model's (e.g. an 80-class CondInst classifier in a
    40-class model) are skipped and keep the model's initialisation, as do model tensors the
    checkpoint lacks (e.g. the embedding tower of a CondInst checkpoint).
    """
    renamed: dict[str, str] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    converted: "OrderedDict[str, Tensor]" = OrderedDict()
    for key, value in state.items():
        if key.startswith(_DROPPED_PREFIXES):
            dropped.append(key)
            continue
        name = map_official_key(key)
        if name is None:
            unknown.append(key)
            continue
        renamed[key] = name
        converted[name] = value
    if not converted:
        raise CrossVISError(f"{source}: none of its {len(state)} keys is an official CrossVIS/CondInst weight "
                            f"(e.g. {next(iter(state), '?')!r}); it is not an official checkpoint")
    from crossvis.checkpoints.conventions import CONVENTIONS_KEY, model_conventions

    # the model is built from official_recipe, whose conventions are the official weights'
    load = load_weights(model, {"model": converted, CONVENTIONS_KEY: model_conventions(model)}, report=False)
    load.source = source
    load.unexpected += unknown
    return ConversionReport(load=load, arch=arch, dropped=dropped, renamed=renamed)


def convert_checkpoint(src: Union[str, Path], dst: Union[str, Path], num_classes: int = YTVIS19_NUM_CLASSES,
                       num_identities: Optional[int] = None, arch: Optional[str] = None,
                       verbose: bool = True) -> ConversionReport:
    """Convert the official checkpoint ``src`` into the crossvis checkpoint ``dst`` (+ ``dst``.yaml).

    Args:
        src: official ``.pth`` / ``.pkl`` (CrossVIS, or an AdelaiDet CondInst without embedding keys).
        dst: output ``.pth``; its recipe is written next to it with the suffix ``.yaml``.
        num_classes: classes of the converted model (40 = YouTube-VIS 2019).
        num_identities: identity proxies; default the checkpoint's ``cls`` rows, else 3774.
        arch: ``r50`` / ``r101`` / ``dla34``; default detected from the keys.
        verbose: print :meth:`ConversionReport.table`.

    Returns:
        the :class:`ConversionReport`.
    """
    from crossvis.models import build_model
    from crossvis.recipes import dump_recipe

    src, dst = Path(src), Path(dst)
    if dst.suffix == ".yaml":
        raise CrossVISError(f"{dst}: the converted checkpoint needs a .pth name (its recipe is written beside it as .yaml)")
    state = read_official_checkpoint(src)
    detected = detect_arch(state, str(src))
    if arch is not None and arch != detected:
        raise CrossVISError(f"{src} holds a {detected} backbone but --arch {arch} was given; drop --arch or fix it")
    if num_identities is None:
        proxies = state.get("cls.weight")
        num_identities = int(proxies.shape[0]) if proxies is not None else YTVIS19_NUM_IDENTITIES
    recipe = official_recipe(detected, num_classes, num_identities)
    model = build_model(recipe)
    report = convert_state_dict(state, model, str(src), detected)
    if verbose:
        logger.info(report.table(), extra={"plain": True})
    from crossvis.checkpoints.conventions import CONVENTIONS_KEY, model_conventions

    atomic_save({"model": model.state_dict(), "recipe": recipe, "converted_from": str(src),
                 CONVENTIONS_KEY: model_conventions(model)}, dst)
    header = (f"# crossvis recipe for {dst.name}, converted from {src.name} (official CrossVIS {detected}).\n"
              f"# Official inference: BGR caffe input, 360x640 test size, thresholds and tracker of test_vis.py.\n")
    atomic_write_text(dst.with_suffix(".yaml"), header + dump_recipe(recipe))
    return report
