"""YouTube-VIS and OVIS evaluation: the official AP/AR (no pycocotools fork) and results files.

>>> from crossvis.eval import evaluate_ovis, evaluate_ytvis
>>> metrics = evaluate_ytvis("valid_sub.json", "results.json")  # doctest: +SKIP
>>> metrics["AP"], metrics["AR10"]  # doctest: +SKIP
>>> evaluate_ovis("ovis_val_sub.json", "results.json")["APho"]  # doctest: +SKIP
"""
from crossvis.eval.annotations import cocovid_to_ytvis, has_ground_truth, is_cocovid
from crossvis.eval.results import encode_mask, load_results, validate_results, write_results, write_submission_zip
from crossvis.eval.ovis import OCCLUSION_RANGES, occlusion_score
from crossvis.eval.ytvis import (METRIC_KEYS, OVIS_METRIC_KEYS, PROTOCOLS, OVISEvaluator, YTVISEvaluator,
                                 evaluate_ovis, evaluate_ytvis)

__all__ = ["YTVISEvaluator", "OVISEvaluator", "evaluate_ytvis", "evaluate_ovis", "METRIC_KEYS", "OVIS_METRIC_KEYS",
           "PROTOCOLS", "OCCLUSION_RANGES", "occlusion_score", "cocovid_to_ytvis", "is_cocovid", "has_ground_truth",
           "encode_mask", "write_results", "write_submission_zip", "load_results", "validate_results"]
