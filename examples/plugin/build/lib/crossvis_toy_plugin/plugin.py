"""The module named by the entry point: implements crossvis's registration hook."""
from crossvis import hookimpl
from crossvis_toy_plugin.backbone import ToyConvNet


@hookimpl
def crossvis_register_components(registry):
    registry.register("backbone", "toy_convnet", ToyConvNet)
