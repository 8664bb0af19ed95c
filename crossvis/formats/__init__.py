"""The YouTube-VIS / OVIS / CocoVID file formats: reading, validating and converting (no torch).

* :func:`read_json`: the one JSON reader (clear ``file:line:column`` errors);
* :func:`is_cocovid`, :func:`cocovid_to_tracks`: the per-frame CocoVID layout to per-track tracks;
* :func:`load_annotations` / :func:`parse_annotations`: the one annotation validator (readers,
  evaluator and ``crossvis dataset check``);
* :func:`validate_results`: the one results validator;
* :func:`encode_mask`, :func:`encode_masks`, :func:`encode_runs`, :func:`check_compressed`, :func:`check_uncompressed`:
  COCO RLE, validated before pycocotools reads it.
"""
from crossvis.formats.annotations import (OCCLUSION_LABELS, AnnotationFile, Problem, ProblemList, TrackEntry,
                                          VideoEntry, load_annotations, parse_annotations)
from crossvis.formats.jsonfile import read_json
from crossvis.formats.layout import cocovid_to_tracks, is_cocovid
from crossvis.formats.results import REQUIRED_RESULT_KEYS, ResultEntry, validate_results
from crossvis.formats.rle import (check_compressed, check_size, check_uncompressed, encode_mask, encode_masks,
                                  encode_runs)

__all__ = ["read_json", "is_cocovid", "cocovid_to_tracks", "load_annotations", "parse_annotations",
           "AnnotationFile", "VideoEntry", "TrackEntry", "Problem", "ProblemList", "OCCLUSION_LABELS", "validate_results",
           "ResultEntry", "REQUIRED_RESULT_KEYS", "encode_mask", "encode_masks", "encode_runs", "check_compressed",
           "check_size", "check_uncompressed"]
