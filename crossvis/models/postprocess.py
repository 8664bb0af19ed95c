"""CondInst inference: FCOS decoding, class-aware NMS, dynamic masks at the original frame size."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from crossvis.heads.dynamic_mask_head import DynamicMaskHead, grid_locations
from crossvis.heads.upsample import aligned_bilinear
from crossvis.structures import FrameDetections

__all__ = ["CondInstPostProcessor"]


class CondInstPostProcessor(nn.Module):
    """Turns raw network outputs into per-frame :class:`FrameDetections`.

    Per level, (location, class) candidates with p_cls·p_ctr > ``score_threshold`` are kept, at
    most ``pre_nms_topk`` per level (highest product); boxes are location ∓ distance·stride;
    score = sqrt(p_cls·p_ctr). Levels are merged, class-aware NMS (IoU ``nms_threshold``) is
    applied and the ``max_detections`` best are kept. Boxes are rescaled to the original frame and
    clipped, empty boxes removed; masks come from the dynamic mask head, are upsampled to the
    padded input (aligned bilinear), cropped to the resized frame, resized bilinearly to the
    original frame and thresholded at ``mask_threshold``.
    """

    def __init__(self, strides: Sequence[int], mask_head: DynamicMaskHead, mask_feat_stride: int = 8,
                 score_threshold: float = 0.05, pre_nms_topk: int = 1000, nms_threshold: float = 0.6,
                 max_detections: int = 100, mask_threshold: float = 0.5, mask_chunk: int = 16) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.mask_head = mask_head
        self.mask_feat_stride = int(mask_feat_stride)
        self.score_threshold, self.pre_nms_topk = float(score_threshold), int(pre_nms_topk)
        self.nms_threshold, self.max_detections = float(nms_threshold), int(max_detections)
        self.mask_threshold, self.mask_chunk = float(mask_threshold), int(mask_chunk)

    def forward(self, outputs: dict, image_sizes: Sequence[tuple[int, int]],
                orig_sizes: Sequence[tuple[int, int]]) -> list[FrameDetections]:
        """Detections of every image of the batch.

        Args:
            outputs: the network's raw outputs (see ``CondInstNetwork.forward``).
            image_sizes: (h, w) of each resized image inside the padded batch.
            orig_sizes: (H, W) of each original frame; results are returned at this size.
        """
        return [self._single(outputs, i, image_sizes[i], orig_sizes[i]) for i in range(len(image_sizes))]

    def _candidates(self, outputs: dict, i: int) -> dict[str, Tensor]:
        cands: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "scores", "labels", "params", "locations",
                                                           "levels", "embeddings")}
        has_embed = "embeddings" in outputs
        for level, stride in enumerate(self.strides):
            cls = outputs["cls_logits"][level][i]
            h, w = cls.shape[-2:]
            prob = cls.sigmoid().reshape(cls.shape[0], -1).t() * outputs["ctrness"][level][i].sigmoid().reshape(-1, 1)
            loc_idx, labels = torch.nonzero(prob > self.score_threshold, as_tuple=True)
            scores = prob[loc_idx, labels]
            if scores.numel() > self.pre_nms_topk:
                scores, top = scores.topk(self.pre_nms_topk, sorted=False)
                loc_idx, labels = loc_idx[top], labels[top]
            locations = grid_locations(h, w, stride, cls.device)[loc_idx]
            reg = outputs["bbox_reg"][level][i].reshape(4, -1).t()[loc_idx] * stride
            cands["boxes"].append(torch.cat([locations - reg[:, :2], locations + reg[:, 2:]], dim=1))
            cands["scores"].append(torch.sqrt(scores))
            cands["labels"].append(labels)
            cands["params"].append(outputs["controller"][level][i].reshape(-1, h * w).t()[loc_idx])
            cands["locations"].append(locations)
            cands["levels"].append(torch.full_like(labels, level))
            if has_embed:
                emb = outputs["embeddings"][level][i]
                cands["embeddings"].append(emb.reshape(emb.shape[0], -1).t()[loc_idx])
        if not has_embed:
            del cands["embeddings"]
        return {k: torch.cat(v) for k, v in cands.items()}

    def _single(self, outputs: dict, i: int, image_size: tuple[int, int],
                orig_size: tuple[int, int]) -> FrameDetections:
        c = self._candidates(outputs, i)
        keep = batched_nms(c["boxes"], c["scores"], c["labels"], self.nms_threshold)[: self.max_detections]
        c = {k: v[keep] for k, v in c.items()}
        (h, w), (oh, ow) = image_size, orig_size
        boxes = c["boxes"] * torch.tensor([ow / w, oh / h, ow / w, oh / h], device=c["boxes"].device)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=ow)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=oh)
        nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        c = {k: v[nonempty] for k, v in c.items()}
        masks = self._masks(outputs["mask_feats"][i:i + 1], c, image_size, orig_size)
        return FrameDetections(
            boxes=boxes[nonempty].float(), scores=c["scores"].float(), labels=c["labels"].long(),
            image_size=(int(oh), int(ow)), masks=masks,
            embeddings=c["embeddings"].float() if "embeddings" in c else None)

    def _masks(self, mask_feats: Tensor, c: dict[str, Tensor], image_size: tuple[int, int],
               orig_size: tuple[int, int]) -> Tensor:
        n = c["params"].shape[0]
        oh, ow = orig_size
        out = torch.zeros((n, oh, ow), dtype=torch.bool, device=mask_feats.device)
        factor = self.mask_head.out_stride
        for start in range(0, n, self.mask_chunk):
            sl = slice(start, start + self.mask_chunk)
            count = c["params"][sl].shape[0]
            logits = self.mask_head(mask_feats, self.mask_feat_stride, c["params"][sl], c["locations"][sl],
                                    c["levels"][sl], torch.zeros(count, dtype=torch.int64, device=mask_feats.device))
            probs = aligned_bilinear(logits.sigmoid()[:, None], factor)[:, :, : image_size[0], : image_size[1]]
            probs = F.interpolate(probs, size=(oh, ow), mode="bilinear", align_corners=False)
            out[sl] = probs[:, 0] > self.mask_threshold
        return out
