"""Results files: mask encoding, atomic writing, the server zip, validated loading."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from crossvis.eval import encode_mask, load_results, write_results, write_submission_zip
from crossvis.errors import CrossVISError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode on numpy 2


@settings(max_examples=30, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_encode_mask_round_trips_through_pycocotools(mask):
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
    assert json.loads(json.dumps(rle)) == rle
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    assert mask_utils.area(rle) == mask.sum()


def test_encode_mask_rejects_stacks():
    with pytest.raises(CrossVISError, match="one H×W mask"):
        encode_mask(np.zeros((2, 3, 3), bool))


def _results():
    m = np.zeros((4, 5), bool)
    m[1:3, 2:4] = True
    return [{"video_id": 1, "category_id": 2, "score": np.float32(0.5), "segmentations": [encode_mask(m), None]}]


def test_write_and_load_results(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_results(_results(), path)
    loaded = load_results(path)
    assert loaded[0]["score"] == 0.5 and loaded[0]["segmentations"][1] is None
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_write_results_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_results(_results(), path)
    before = path.read_text()
    with pytest.raises(TypeError):
        write_results([{"video_id": object()}], path)
    assert path.read_text() == before and len(list(tmp_path.iterdir())) == 1


def test_submission_zip_has_results_json_at_root(tmp_path):
    path = tmp_path / "out" / "my_results.json"
    write_results(_results(), path)
    zpath = tmp_path / "submission.zip"
    write_submission_zip(path, zpath)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["results.json"]
        assert json.loads(zf.read("results.json")) == json.loads(path.read_text())


def test_submission_zip_needs_results_file(tmp_path):
    with pytest.raises(CrossVISError, match="does not exist"):
        write_submission_zip(tmp_path / "missing.json", tmp_path / "x.zip")


@pytest.mark.parametrize("content, expected", [
    ('{"a": 1}', "must be a JSON list"),
    ("[]", "has no predictions"),
    ('[{"video_id": 1, "category_id": 1, "score": 1, "segmentations": [{"size": [2, 2], "counts": [0, 4]}]}]',
     r"prediction #0 frame 0 \(video_id 1\): uncompressed RLE"),
    ('[{"video_id": 1, "category_id": 1, "score": 1, "segmentations": [[[0, 0, 1, 0, 1, 1]]]}]',
     "must be compressed RLE"),
    ('[1, 2', r"r\.json:1:6: malformed JSON"),
])
def test_load_results_errors(tmp_path, content, expected):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(CrossVISError, match=expected):
        load_results(path)
