"""Building the training dataset from the recipe's ``data.train`` node."""
from __future__ import annotations

from typing import Any, Mapping

from crossvis.structures import CrossVISError

__all__ = ["build_train_dataset", "DEFAULT_TRAIN_DATASET"]

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
    if "type" not in node:
        node = {"type": DEFAULT_TRAIN_DATASET, **node}
    return build("dataset", node, where="data.train", seed=seed)
