"""``build_model``: a model from the ``model`` section of a recipe."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

from torch import nn

from crossvis.errors import CrossVISError

__all__ = ["build_model", "forwards_keywords"]

#: Sub-component nodes of a model node and the registry kind each is built from.
_COMPONENT_KINDS = {"backbone": "backbone", "neck": "neck", "head": "head", "mask_branch": "head",
                    "embedding_loss": "loss", "fcos_loss": "loss"}
_WIRING_KEYS = ("num_classes", "num_identities")
#: Keys of a model node read by other parts (the trainer's initial weights and its opt-in to random
#: frozen layers, see crossvis.checkpoints.conventions), not by the model.
_ENGINE_KEYS = ("weights", "allow_random_frozen")


def build_model(recipe: Union[Mapping[str, Any], str, os.PathLike], num_classes: Optional[int] = None,
                num_identities: Optional[int] = None) -> nn.Module:
    """Build the model described by ``recipe["model"]``.

    The node is ``{type: condinst | crossvis | ..., backbone: node, neck: node, head: node,
    [mask_branch: node], [embedding_loss: node], [fcos_loss: node], **model kwargs}`` (the loss
    nodes are registry kind ``loss``). The backbone is built first,
    the neck gets ``input_shape`` from ``backbone.output_shape()``, the head and mask branch get
    the neck's, and ``num_classes`` / ``num_identities`` are injected into every component that
    accepts them.

    Args:
        recipe: a loaded recipe (mapping) or a path to a recipe file.
        num_classes: number of categories; default ``recipe["model"]["num_classes"]``, else the
            length of the declared ``recipe["data"]["categories"]`` (the dataset bases declare them).
        num_identities: number of identity tracks (CrossVIS proxies); default
            ``recipe["model"]["num_identities"]``.

    Raises:
        CrossVISError: on a missing section, an unknown component or argument, or missing wiring.
    """
    from crossvis.recipes import build, load_recipe

    if isinstance(recipe, (str, os.PathLike)):
        recipe = load_recipe(recipe)
    if not isinstance(recipe, Mapping) or not isinstance(recipe.get("model"), Mapping):
        raise CrossVISError("the recipe has no 'model' section; add model: {type: crossvis, backbone: ..., "
                            "neck: ..., head: ...} (see examples/recipes)")
    node = recipe["model"]
    for key in ("type", "backbone", "neck", "head"):
        if key not in node:
            raise CrossVISError(f"{_where(node, None)}: the model node needs a {key!r} entry "
                                f"(see examples/recipes/_base_/models)")
    wiring = {"num_classes": num_classes if num_classes is not None else node.get("num_classes"),
              "num_identities": num_identities if num_identities is not None else node.get("num_identities")}
    if wiring["num_classes"] is None:
        wiring["num_classes"] = _declared_num_classes(recipe)
    if wiring["num_classes"] is None:
        raise CrossVISError(f"{_where(node, None)}: the number of classes is unknown; it is taken from "
                            f"the training data (data.train) or the declared data.categories, or set "
                            f"model.num_classes in the recipe")
    inject = {k: v for k, v in wiring.items() if v is not None}

    backbone = build("backbone", node["backbone"], where=_path(node, "backbone"))
    neck = build("neck", node["neck"], where=_path(node, "neck"), input_shape=backbone.output_shape())
    shapes = neck.output_shape()
    parts: dict[str, Any] = {"backbone": backbone, "neck": neck}
    for key in ("head", "mask_branch", "embedding_loss", "fcos_loss"):
        if key in node:
            parts[key] = build(_COMPONENT_KINDS[key], node[key], where=_path(node, key),
                               input_shape=shapes, **inject)
    rest = _without(node, set(_COMPONENT_KINDS) | set(_WIRING_KEYS) | set(_ENGINE_KEYS))
    return build("model", rest, where=_path(node, None), **parts, **inject)


def _declared_num_classes(recipe: Mapping[str, Any]) -> Optional[int]:
    """The number of declared categories (``data.categories``, a list of ``{id, name}``), if any."""
    data = recipe.get("data")
    declared = data.get("categories") if isinstance(data, Mapping) else None
    return len(declared) if isinstance(declared, list) and declared else None


def _without(node: Mapping[str, Any], keys: set[str]) -> Mapping[str, Any]:
    """A copy of ``node`` without ``keys`` that keeps the recipe locations of the others."""
    from crossvis.recipes import RecipeNode

    if isinstance(node, RecipeNode):
        out = RecipeNode({k: v for k, v in node.items() if k not in keys}, path=node.path)
        out.locations = {k: v for k, v in node.locations.items() if k not in keys}
        return out
    return {k: v for k, v in node.items() if k not in keys}


def _path(node: Mapping[str, Any], key: Optional[str]) -> str:
    base = getattr(node, "path", "") or "model"
    return f"{base}.{key}" if key else base


def _where(node: Mapping[str, Any], key: Optional[str]) -> str:
    return node.where(key) if hasattr(node, "where") else _path(node, key)


_Init = TypeVar("_Init", bound=Callable[..., None])


def forwards_keywords(base_init: Callable[..., None]) -> Callable[[_Init], _Init]:
    """Decorate an ``__init__(self, ..., **kwargs)`` that passes ``**kwargs`` on to ``base_init``.

    The decorated function's ``__signature__`` lists its own parameters followed by the
    keyword-only parameters of ``base_init`` it does not define itself, instead of ``**kwargs``,
    so ``inspect.signature`` (and with it the recipe builder's argument check and its "did you
    mean" hints) sees every accepted keyword. A subclass that restates nothing::

        class CrossVIS(CondInst):
            @forwards_keywords(CondInst.__init__)
            def __init__(self, backbone, neck, head, mask_branch=None, *, crossover=True, **settings):
                super().__init__(backbone, neck, head, mask_branch, **settings)
    """
    base = inspect.signature(base_init)

    def decorate(init: _Init) -> _Init:
        own = inspect.signature(init)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in params}
        params += [p for p in base.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name not in names]
        init.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        return init

    return decorate
