"""An example crossvis plugin that contributes one backbone."""
from crossvis_toy_plugin.backbone import ToyConvNet

__all__ = ["ToyConvNet"]
