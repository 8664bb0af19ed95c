"""Registers the meta-architectures with the crossvis registry (kind ``model``)."""
from crossvis.models.condinst import CondInst
from crossvis.models.crossvis import CrossVIS
from crossvis.hookspecs import hookimpl


@hookimpl
def crossvis_register_components(registry):
    registry.register("model", "condinst", CondInst)
    registry.register("model", "crossvis", CrossVIS)
