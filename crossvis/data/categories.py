"""Declared categories: a recipe's ``data.categories`` against the categories of an annotation file.

The dataset bases of examples/recipes declare the official category lists of YouTube-VIS 2019,
YouTube-VIS 2021 and OVIS (``data.categories: [{id, name}, ...]``, label ``i`` = the ``i``-th id in
ascending order), so the number of classes and the category names are known without the dataset
on disk. When an annotation file is read, its categories must be the declared ones:
:func:`check_declared_categories` compares ids exactly and names up to case and ``_``/space/``-``
(the files write "giant_panda", the web pages "Giant panda").
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from crossvis.errors import CrossVISError

__all__ = ["declared_categories", "check_declared_categories"]


def declared_categories(recipe: Mapping[str, Any]) -> Optional[list[dict[str, Any]]]:
    """``data.categories`` of ``recipe`` as ``{"id": int, "name": str}`` dicts sorted by id, or None.

    Raises:
        CrossVISError: when the key is set but is not a list of ``{id, name}`` mappings with
            distinct integer ids.
    """
    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    raw = data.get("categories") if isinstance(data, Mapping) else None
    if raw is None:
        return None
    hint = "it must be a list like [{id: 1, name: person}, ...] (or null to take the categories from data.train)"
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise CrossVISError(f"recipe key data.categories: {hint}")
    out = []
    for i, cat in enumerate(raw):
        if not isinstance(cat, Mapping) or isinstance(cat.get("id"), bool) or not isinstance(cat.get("id"), int):
            raise CrossVISError(f"recipe key data.categories[{i}] has no integer 'id': {hint}")
        out.append({"id": int(cat["id"]), "name": str(cat.get("name", cat["id"]))})
    out.sort(key=lambda c: c["id"])
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids):
        raise CrossVISError(f"recipe key data.categories repeats a category id; {hint}")
    return out


def _normalised(name: Any) -> str:
    return str(name).strip().lower().replace("_", " ").replace("-", " ")


def check_declared_categories(declared: Optional[Sequence[Mapping[str, Any]]],
                              actual: Optional[Sequence[Mapping[str, Any]]], source: str) -> None:
    """Raise when the annotation file ``source`` has other categories than the recipe declares.

    Args:
        declared: :func:`declared_categories` of the recipe (None: nothing declared, no check).
        actual: the file's categories (``{"id", "name"}`` dicts; None: unknown, no check).
        source: the file, for the message.

    Raises:
        CrossVISError: naming the first differing id or name and the recipe key to change.
    """
    if not declared or actual is None:
        return
    want = {int(c["id"]): str(c.get("name", c["id"])) for c in declared}
    have = {int(c["id"]): str(c.get("name", c["id"])) for c in actual}
    fix = ("set data.categories to the file's list, or to null (--set data.categories=null) to take the "
           "categories from the annotations, e.g. when training on your own data")
    if set(want) != set(have):
        only_file = sorted(set(have) - set(want))
        only_recipe = sorted(set(want) - set(have))
        detail = "; ".join(part for part in (
            f"ids only in the file: {only_file[:5]}" if only_file else "",
            f"ids only in the recipe: {only_recipe[:5]}" if only_recipe else "") if part)
        raise CrossVISError(f"{source} has {len(have)} categories but the recipe declares {len(want)} "
                            f"(data.categories) with other ids ({detail}); {fix}")
    for cid in sorted(want):
        if _normalised(want[cid]) != _normalised(have[cid]):
            raise CrossVISError(f"{source}: category id {cid} is {have[cid]!r} but the recipe declares "
                                f"{want[cid]!r} (data.categories), so the labels would mean other classes "
                                f"(another dataset or version?); {fix}")
