"""Temporal feature calibration (OVIS): the previous frame's features aligned by a deformable
convolution with correlation-predicted offsets, fused with the current frame's.

Example::

    from crossvis.calibration import TemporalCalibrationNeck

    neck = TemporalCalibrationNeck(FPN(backbone.output_shape(), ...))   # wraps any neck
    neck.reset_stream()                                                  # start of a video

Registered (kind ``neck``) as ``temporal_calibration``: ``{type: temporal_calibration, inner:
{type: fpn, ...}, ...}``. The package only plugs in through ``crossvis.calibration.components``.
"""
from crossvis.calibration.align import FUSIONS, FeatureAlignment, local_correlation
from crossvis.calibration.neck import TemporalCalibrationNeck

__all__ = ["TemporalCalibrationNeck", "FeatureAlignment", "local_correlation", "FUSIONS"]
