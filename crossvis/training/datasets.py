"""Building the training dataset from the recipe's ``data.train`` node."""
from __future__ import annotations

from typing import Any, Mapping

from crossvis.errors import CrossVISError

__all__ = ["build_train_dataset", "with_built_transforms", "DEFAULT_TRAIN_DATASET"]

#: dataset type used when ``data.train`` has no ``type`` (frame pairs, what CrossVIS trains on)
DEFAULT_TRAIN_DATASET = "ytvis_pairs"


def build_train_dataset(recipe: Mapping[str, Any], seed: int) -> Any:
    """Build ``data.train`` (``{type: ..., annotations: JSON, images: DIR, ...}``).

    ``type`` defaults to :data:`DEFAULT_TRAIN_DATASET`; ``seed`` is injected when the dataset
    accepts it (it keys the per-sample augmentation randomness).
    """
    from crossvis.recipes import build

    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    node = data.get("train") if isinstance(data, Mapping) else None
    if not isinstance(node, Mapping):
        raise CrossVISError("the recipe has no data.train; set data.train.annotations (a YouTube-VIS JSON) "
                            "and data.train.images (the folder its file_names are relative to)")
    for key in ("annotations", "images"):
        if not node.get(key):
            raise CrossVISError(f"recipe key data.train.{key} is not set; pass --set data.train.{key}=PATH")
    node = with_built_transforms(node, "data.train")
    if "type" not in node:
        node = _copy_node(node, {"type": DEFAULT_TRAIN_DATASET})
    return build("dataset", node, where="data.train", seed=seed)


def with_built_transforms(node: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``node`` with each ``{type: name, ...}`` of its ``transforms`` list built through the registry.

    Each transform's kwargs are checked against its signature, so a typo names the recipe
    file:line and a close name ("did you mean").
    """
    from crossvis.recipes import build

    transforms = node.get("transforms")
    if not isinstance(transforms, list):
        return node
    built = [build("transform", t, where=f"{where}.transforms[{i}]") if isinstance(t, Mapping) else t
             for i, t in enumerate(transforms)]
    return _copy_node(node, {"transforms": built})


def _copy_node(node: Mapping[str, Any], changes: Mapping[str, Any]) -> Mapping[str, Any]:
    """A copy of ``node`` with ``changes`` applied that keeps the recipe locations of the other keys."""
    from crossvis.recipes import RecipeNode

    if isinstance(node, RecipeNode):
        out = RecipeNode({**node, **changes}, path=node.path)
        out.locations = dict(node.locations)
        return out
    return {**node, **changes}
