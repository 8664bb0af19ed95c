"""Registers the heads with the crossvis registry (kind ``head``)."""
from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch
from crossvis.hookspecs import hookimpl


@hookimpl
def crossvis_register_components(registry):
    registry.register("head", "fcos", FCOSHead)
    registry.register("head", "condinst_mask_branch", MaskBranch)
