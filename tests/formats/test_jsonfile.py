"""crossvis.formats.jsonfile.array_pieces: cuts that either fall between elements or are detected."""
from __future__ import annotations

import json

import orjson
from hypothesis import given, settings, strategies as st

from crossvis.formats.jsonfile import array_pieces

KEYS = (b"size", b"counts")
# strings that look like the cut pattern, escapes and quotes included
tricky = st.sampled_from(['}, {"a": 1', '\\', '"', '}, {"size"', '],[', 'plain', '}\n,\n{"b"'])
text = st.lists(tricky, max_size=4).map("".join)
mask = st.fixed_dictionaries({"size": st.just([2, 3]), "counts": text})
prediction = st.fixed_dictionaries({"video_id": st.integers(1, 9), "score": st.floats(0, 1),
                                    "note": text, "segmentations": st.lists(st.one_of(st.none(), mask), max_size=3)})


@settings(max_examples=150, deadline=None)
@given(st.lists(prediction, min_size=1, max_size=12), st.integers(2, 6), st.sampled_from(["default", "compact", "indent"]))
def test_pieces_that_parse_are_exactly_the_elements(results, parts, layout):
    raw = json.dumps(results, separators=(",", ":") if layout == "compact" else None,
                     indent=2 if layout == "indent" else None).encode()
    pieces = array_pieces(raw, parts, KEYS)
    if pieces is None:
        return
    try:
        parsed = [orjson.loads(b"[" + raw[a:b] + b"]") for a, b in pieces]
    except orjson.JSONDecodeError:
        return  # a cut in the wrong place is always detected this way
    assert [p for part in parsed for p in part] == results


@settings(max_examples=40, deadline=None)
@given(st.lists(st.fixed_dictionaries({"video_id": st.integers(1, 9), "score": st.floats(0, 1),
                                       "segmentations": st.lists(st.one_of(st.none(), st.fixed_dictionaries(
                                           {"size": st.just([4, 4]), "counts": st.text("0123456789:;<=>?@ABCDE",
                                                                                       min_size=1)})))}),
                min_size=8, max_size=30), st.integers(2, 4))
def test_a_results_file_is_cut_between_predictions(results, parts):
    """On results files as json.dump writes them (also indented), the cuts land between predictions."""
    for raw in (json.dumps(results).encode(), json.dumps(results, indent=1).encode()):
        pieces = array_pieces(raw, parts, KEYS)
        assert pieces is not None
        assert [p for a, b in pieces for p in orjson.loads(b"[" + raw[a:b] + b"]")] == results


def test_not_an_array_of_objects():
    assert array_pieces(b'{"a": 1}', 2, KEYS) is None
    assert array_pieces(b"[1, 2, 3]", 2, KEYS) is None
    assert array_pieces(b"[]", 2, KEYS) is None
    raw = b'\xef\xbb\xbf [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}] \n'  # a BOM and white space around
    pieces = array_pieces(raw, 2, KEYS)
    assert [p for a, b in pieces for p in orjson.loads(b"[" + raw[a:b] + b"]")] == [{"a": 1}, {"b": 2}, {"c": 3},
                                                                                   {"d": 4}]
