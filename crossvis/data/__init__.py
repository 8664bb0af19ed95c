"""Data: YouTube-VIS / OVIS / CocoVID readers, frame and pair datasets, clip-consistent
transforms, video and frame-folder input, and a synthetic VIS data generator.

Names are imported on first use, so the torch-free parts (annotation reading, dataset checks,
synthetic data) load without torch.
"""
from __future__ import annotations

from crossvis import lazy_attributes

_LAZY = {
    **dict.fromkeys(("VideoRecord", "TrackRecord", "VISAnnotations", "load_vis_annotations", "cocovid_to_tracks",
                     "decode_segmentation"), "crossvis.data.annotations"),
    **dict.fromkeys(("YTVISFrameDataset", "YTVISPairDataset", "YTVISVideoDataset", "FrameStream"),
                    "crossvis.data.datasets"),
    **dict.fromkeys(("SHAPES", "SyntheticPaths", "generate_synthetic_dataset", "generate_synthetic_splits",
                     "OcclusionSetting"), "crossvis.data.synthetic"),
    **dict.fromkeys(("CheckReport", "Problem", "check_annotations"), "crossvis.data.check"),
    **dict.fromkeys(("ColorJitter", "Compose", "RandomCrop", "RandomHorizontalFlip", "RandomRotation",
                     "ResizeShortestEdge", "finalize_instances", "mask_boxes"), "crossvis.data.transforms"),
    **dict.fromkeys(("VideoSource", "open_video_source", "write_video", "read_image"), "crossvis.data.video"),
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
