"""Data: YouTube-VIS / OVIS / CocoVID readers, frame and pair datasets, clip-consistent
transforms, video and frame-folder input, and a synthetic VIS data generator."""
from .annotations import (TrackRecord, VideoRecord, VISAnnotations, cocovid_to_tracks, decode_segmentation,
                          load_vis_annotations)
from .datasets import FrameStream, YTVISFrameDataset, YTVISPairDataset, YTVISVideoDataset, read_image
from .synthetic import SHAPES, SyntheticPaths, generate_synthetic_dataset, generate_synthetic_splits
from .check import CheckReport, Problem, check_annotations
from .transforms import (ColorJitter, Compose, RandomCrop, RandomHorizontalFlip, ResizeShortestEdge,
                         finalize_instances, mask_boxes)
from .video import VideoSource, open_video_source, write_video

__all__ = [
    "VideoRecord", "TrackRecord", "VISAnnotations", "load_vis_annotations", "cocovid_to_tracks",
    "decode_segmentation", "YTVISFrameDataset", "YTVISPairDataset", "YTVISVideoDataset", "FrameStream",
    "read_image", "Compose", "ResizeShortestEdge", "RandomHorizontalFlip", "RandomCrop", "ColorJitter", "mask_boxes",
    "finalize_instances",
    "SHAPES", "SyntheticPaths", "generate_synthetic_dataset", "generate_synthetic_splits",
    "VideoSource", "open_video_source", "write_video", "check_annotations", "CheckReport", "Problem",
]
