"""Torch datasets over YouTube-VIS-format data: single frames, frame pairs, whole videos.

Every dataset reads the annotation file once (``load_vis_annotations``) and decodes masks only for
the frames of the requested item. They expose ``num_classes``, ``num_identities`` and
``class_names`` (for builder injection) and ``aspect_ratio_group(index)`` (0 landscape, 1 portrait).

Randomness (reference-frame choice, flips, scale choice) comes from a generator seeded by
``(seed, epoch, index)``, so ``dataset[i]`` is a pure function of those three values and a resumed
training run sees the same samples. Call ``set_epoch(e)`` at each epoch (or any other counter).
"""
from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossvis.errors import CrossVISError

from .annotations import VideoRecord, VISAnnotations, decode_frame_masks, load_vis_annotations
from .transforms import ClipTransform, Compose, finalize_instances
from .video import read_image

__all__ = ["YTVISFrameDataset", "YTVISPairDataset", "YTVISVideoDataset", "FrameStream", "read_image"]


def _build_transform(transforms: Any) -> Optional[ClipTransform]:
    """A clip transform from None, a callable, or a list of callables / ``{type: name, ...}`` nodes."""
    if transforms is None or callable(transforms):
        return transforms
    built = []
    for i, t in enumerate(transforms):
        if isinstance(t, Mapping):
            # plain-Python use; recipes build their transforms through the registry first
            # (crossvis.training.datasets.with_built_transforms) so errors carry file:line
            from crossvis.plugins import get_registry
            from crossvis.recipes import build

            t = build("transform", t, where=f"transforms[{i}]", registry=get_registry())
        elif not callable(t):
            raise CrossVISError(f"transforms[{i}] is {t!r}: expected a transform or a {{type: name, ...}} node")
        built.append(t)
    return Compose(built)


class _AnnotatedDataset(Dataset):
    """An annotation file plus the folder its ``file_names`` are relative to, and its metadata."""

    def __init__(self, annotations: str, images: str) -> None:
        self.annotations_path = Path(annotations)
        self.images_root = Path(images)
        if not self.images_root.is_dir():
            raise CrossVISError(f"images folder not found: {self.images_root}; set it to the folder the "
                                f"JSON file_names are relative to")
        self.data: VISAnnotations = load_vis_annotations(self.annotations_path)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def num_identities(self) -> int:
        return self.data.num_identities

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names


class _VISBase(_AnnotatedDataset):
    """Shared reading, indexing and seeding for the frame and pair datasets."""

    def __init__(self, annotations: str, images: str, transforms: Any = None,
                 seed: Optional[int] = None) -> None:
        super().__init__(annotations, images)
        self.transforms = _build_transform(transforms)
        self.seed = int(seed) if seed is not None else int(torch.initial_seed()) % (2 ** 63)
        self.epoch = 0
        self._videos = {v.id: v for v in self.data.videos}
        # kept frames: (video id, frame index) with >= 1 non-crowd instance present
        self.frames: list[tuple[int, int]] = []
        self.kept_by_video: dict[int, list[int]] = {}
        for video in self.data.videos:
            tracks = [t for t in self.data.tracks[video.id] if not t.iscrowd]
            kept = [f for f in range(len(video)) if any(t.segmentations[f] is not None for t in tracks)]
            self.kept_by_video[video.id] = kept
            self.frames.extend((video.id, f) for f in kept)

    def __len__(self) -> int:
        return len(self.frames)

    def aspect_ratio_group(self, index: int) -> int:
        """0 when the item's (anchor) frame is wider than tall, else 1."""
        video = self._videos[self.frames[index][0]]
        return 0 if video.width > video.height else 1

    def set_epoch(self, epoch: int) -> None:
        """Set the counter mixed into every item's random seed (epoch or iteration)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator for item ``index`` in the current epoch, seeded from (seed, epoch, index)."""
        state = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1] >> 1))

    # -- frame samples ------------------------------------------------------------------------
    def load_frame(self, video_id: int, frame_index: int) -> dict[str, Any]:
        """The untransformed frame sample (contract in docs/contracts.md) of one annotated frame."""
        video = self._videos[video_id]
        path = self.images_root / video.file_names[frame_index]
        image = read_image(path)
        if image.shape[:2] != (video.height, video.width):
            raise CrossVISError(f"frame {path} is {image.shape[1]}x{image.shape[0]} but video {video.id} in "
                                f"{self.annotations_path} says {video.width}x{video.height}")
        tracks = [t for t in self.data.tracks[video_id]
                  if not t.iscrowd and t.segmentations[frame_index] is not None]
        # masks were validated once when the file was loaded (crossvis.formats.load_annotations)
        masks = decode_frame_masks([t.segmentations[frame_index] for t in tracks], video.height, video.width)
        instances = {
            "boxes": torch.zeros((len(tracks), 4), dtype=torch.float32),
            "labels": torch.tensor([self.data.label_of_category[t.category_id] for t in tracks], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "ids": torch.tensor([self.data.identity_of_track[t.id] for t in tracks], dtype=torch.int64),
        }
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                "instances": finalize_instances(instances), "orig_size": (video.height, video.width),
                "video_id": video.id, "frame_index": frame_index, "file_name": str(path)}

    def _transform(self, clip: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
        if self.transforms is None:
            return clip
        return self.transforms(clip, self.generator(index))


class YTVISFrameDataset(_VISBase):
    """One item per annotated frame that has at least one non-crowd instance (still-image training).

    Args:
        annotations: YouTube-VIS-format JSON (per-track or CocoVID layout).
        images: the folder the JSON ``file_names`` are relative to.
        transforms: a clip transform, or a list of transforms / ``{type: name, ...}`` nodes of kind
            "transform" (composed in order), or None.
        seed: base seed of the per-item generators (default: derived from ``torch.initial_seed()``).

    Returns (``__getitem__``): a frame sample dict (docs/contracts.md).
    """

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_id, frame_index = self.frames[index]
        return self._transform([self.load_frame(video_id, frame_index)], index)[0]


class YTVISPairDataset(_VISBase):
    """One item per kept frame: ``{"anchor": frame sample, "reference": frame sample}``.

    The reference is drawn uniformly from the kept frames ``i`` of the same video with
    ``1 <= |i - anchor| <= sample_region`` (distance in the video's frame list); with
    ``sample_region <= 0`` from every other kept frame of the video. Without a candidate the anchor
    is its own reference. Both frames get one geometric transform (same scale, same flip);
    instance correspondence is by ``instances["ids"]``.

    Args:
        annotations, images, transforms, seed: as in :class:`YTVISFrameDataset`.
        sample_region: the largest frame-index distance of the reference (official default 20).
    """

    def __init__(self, annotations: str, images: str, transforms: Any = None, seed: Optional[int] = None,
                 sample_region: int = 20) -> None:
        super().__init__(annotations, images, transforms=transforms, seed=seed)
        self.sample_region = int(sample_region)

    def reference_candidates(self, video_id: int, anchor: int) -> list[int]:
        """Frame indices the reference of ``anchor`` is drawn from (empty → the anchor itself)."""
        kept = self.kept_by_video[video_id]
        if self.sample_region <= 0:
            return [f for f in kept if f != anchor]
        lo = bisect.bisect_left(kept, anchor - self.sample_region)
        hi = bisect.bisect_right(kept, anchor + self.sample_region)
        return [f for f in kept[lo:hi] if f != anchor]

    def __getitem__(self, index: int) -> dict[str, dict[str, Any]]:
        video_id, anchor = self.frames[index]
        generator = self.generator(index)
        candidates = self.reference_candidates(video_id, anchor)
        reference = candidates[int(torch.randint(len(candidates), (1,), generator=generator))] if candidates else anchor
        clip = [self.load_frame(video_id, anchor), self.load_frame(video_id, reference)]
        if self.transforms is not None:
            clip = self.transforms(clip, generator)
        return {"anchor": clip[0], "reference": clip[1]}


class FrameStream:
    """Re-iterable stream of one video's frames as uint8 [3,H,W] RGB tensors, read one at a time."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Tensor]:
        for p in self.paths:
            yield torch.from_numpy(read_image(p)).permute(2, 0, 1).contiguous()


class YTVISVideoDataset(_AnnotatedDataset):
    """One item per video, for online inference (ground truth, if any, is not returned).

    Args:
        annotations: YouTube-VIS-format JSON (``annotations`` may be missing, [] or null).
        images: the folder the JSON ``file_names`` are relative to.

    Returns (``__getitem__``): ``{"video_id": int, "name": str, "file_names": list[str] (full paths),
    "orig_size": (h, w), "length": int, "frames": FrameStream}``.
    """

    def __init__(self, annotations: str, images: str) -> None:
        super().__init__(annotations, images)
        self.videos: list[VideoRecord] = list(self.data.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def aspect_ratio_group(self, index: int) -> int:
        video = self.videos[index]
        return 0 if video.width > video.height else 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        paths = [self.images_root / f for f in video.file_names]
        return {"video_id": video.id, "name": video.name, "file_names": [str(p) for p in paths],
                "orig_size": (video.height, video.width), "length": len(video), "frames": FrameStream(paths)}

