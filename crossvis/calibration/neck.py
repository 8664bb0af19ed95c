"""A neck add-on that calibrates every frame's features with its previous frame's (online).

Which frame is "previous":

* **training on frame pairs**: the model announces the batch layout with
  :meth:`TemporalCalibrationNeck.set_frame_pairs` (``P`` pairs: items ``0..P-1`` are the key
  frames, ``P..2P-1`` their reference frames); each frame is calibrated with its partner. Without
  an announcement (still-image training) a frame is calibrated with itself.
* **inference** (eval mode): the batch is a run of consecutive frames of one video; frame ``i``
  uses frame ``i − 1``, the first one the last frame of the previous call. The first frame of a
  video (after :meth:`reset_stream`, or when the map size changes) uses itself. Only the past is
  used, so the model stays online. The stored state is the inner neck's output of one frame.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.calibration.align import FeatureAlignment
from crossvis.errors import CrossVISError
from crossvis.structures import ShapeSpec

__all__ = ["TemporalCalibrationNeck"]


class TemporalCalibrationNeck(nn.Module):
    """Wraps a neck; calibrates some of its outputs with the previous frame's (see module docstring).

    Args:
        inner: the wrapped neck (anything with ``forward(dict) -> dict`` and ``output_shape()``).
        levels: the inner outputs to calibrate (default all); they must share one channel count
            when ``shared``.
        shared: one alignment module for all levels (True) or one per level.
        max_displacement, kernel_size, hidden_channels, fusion: see
            :class:`~crossvis.calibration.align.FeatureAlignment`.
    """

    def __init__(self, inner: nn.Module, levels: Optional[Sequence[str]] = None, shared: bool = True,
                 max_displacement: int = 4, kernel_size: int = 3, hidden_channels: int = 64,
                 fusion: str = "sum") -> None:
        super().__init__()
        self.inner = inner
        shapes = inner.output_shape()
        self.levels = list(shapes) if levels is None else [str(level) for level in levels]
        unknown = [level for level in self.levels if level not in shapes]
        if unknown or not self.levels:
            raise CrossVISError(f"temporal_calibration: levels {unknown or self.levels} are not outputs of the inner "
                                f"neck ({', '.join(shapes)})")
        channels = {shapes[level].channels for level in self.levels}
        if shared and len(channels) > 1:
            raise CrossVISError(f"temporal_calibration: levels {self.levels} have different channel counts "
                                f"{sorted(channels)}; set shared: false")

        def make(c: int) -> FeatureAlignment:
            return FeatureAlignment(c, max_displacement, kernel_size, hidden_channels, fusion)

        self.shared = bool(shared)
        self.align = nn.ModuleDict(
            {"shared": make(channels.pop())} if self.shared
            else {level: make(shapes[level].channels) for level in self.levels})
        self._num_pairs: Optional[int] = None
        self._previous: Optional[dict[str, Tensor]] = None

    def output_shape(self) -> dict[str, ShapeSpec]:
        return self.inner.output_shape()

    # -- frame bookkeeping --------------------------------------------------------------------
    def set_frame_pairs(self, num_pairs: Optional[int]) -> None:
        """Announce that the next training batch is ``num_pairs`` key frames then their references
        (``None``: independent frames)."""
        self._num_pairs = None if num_pairs is None else int(num_pairs)

    def reset_stream(self) -> None:
        """Forget the previous frame (call at the start of every video)."""
        self._previous = None

    def _previous_features(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self.training:
            if self._num_pairs is None:
                return {k: features[k] for k in self.levels}
            p = self._num_pairs
            if features[self.levels[0]].shape[0] != 2 * p:
                raise CrossVISError(f"temporal_calibration: announced {p} frame pairs but the batch has "
                                    f"{features[self.levels[0]].shape[0]} frames")
            return {k: torch.cat([features[k][p:], features[k][:p]]) for k in self.levels}
        out = {}
        for k in self.levels:
            f = features[k]
            last = None if self._previous is None else self._previous.get(k)
            first = last if last is not None and last.shape[1:] == f.shape[1:] else f[:1]
            out[k] = torch.cat([first.to(f.dtype), f[:-1]])
        self._previous = {k: features[k][-1:].detach() for k in self.levels}
        return out

    def calibrator(self, level: str) -> FeatureAlignment:
        return self.align["shared" if self.shared else level]

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inner neck outputs, the ``levels`` calibrated: ``{name: float [B, C, h, w]}``."""
        features = self.inner(inputs)
        previous = self._previous_features(features)
        out = dict(features)
        for k in self.levels:
            out[k] = self.calibrator(k)(features[k], previous[k])
        return out
