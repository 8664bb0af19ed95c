"""Fuzzing ``crossvis evaluate`` and ``crossvis dataset check`` with mutated annotation, results and frame files.

Every run must end within a time bound and either succeed or print exactly one
``crossvis: error:`` line: never a traceback, a hang or a second error line. ``dataset check`` may
also exit 1 after listing the problems it found.
"""
from __future__ import annotations

import copy
import faulthandler
import io
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from crossvis.cli import main
from crossvis.data import read_image
from crossvis.errors import CrossVISError

H, W, T = 4, 5, 3
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TIME_BOUND_S = 20


def _rle(box) -> dict:
    mask = np.zeros((H, W), np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 1
    enc = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": enc["counts"].decode("ascii")}


def _list_rle(box) -> dict:
    mask = np.zeros((H, W), np.uint8)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = 1
    flat = mask.T.reshape(-1)
    runs, current, n = [], 0, 0
    for v in flat:
        if v == current:
            n += 1
        else:
            runs.append(n)
            current, n = v, 1
    return {"size": [H, W], "counts": runs + [n]}


GROUND_TRUTH = {
    "videos": [{"id": 1, "height": H, "width": W, "length": T, "file_names": [f"a/{i}.png" for i in range(T)]},
               {"id": 2, "height": H, "width": W, "length": T, "file_names": [f"b/{i}.png" for i in range(T)]}],
    "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
    "annotations": [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [4, 4, None],
         "segmentations": [_rle((0, 0, 2, 2)), _list_rle((0, 0, 2, 2)), None], "bboxes": [[0, 0, 2, 2]] * 2 + [None]},
        {"id": 2, "video_id": 2, "category_id": 2, "iscrowd": 0, "areas": [6, None, 6],
         "segmentations": [[[0, 0, 3, 0, 3, 2, 0, 2]], None, _rle((1, 1, 4, 5))], "bboxes": None},
    ],
}
RESULTS = [
    {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [_rle((0, 0, 2, 2)), _rle((0, 0, 2, 3)), None]},
    {"video_id": 2, "category_id": 2, "score": 0.4, "segmentations": [None, _rle((1, 1, 3, 3)), _rle((1, 1, 4, 5))]},
    {"video_id": 2, "category_id": 1, "score": 0.2, "segmentations": [_rle((0, 0, 4, 5)), None, None]},
]
KEYS = ["id", "video_id", "category_id", "score", "segmentations", "size", "counts", "height", "width",
        "length", "file_names", "annotations", "videos", "categories", "areas", "iscrowd", "images", "occlusion"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.sampled_from([0, 1, 2, 3, 4, 5, 20])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text("0123456789:;<=>?@PQRSTUVWXYZabcdefghijklmnopo~\n",
                                                               max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=8)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def mutate(data, draw):
    """1-3 random edits anywhere in the tree: replace, delete, truncate or alter a string, shorten a list."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key, value = path[-1], parent[path[-1]]
        action = draw(st.sampled_from(["replace", "delete", "truncate", "alter", "shorten"]))
        if action == "delete":
            del parent[key]
        elif action == "truncate" and isinstance(value, str):
            parent[key] = value[:draw(st.integers(0, max(0, len(value) - 1)))]
        elif action == "alter" and isinstance(value, str) and value:
            i = draw(st.integers(0, len(value) - 1))
            parent[key] = value[:i] + chr(draw(st.integers(40, 126))) + value[i + 1:]
        elif action == "shorten" and isinstance(value, list) and value:
            parent[key] = value[:draw(st.integers(0, len(value) - 1))] + draw(st.lists(json_values, max_size=2))
        else:
            parent[key] = draw(json_values)
    return data


def serialise(data, draw) -> bytes:
    text = json.dumps(data, allow_nan=True).encode()
    if draw(st.integers(0, 9)) == 0:  # now and then, a damaged file
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.binary(max_size=3))
    return text


@pytest.fixture(autouse=True)
def _hard_time_bound():
    """A hang inside C code cannot be interrupted from Python: dump the stacks and exit the process."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def run_cli(argv, capsys, allowed=(0, 2)):
    capsys.readouterr()
    start = time.perf_counter()
    code = main(argv)  # any exception but CrossVISError propagates and fails the test (a traceback)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert elapsed < TIME_BOUND_S, f"{argv} took {elapsed:.1f} s"
    assert code in allowed, (code, err)
    lines = err.splitlines()
    assert "Traceback" not in err
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("crossvis: error: "), err
    else:
        assert all(line.startswith(("crossvis: warning: ", "crossvis: note: ")) for line in lines), err
    return code, out


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_evaluate_with_fuzzed_results(tmp_path, capsys, data):
    (tmp_path / "gt.json").write_text(json.dumps(GROUND_TRUTH))
    (tmp_path / "results.json").write_bytes(serialise(mutate(RESULTS, data.draw), data.draw))
    code, out = run_cli(["evaluate", "--annotations", str(tmp_path / "gt.json"),
                         "--results", str(tmp_path / "results.json"), "--json"], capsys)
    if code == 0:
        assert set(json.loads(out)) >= {"AP", "AR10"}


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_evaluate_and_check_with_fuzzed_ground_truth(tmp_path, capsys, data):
    gt = GROUND_TRUTH
    if data.draw(st.booleans()):  # the CocoVID layout of the same ground truth
        gt = _as_cocovid(gt)
    (tmp_path / "gt.json").write_bytes(serialise(mutate(gt, data.draw), data.draw))
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    run_cli(["evaluate", "--annotations", str(tmp_path / "gt.json"), "--results", str(tmp_path / "results.json")],
            capsys)
    run_cli(["dataset", "check", str(tmp_path / "gt.json")], capsys, allowed=(0, 1, 2))


def _as_cocovid(gt):
    images, anns = [], []
    for v in gt["videos"]:
        images += [{"id": v["id"] * 10 + f, "video_id": v["id"], "frame_id": f, "file_name": name}
                   for f, name in enumerate(v["file_names"])]
    for t in gt["annotations"]:
        for f, seg in enumerate(t["segmentations"]):
            if seg is not None:
                anns.append({"id": len(anns) + 1, "image_id": t["video_id"] * 10 + f, "instance_id": t["id"],
                             "category_id": t["category_id"], "segmentation": seg, "area": t["areas"][f]})
    return {"videos": [{k: v[k] for k in ("id", "height", "width")} for v in gt["videos"]], "images": images,
            "annotations": anns, "categories": gt["categories"]}


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LA", "YCbCr"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tiff", "BMP": ".bmp", "GIF": ".gif"}


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_frame_files(tmp_path, capsys, data):
    """Random modes, formats, EXIF orientations and damaged bytes: an RGB uint8 frame or one clear error."""
    mode, fmt = data.draw(st.sampled_from(MODES)), data.draw(st.sampled_from(list(FORMATS)))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    pixels = np.random.default_rng(data.draw(st.integers(0, 2 ** 16))).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    try:
        image = image.convert(mode)
        buffer = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = data.draw(st.integers(0, 9))
        image.save(buffer, format=fmt, exif=exif)
    except (OSError, ValueError, KeyError, TypeError):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        fmt = "PNG"
    raw = buffer.getvalue()
    if data.draw(st.integers(0, 3)) == 0:
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=8)) + raw[cut + 8:]
    root = tmp_path / "images"
    (root / "v").mkdir(parents=True, exist_ok=True)
    frame = root / "v" / f"0{FORMATS[fmt]}"
    frame.write_bytes(raw)
    try:
        array = read_image(frame)
    except CrossVISError as exc:
        assert str(frame) in str(exc)
    else:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.flags.c_contiguous
        size = array.shape[:2]
        ann = {"videos": [{"id": 1, "height": size[0], "width": size[1], "file_names": [f"v/{frame.name}"]}],
               "categories": [{"id": 1, "name": "x"}]}
        (tmp_path / "ann.json").write_text(json.dumps(ann))
        code, _ = run_cli(["dataset", "check", str(tmp_path / "ann.json"), "--images", str(root), "--verify-images"],
                          capsys, allowed=(0,))
