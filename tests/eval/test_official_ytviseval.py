"""Cross-check against the official mmdet 3.3.0 ``YTVISeval`` (skipped unless it is available).

Set ``CROSSVIS_REF_YTVISEVAL`` to a folder holding mmdet's ``ytvis.py`` and ``ytviseval.py``
(``mmdet/evaluation/functional/`` of the 3.3.0 wheel) or to the wheel file itself, e.g.::

    pip download --no-deps mmdet==3.3.0 -d /tmp/mmdet
    CROSSVIS_REF_YTVISEVAL=/tmp/mmdet/mmdet-3.3.0-py3-none-any.whl python -m pytest tests/eval -q

Only those two files are executed (under private module names), so mmcv/mmengine are not needed.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crossvis.eval import YTVISEvaluator, cocovid_to_ytvis
from crossvis.eval.jsonio import read_json

from ytvis_cases import make_case

FIXTURES = Path(__file__).parent / "fixtures"
_WHEEL_DIR = "mmdet/evaluation/functional/"


def load_official(location: str):
    """(YTVIS, YTVISeval) classes executed from the two reference files."""
    path = Path(location)
    if path.is_file():
        target = Path(tempfile.mkdtemp(prefix="ref-ytviseval-"))
        with zipfile.ZipFile(path) as zf:
            for name in ("ytvis.py", "ytviseval.py"):
                (target / name).write_bytes(zf.read(_WHEEL_DIR + name))
        path = target
    modules = {}
    for name in ("ytvis", "ytviseval"):
        spec = importlib.util.spec_from_file_location(f"_ref_{name}", path / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[name] = module
    if not hasattr(np, "float"):
        np.float = float  # the reference still uses the alias removed in numpy 1.24
    return modules["ytvis"].YTVIS, modules["ytviseval"].YTVISeval


def official_stats(ref, gt: dict, results: list) -> np.ndarray:
    YTVIS, YTVISeval = ref
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api = YTVIS(copy.deepcopy(gt))
        dt_api = gt_api.loadRes(copy.deepcopy(results))
        ev = YTVISeval(gt_api, dt_api, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


@pytest.fixture(scope="module")
def ref():
    location = os.environ.get("CROSSVIS_REF_YTVISEVAL")
    if not location or not os.path.exists(location):
        pytest.skip("set CROSSVIS_REF_YTVISEVAL to mmdet 3.3.0's ytvis(eval).py folder or wheel")
    return load_official(location)


def test_fixture_matches_official(ref):
    gt = cocovid_to_ytvis(read_json(FIXTURES / "ann_cocovid.json", "fixture"))
    results = read_json(FIXTURES / "results.json", "fixture")
    ev = YTVISEvaluator(gt)
    ev.evaluate(results)
    np.testing.assert_array_equal(ev.stats, official_stats(ref, gt, results))


@pytest.mark.parametrize("seed", range(40))
def test_random_cases_match_official(ref, seed):
    gt, results = make_case(seed)
    ev = YTVISEvaluator(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predictions in unknown categories
        ev.evaluate(results)
    np.testing.assert_allclose(ev.stats, official_stats(ref, gt, results), rtol=0, atol=1e-12)
