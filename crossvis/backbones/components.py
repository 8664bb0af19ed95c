"""Registers the backbones (``resnet``, ``dla``, ``dla34``) and the ``fpn`` neck with crossvis."""
from crossvis.backbones.dla import DLA, dla34
from crossvis.backbones.fpn import FPN
from crossvis.backbones.resnet import ResNet
from crossvis.hookspecs import hookimpl
from crossvis.registry import Registry


@hookimpl
def crossvis_register_components(registry: Registry) -> None:
    registry.register("backbone", "resnet", ResNet)
    registry.register("backbone", "dla", DLA)
    registry.register("backbone", "dla34", dla34)
    registry.register("neck", "fpn", FPN)
