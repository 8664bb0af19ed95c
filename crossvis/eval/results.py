"""YouTube-VIS results files: writing (atomically), zipping for the server, loading with checks.

A results file is a JSON list of predictions
``{"video_id": int, "category_id": int, "score": float, "segmentations": [RLE or null per frame]}``
where each RLE is compressed: ``{"size": [h, w], "counts": str}`` at the video's original size.
Encoding and validation live in :mod:`crossvis.formats` (re-exported here).
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from crossvis.atomic import atomic_write, atomic_write_text
from crossvis.errors import CrossVISError
from crossvis.formats import REQUIRED_RESULT_KEYS, encode_mask, read_json
from crossvis.formats import validate_results as _validate

__all__ = ["encode_mask", "write_results", "write_submission_zip", "load_results", "validate_results",
           "REQUIRED_RESULT_KEYS"]


def write_results(results: list[dict], path: str | os.PathLike) -> None:
    """Write ``results`` as JSON all-or-nothing (:func:`crossvis.atomic.atomic_write_text`)."""
    atomic_write_text(path, json.dumps(results, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_submission_zip(results_json_path: str | os.PathLike, zip_path: str | os.PathLike) -> None:
    """Zip a results file for the YouTube-VIS server: one member named exactly ``results.json`` at the root."""
    results_json_path = os.fspath(results_json_path)
    if not os.path.isfile(results_json_path):
        raise CrossVISError(f"results file {results_json_path} does not exist; write it before zipping")

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(results_json_path, arcname="results.json")

    atomic_write(zip_path, write, "wb")


def load_results(path: str | os.PathLike) -> list[dict]:
    """Read and validate a results file (see :func:`validate_results`)."""
    path = os.fspath(path)
    results = read_json(path, "results file")
    validate_results(results, f"results file {path}")
    return results


def validate_results(results: Any, source: str = "results", *, allow_empty: bool = False) -> None:
    """Check a results list without ground truth (structure, finite scores, every mask's RLE).

    The checks and the choice between error and warning are those of
    :func:`crossvis.formats.validate_results` (frame counts need the ground truth and are checked
    by the evaluator).

    Raises:
        CrossVISError: naming the first offending prediction (index, frame) and what to do.
    """
    _validate(results, source, allow_empty=allow_empty)
