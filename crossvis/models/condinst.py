"""CondInst for still images: network + criterion + post-processor behind the crossvis model contract."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.heads.dynamic_mask_head import DynamicMaskHead
from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch
from crossvis.models.criterion import CondInstCriterion, FrameTargets
from crossvis.models.network import CondInstNetwork
from crossvis.models.outputs import NetworkOutputs
from crossvis.models.postprocess import CondInstPostProcessor
from crossvis.models.preprocess import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, ImagePreprocessor
from crossvis.structures import CrossVISError, FrameDetections

__all__ = ["CondInst", "default_sizes_of_interest"]


def default_sizes_of_interest(num_levels: int) -> list[int]:
    """FCOS level boundaries 64, 128, …: [64, 128, 256, 512] for P3–P7, [64, 128] for P3–P5."""
    return [64 * 2 ** i for i in range(num_levels - 1)]


class CondInst(nn.Module):
    """CondInst (Tian et al., 2020): FCOS + dynamic mask heads, for still images.

    Training: ``model(batch)`` with ``batch`` a list of frame samples (see docs/contracts.md)
    returns ``{"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}`` (the first three
    are whatever ``fcos_loss`` returns).
    Inference: ``model.predict(images)`` with uint8 RGB [3, H, W] frames returns one
    :class:`FrameDetections` per frame at its original size.

    Args:
        backbone, neck, head: built components (the neck yields the FPN levels; the head is an
            :class:`FCOSHead` and fixes ``num_classes``).
        mask_branch: the mask branch; default ``MaskBranch(neck.output_shape())``.
        fcos_loss: the detection loss (recipe node ``model.fcos_loss``, registry kind ``loss``);
            default :class:`~crossvis.losses.fcos.FCOSLoss` (focal α 0.25, γ 2). See
            :class:`CondInstCriterion` for the call it must support.
        sizes_of_interest: FCOS level boundaries; default 64·2^i (official [64, 128, 256, 512]).
        center_sampling_radius, max_proposals: criterion settings.
        mask_head_channels, mask_head_layers, rel_coords: dynamic mask head (8, 3, True → 169 params).
        backbone_grad_scale: gradient scale of backbone + neck in training (1.0 = off; CrossVIS 0.1).
        pixel_mean, pixel_std, input_format, size_divisibility: input normalisation (0–255 scale;
            official weights: BGR, mean [103.530, 116.280, 123.675], std [1, 1, 1]).
        min_size_test, max_size_test: inference resize.
        score_threshold, pre_nms_topk, nms_threshold, max_detections, mask_threshold: inference.
        class_agnostic_nms: NMS over all classes at once instead of per class (official: per class).

    Every setting is keyword-only; the recipe keys of a ``model`` node are these names.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: FCOSHead,
                 mask_branch: Optional[MaskBranch] = None, *, fcos_loss: Optional[nn.Module] = None,
                 sizes_of_interest: Optional[Sequence[float]] = None, center_sampling_radius: float = 1.5,
                 max_proposals: int = 500,
                 mask_head_channels: int = 8, mask_head_layers: int = 3, rel_coords: bool = True,
                 backbone_grad_scale: float = 1.0,
                 pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN, pixel_std: Sequence[float] = IMAGENET_RGB_STD,
                 input_format: str = "RGB", size_divisibility: int = 32,
                 min_size_test: int = 360, max_size_test: int = 640,
                 score_threshold: float = 0.05, pre_nms_topk: int = 1000, nms_threshold: float = 0.6,
                 max_detections: int = 100, mask_threshold: float = 0.5,
                 class_agnostic_nms: bool = False) -> None:
        super().__init__()
        if mask_branch is None:
            mask_branch = MaskBranch(neck.output_shape())
        num_levels = len(head.strides)
        if sizes_of_interest is None:
            sizes_of_interest = default_sizes_of_interest(num_levels)
        sizes_of_interest = [float(s) for s in sizes_of_interest]
        if len(sizes_of_interest) != num_levels - 1:
            raise CrossVISError(f"model.sizes_of_interest needs {num_levels - 1} values for {num_levels} "
                                f"head levels, got {sizes_of_interest}")
        mask_soi = sizes_of_interest + [2 * sizes_of_interest[-1] if sizes_of_interest else 64.0]
        self.preprocessor = ImagePreprocessor(pixel_mean, pixel_std, input_format, size_divisibility,
                                              min_size_test, max_size_test)
        self.mask_head = DynamicMaskHead(mask_soi, in_channels=mask_branch.out_channels,
                                         channels=mask_head_channels, num_layers=mask_head_layers,
                                         rel_coords=rel_coords)
        self.network = CondInstNetwork(backbone, neck, head, mask_branch, self.mask_head.num_params,
                                       backbone_grad_scale)
        self.criterion = CondInstCriterion(head.num_classes, head.strides, sizes_of_interest, self.mask_head,
                                           fcos_loss=fcos_loss, mask_feat_stride=mask_branch.out_stride,
                                           center_sampling_radius=center_sampling_radius,
                                           max_proposals=max_proposals)
        self.postprocessor = CondInstPostProcessor(head.strides, self.mask_head,
                                                   mask_feat_stride=mask_branch.out_stride,
                                                   score_threshold=score_threshold, pre_nms_topk=pre_nms_topk,
                                                   nms_threshold=nms_threshold, max_detections=max_detections,
                                                   mask_threshold=mask_threshold,
                                                   class_agnostic_nms=class_agnostic_nms)
        self.num_classes = head.num_classes

    @property
    def device(self) -> torch.device:
        return self.preprocessor.pixel_mean.device

    # -- network access (export) -----------------------------------------------------------------
    def forward_network(self, images: Tensor) -> NetworkOutputs:
        """Dense raw network outputs for a normalised, padded float32 [B, 3, H, W] batch (no losses)."""
        return self.network(images)

    # -- training -----------------------------------------------------------------------------
    def prepare_frames(self, frames: Sequence[dict]) -> tuple[Tensor, FrameTargets]:
        """Normalised padded images [B, 3, Hp, Wp] and padded targets for training frame samples."""
        if not frames:
            raise CrossVISError("the model got an empty training batch; check data.train and the batch size")
        images, _ = self.preprocessor.batch([_field(f, "image", i) for i, f in enumerate(frames)])
        hp, wp = images.shape[-2:]
        boxes, labels, masks, ids = [], [], [], []
        for i, frame in enumerate(frames):
            inst = _field(frame, "instances", i)
            b = _field(inst, "boxes", i).to(self.device, torch.float32).reshape(-1, 4)
            m = _field(inst, "masks", i).to(self.device, torch.uint8)
            n = b.shape[0]
            if m.dim() != 3 or m.shape[0] != n:
                raise CrossVISError(f"frame {i} ({frame.get('file_name', '?')}): instances.masks must be "
                                    f"[N, H, W] with N = {n} boxes, got {tuple(m.shape)}")
            padded = torch.zeros((n, hp, wp), dtype=torch.uint8, device=self.device)
            padded[:, : m.shape[1], : m.shape[2]] = m
            lab = _field(inst, "labels", i).to(self.device, torch.int64).reshape(-1)
            if lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise CrossVISError(f"frame {i} ({frame.get('file_name', '?')}): label {int(lab.max())} is "
                                    f"outside 0..{self.num_classes - 1}; model.num_classes must match the data")
            boxes.append(b)
            labels.append(lab)
            masks.append(padded)
            if "ids" in inst:
                ids.append(inst["ids"].to(self.device, torch.int64).reshape(-1))
        return images, FrameTargets(boxes, labels, masks, ids if len(ids) == len(frames) else None)

    def forward(self, batch: Sequence[dict]) -> dict[str, Tensor]:
        """Losses of a batch of frame samples (see the class docstring)."""
        images, targets = self.prepare_frames(batch)
        return self.criterion(self.network(images), targets)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: Sequence[Tensor]) -> list[FrameDetections]:
        """Detections for uint8 RGB frames [3, H, W] at their original sizes.

        Runs in eval mode (the previous mode is restored afterwards). The dynamic filters and
        embeddings are computed only at the final detections' locations (``forward_network``
        keeps returning the dense maps).
        """
        if not images:
            return []
        was_training = self.training
        self.eval()
        try:
            return self.predict_with(images, lambda batch: self.network(batch, dense=False))
        finally:
            self.train(was_training)

    def predict_with(self, images: Sequence[Tensor],
                     network: Callable[[Tensor], NetworkOutputs]) -> list[FrameDetections]:
        """:meth:`predict`'s steps with another way of running the network (e.g. the fast path).

        Resizes and batches ``images`` (uint8 RGB [3, H, W]), calls ``network(batch)`` on the
        normalised padded float32 batch [B, 3, Hp, Wp] — it must return this network's outputs,
        dense or ``dense=False`` — and post-processes them at the frames' original sizes. The
        mode and the autograd context are the caller's.
        """
        if not images:
            return []
        resized = [self.preprocessor.resize_for_test(im.to(self.device)) for im in images]
        batch, sizes = self.preprocessor.batch(resized)
        outputs = network(batch)
        orig = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        return self.postprocessor(outputs, sizes, orig, gather=self.network.at_locations)


def _field(mapping: Any, key: str, index: int) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise CrossVISError(f"training frame {index} has no {key!r}; frame samples must follow the "
                            f"data→model contract in docs/contracts.md")
    return mapping[key]
