"""Registers the data package's datasets and transforms with the component registry."""
from __future__ import annotations

from crossvis.hookspecs import hookimpl
from crossvis.registry import Registry

from .datasets import YTVISFrameDataset, YTVISPairDataset, YTVISVideoDataset
from .transforms import ColorJitter, RandomCrop, RandomHorizontalFlip, RandomRotation, ResizeShortestEdge


@hookimpl
def crossvis_register_components(registry: Registry) -> None:
    registry.register("dataset", "ytvis_frames", YTVISFrameDataset)
    registry.register("dataset", "ytvis_pairs", YTVISPairDataset)
    registry.register("dataset", "ytvis_videos", YTVISVideoDataset)
    registry.register("transform", "resize_shortest_edge", ResizeShortestEdge)
    registry.register("transform", "random_horizontal_flip", RandomHorizontalFlip)
    registry.register("transform", "random_rotation", RandomRotation)
    registry.register("transform", "random_crop", RandomCrop)
    registry.register("transform", "color_jitter", ColorJitter)
