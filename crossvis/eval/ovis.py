"""What the OVIS evaluation adds to YouTube-VIS: occlusion scores and equal-length predictions.

OVIS ground-truth tracks carry ``occlusion``: one label per frame, ``"no_occlusion"``,
``"slight_occlusion"``, ``"severe_occlusion"`` or ``null``. The official OVIS evaluator
(qjy981010/cocoapi ``oviseval.py``) turns them into one *occlusion score* per track:

1. map the labels to 0, 0.25 and 0.75, skipping ``null`` frames;
2. sort the scores ascending and keep the top ``ceil(n / 2)`` of them, i.e. the **largest** half
   (rounded up): the track is scored by its most occluded frames. "Top" of a list sorted in
   ascending order is its high end; the official code keeps the last ``ceil(n / 2)`` entries;
3. take their mean.

A track is then in an occlusion range when its score lies within the inclusive bounds of
:data:`OCCLUSION_RANGES`. The official code divides by zero when every label is ``null`` and
raises KeyError without ``occlusion``; both are :class:`CrossVISError` here. It also asserts that a
prediction lists as many frames as the ground truth (YouTube-VIS truncates to the shorter list):
:func:`crossvis.formats.validate_results` with ``exact_length``.
"""
from __future__ import annotations

import math
from typing import Any

from crossvis.errors import CrossVISError

__all__ = ["OCCLUSION_SCORES", "OCCLUSION_RANGES", "occlusion_score"]

#: Per-frame occlusion label -> score.
OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}
#: Inclusive bounds on the track occlusion score, in the official order.
OCCLUSION_RANGES = {"all": (0.0, 1.0), "light": (0.0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1.0)}


def occlusion_score(labels: Any, what: str) -> float:
    """The occlusion score of one ground-truth track from its per-frame ``occlusion`` labels.

    Args:
        labels: the track's ``occlusion`` list (labels of :data:`OCCLUSION_SCORES` or ``None``).
        what: names the track in errors (file, track id).

    Returns:
        The mean of the largest ``ceil(n / 2)`` of the ``n`` non-null frame scores, in [0, 0.75].

    Raises:
        CrossVISError: ``labels`` is not a list, holds an unknown label, or has no non-null label.
    """
    if not isinstance(labels, list):
        raise CrossVISError(f"{what}: 'occlusion' must be a list with one label per frame, got "
                            f"{type(labels).__name__}")
    scores = []
    for frame, label in enumerate(labels):
        if label is None:
            continue
        if label not in OCCLUSION_SCORES:
            raise CrossVISError(f"{what}: unknown occlusion label {label!r} in frame {frame}; use "
                                f"{', '.join(OCCLUSION_SCORES)} or null")
        scores.append(OCCLUSION_SCORES[label])
    if not scores:
        raise CrossVISError(f"{what}: every 'occlusion' label is null, so the track has no occlusion score "
                            "(the official OVIS evaluation divides by zero); label at least one frame")
    top = sorted(scores)[len(scores) - math.ceil(len(scores) / 2):]
    return sum(top) / len(top)
