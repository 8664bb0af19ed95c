"""Prediction heads: the FCOS head, CondInst's mask branch and dynamic mask head."""
from crossvis.heads.dynamic_mask_head import DynamicMaskHead, grid_locations
from crossvis.heads.fcos_head import FCOSHead, FCOSHeadOutputs, Scale, conv_tower
from crossvis.heads.mask_branch import MaskBranch
from crossvis.heads.sampled import conv2d_at_locations, gather_locations
from crossvis.heads.upsample import aligned_bilinear

__all__ = ["FCOSHead", "FCOSHeadOutputs", "Scale", "conv_tower", "MaskBranch", "DynamicMaskHead", "grid_locations",
           "aligned_bilinear", "conv2d_at_locations", "gather_locations"]
