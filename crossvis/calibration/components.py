"""Registers the temporal calibration neck add-on through the plugin hook."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from crossvis.calibration.neck import TemporalCalibrationNeck
from crossvis.errors import CrossVISError
from crossvis.hookspecs import hookimpl
from crossvis.structures import ShapeSpec


def temporal_calibration(input_shape: Mapping[str, ShapeSpec], inner: Mapping[str, Any],
                         levels: Optional[Sequence[str]] = None, shared: bool = True, max_displacement: int = 4,
                         kernel_size: int = 3, hidden_channels: int = 64,
                         fusion: str = "sum") -> TemporalCalibrationNeck:
    """Recipe factory: ``{type: temporal_calibration, inner: {type: fpn, ...}, **options}``; the
    inner neck node gets the backbone's ``input_shape``. Options: see :class:`TemporalCalibrationNeck`."""
    from crossvis.recipes import build

    if not isinstance(inner, Mapping) or "type" not in inner:
        raise CrossVISError("temporal_calibration: 'inner' must be the wrapped neck's node, e.g. "
                            "inner: {type: fpn, in_features: [res3, res4, res5]}")
    where = f"{getattr(inner, 'path', '') or 'model.neck.inner'}"
    neck = build("neck", inner, where=where, input_shape=input_shape)
    return TemporalCalibrationNeck(neck, levels, shared, max_displacement, kernel_size, hidden_channels, fusion)


@hookimpl
def crossvis_register_components(registry) -> None:
    registry.register("neck", "temporal_calibration", temporal_calibration)
