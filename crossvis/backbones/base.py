"""What every crossvis backbone exposes besides ``forward``."""
from __future__ import annotations

from torch import nn

from crossvis.structures import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """A module whose ``forward(x)`` returns a dict of feature maps named by ``out_features``.

    Subclasses set ``self._shapes`` (name → :class:`ShapeSpec` of every map they can return) and
    ``self._out_features`` (the names ``forward`` returns, fine to coarse).
    """

    _shapes: dict[str, ShapeSpec]
    _out_features: tuple[str, ...]

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every returned map, fine to coarse."""
        return {name: self._shapes[name] for name in self._out_features}

    @property
    def out_features(self) -> tuple[str, ...]:
        return self._out_features
