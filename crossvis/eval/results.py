"""YouTube-VIS results files: encoding masks, writing, zipping for the server, loading with checks.

A results file is a JSON list of predictions
``{"video_id": int, "category_id": int, "score": float, "segmentations": [RLE or null per frame]}``
where each RLE is compressed: ``{"size": [h, w], "counts": str}`` at the video's original size.
"""
from __future__ import annotations

import json
import numbers
import os
import tempfile
import zipfile
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from crossvis.eval.jsonio import read_json
from crossvis.errors import CrossVISError

__all__ = ["encode_mask", "write_results", "write_submission_zip", "load_results", "validate_results",
           "REQUIRED_RESULT_KEYS"]

REQUIRED_RESULT_KEYS = ("video_id", "category_id", "score", "segmentations")


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed RLE of one binary mask.

    Args:
        mask: bool or 0/1 integer array [H, W] (a torch tensor is accepted too).

    Returns:
        ``{"size": [H, W], "counts": str}`` (COCO column-major compressed RLE, counts as ASCII text).
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise CrossVISError(f"encode_mask expects one H×W mask, got shape {tuple(mask.shape)}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def write_results(results: list[dict], path: str | os.PathLike) -> None:
    """Write ``results`` as JSON atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(results, fh, default=_json_default)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_submission_zip(results_json_path: str | os.PathLike, zip_path: str | os.PathLike) -> None:
    """Zip a results file for the YouTube-VIS server: one member named exactly ``results.json`` at the root."""
    results_json_path, zip_path = os.fspath(results_json_path), os.fspath(zip_path)
    if not os.path.isfile(results_json_path):
        raise CrossVISError(f"results file {results_json_path} does not exist; write it before zipping")
    folder = os.path.dirname(os.path.abspath(zip_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".submission-", suffix=".zip.tmp", dir=folder)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(results_json_path, arcname="results.json")
        os.replace(tmp, zip_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_results(path: str | os.PathLike) -> list[dict]:
    """Read and validate a results file (see :func:`validate_results`)."""
    path = os.fspath(path)
    results = read_json(path, "results file")
    validate_results(results, f"results file {path}")
    return results


def validate_results(results: Any, source: str = "results", check_masks: bool = True,
                     allow_empty: bool = False) -> None:
    """Check the structure of a results list.

    Checks that it is a non-empty list of objects with ``video_id``, ``category_id``, a numeric
    ``score`` and a ``segmentations`` list; with ``check_masks``, also that every present entry is a
    compressed RLE dict (the evaluator skips that pass and checks masks only when pycocotools fails).
    An empty list is an error (the official evaluation crashes on it) unless ``allow_empty``.

    Raises:
        CrossVISError: naming the first offending prediction (index) and what to do.
    """
    if not isinstance(results, list):
        raise CrossVISError(f"{source} must be a JSON list of predictions, got {type(results).__name__}")
    if not results and not allow_empty:
        raise CrossVISError(f"{source} has no predictions; the official evaluation cannot score an empty list "
                            "(pass allow_empty=True to score it as all misses)")
    for n, res in enumerate(results):
        if not isinstance(res, dict):
            raise CrossVISError(f"{source}: prediction #{n} must be a JSON object, got {type(res).__name__}")
        missing = [k for k in REQUIRED_RESULT_KEYS if k not in res]
        if missing:
            raise CrossVISError(f"{source}: prediction #{n} has no {', '.join(map(repr, missing))} "
                                f"(each needs {', '.join(REQUIRED_RESULT_KEYS)})")
        if not isinstance(res["score"], numbers.Real) or isinstance(res["score"], bool):
            raise CrossVISError(f"{source}: prediction #{n} has a non-numeric score {res['score']!r}")
        if not isinstance(res["segmentations"], list):
            raise CrossVISError(f"{source}: prediction #{n}: 'segmentations' must be a list (RLE or null per frame)")
        for f, seg in enumerate(res["segmentations"] if check_masks else ()):
            if seg:
                check_result_rle(seg, source, n, f)


def check_result_rle(seg: Any, source: str, n: int, frame: int) -> None:
    """Raise a clear error unless ``seg`` is a compressed RLE dict."""
    where = f"{source}: prediction #{n} frame {frame}"
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise CrossVISError(f"{where}: a mask must be compressed RLE {{'size': [h, w], 'counts': str}} or null; "
                            "encode it with pycocotools.mask.encode or crossvis.eval.encode_mask")
    if not isinstance(seg["counts"], (str, bytes)):
        raise CrossVISError(f"{where}: uncompressed RLE (counts is a {type(seg['counts']).__name__}); the official "
                            "evaluation needs compressed RLE: encode with pycocotools.mask.encode or "
                            "crossvis.eval.encode_mask and store counts as a string")
    size = seg["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and s >= 0 for s in size)):
        raise CrossVISError(f"{where}: 'size' must be [height, width], got {size!r}")
