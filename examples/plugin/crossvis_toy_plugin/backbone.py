"""A tiny convolutional backbone with three outputs at strides 8, 16 and 32."""
from __future__ import annotations

from torch import Tensor, nn

from crossvis.structures import ShapeSpec


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True))


class ToyConvNet(nn.Module):
    """Five stride-2 conv stages; outputs ``res3``, ``res4``, ``res5`` (strides 8, 16, 32).

    Args:
        width: channels of the first stage; each later stage doubles it.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [width * 2 ** i for i in range(5)]
        self.stages = nn.ModuleList(_stage(cin, cout) for cin, cout in zip([3] + chans[:-1], chans))
        self._shapes = {f"res{i + 1}": ShapeSpec(chans[i], 2 ** (i + 1)) for i in range(2, 5)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: float [B, 3, H, W] → {"res3": [B, 4w, H/8, W/8], "res4": ..., "res5": ...}."""
        out = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            name = f"res{i + 1}"
            if name in self._shapes:
                out[name] = x
        return out
