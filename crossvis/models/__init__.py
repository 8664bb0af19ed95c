"""Meta-architectures (CondInst, CrossVIS), FCOS target assignment, post-processing, ``build_model``."""
from crossvis.models.build import build_model, forwards_keywords
from crossvis.models.condinst import CondInst, default_sizes_of_interest
from crossvis.models.crossvis import CrossVIS, FrameSlot, SlotEmbeddings
from crossvis.models.criterion import Assignment, CondInstCriterion, FrameTargets, gt_masks_at_stride
from crossvis.models.fcos_targets import FCOSTargetAssigner, FCOSTargets, level_size_ranges, mask_centers
from crossvis.models.network import CondInstNetwork, flatten_levels
from crossvis.models.outputs import NetworkOutputs
from crossvis.models.postprocess import Candidates, CondInstPostProcessor
from crossvis.models.preprocess import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, ImagePreprocessor, test_resize_shape

__all__ = ["build_model", "forwards_keywords", "CondInst", "CrossVIS", "FrameSlot", "SlotEmbeddings",
           "default_sizes_of_interest", "CondInstNetwork", "NetworkOutputs", "CondInstCriterion",
           "CondInstPostProcessor", "Candidates", "FrameTargets", "Assignment", "gt_masks_at_stride",
           "FCOSTargetAssigner", "FCOSTargets", "level_size_ranges", "mask_centers", "flatten_levels", "ImagePreprocessor",
           "IMAGENET_RGB_MEAN", "IMAGENET_RGB_STD", "test_resize_shape"]
