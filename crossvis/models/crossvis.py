"""CrossVIS: CondInst trained on frame pairs with crossover learning and an identity embedding."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch
from crossvis.losses.crossover import combine_directions, match_identities, sample_partner_locations
from crossvis.losses.embedding import GlobalFocalEmbeddingLoss
from crossvis.models.condinst import CondInst
from crossvis.models.preprocess import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD
from crossvis.models.criterion import FrameTargets
from crossvis.models.network import flatten_levels
from crossvis.errors import CrossVISError

__all__ = ["CrossVIS"]

_DETECTION_KEYS = ("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask")


class CrossVIS(CondInst):
    """CrossVIS (Yang et al., ICCV 2021) and its baselines, trained on frame pairs.

    Training: ``model(batch)`` with ``batch`` a list of ``{"anchor": frame, "reference": frame}``
    (frame samples per docs/contracts.md, ``instances.ids`` required) returns
    ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``, ``loss_mask`` (each the mean of the
    anchor-frame and reference-frame values), ``loss_cross_over`` (with ``crossover``) and
    ``loss_reid`` (the identity-embedding loss). Inference is CondInst's ``predict`` with the
    per-detection embedding filled in.

    Both frames of every pair run through the network in one batch; targets, losses and the
    ≤ ``max_proposals`` subsamples are computed per frame slot (all anchors, all references).

    Args:
        backbone, neck, head, mask_branch: as :class:`CondInst`; the head needs ``embed_dim``.
        embedding_loss: one of the embedding losses of :mod:`crossvis.losses.embedding`
            (default the official global sigmoid-focal loss). Losses with ``requires_proxies``
            train the identity proxies ``proxies = Linear(embed_dim, num_identities)``.
        num_identities: M, the number of identity tracks of the training data (injected from the
            dataset). It may be left out for inference-only use; training then raises.
        crossover: add the crossover loss ``loss_cross_over`` (paper §3.2, official code).
        other keywords: as :class:`CondInst` (the official recipes set ``backbone_grad_scale: 0.1``).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: FCOSHead,
                 mask_branch: Optional[MaskBranch] = None, embedding_loss: Optional[nn.Module] = None, *,
                 num_identities: Optional[int] = None, crossover: bool = True,
                 sizes_of_interest: Optional[Sequence[float]] = None, center_sampling_radius: float = 1.5,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, max_proposals: int = 500,
                 mask_head_channels: int = 8, mask_head_layers: int = 3, rel_coords: bool = True,
                 backbone_grad_scale: float = 1.0,
                 pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN, pixel_std: Sequence[float] = IMAGENET_RGB_STD,
                 input_format: str = "RGB", size_divisibility: int = 32,
                 min_size_test: int = 360, max_size_test: int = 640,
                 score_threshold: float = 0.05, pre_nms_topk: int = 1000, nms_threshold: float = 0.6,
                 max_detections: int = 100, mask_threshold: float = 0.5) -> None:
        if head.embed_dim is None:
            raise CrossVISError("model type 'crossvis' needs an embedding tower: set model.head.embed_dim "
                                "(official 256)")
        super().__init__(
            backbone, neck, head, mask_branch, sizes_of_interest=sizes_of_interest,
            center_sampling_radius=center_sampling_radius, focal_alpha=focal_alpha, focal_gamma=focal_gamma,
            max_proposals=max_proposals, mask_head_channels=mask_head_channels, mask_head_layers=mask_head_layers,
            rel_coords=rel_coords, backbone_grad_scale=backbone_grad_scale, pixel_mean=pixel_mean,
            pixel_std=pixel_std, input_format=input_format, size_divisibility=size_divisibility,
            min_size_test=min_size_test, max_size_test=max_size_test, score_threshold=score_threshold,
            pre_nms_topk=pre_nms_topk, nms_threshold=nms_threshold, max_detections=max_detections,
            mask_threshold=mask_threshold)
        self.embedding_loss = embedding_loss if embedding_loss is not None else GlobalFocalEmbeddingLoss()
        self.crossover = bool(crossover)
        self.num_identities = int(num_identities) if num_identities is not None else None
        self.proxies: Optional[nn.Linear] = None
        if getattr(self.embedding_loss, "requires_proxies", False) and self.num_identities is not None:
            self.proxies = nn.Linear(head.embed_dim, self.num_identities)
            nn.init.normal_(self.proxies.weight, std=0.01)
            nn.init.constant_(self.proxies.bias, -math.log(99.0))

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: Sequence[dict]) -> dict[str, Tensor]:
        """Losses of a batch of frame pairs (see the class docstring)."""
        if getattr(self.embedding_loss, "requires_proxies", False) and self.proxies is None:
            raise CrossVISError("the CrossVIS model was built without num_identities, which training needs: "
                                "it comes from the training data (data.train) or set model.num_identities")
        anchors, references = [], []
        for i, pair in enumerate(batch):
            if not isinstance(pair, dict) or "anchor" not in pair or "reference" not in pair:
                raise CrossVISError(f"training item {i} is not a frame pair {{'anchor': ..., 'reference': ...}}; "
                                    f"CrossVIS models train on a pair dataset (data.train)")
            anchors.append(pair["anchor"])
            references.append(pair["reference"])
        num_pairs = len(anchors)
        images, targets = self.prepare_frames(anchors + references)
        ids = self._identity_ids(targets, anchors + references)
        set_pairs = getattr(self.network.neck, "set_frame_pairs", None)  # hook: temporal necks (crossvis.calibration)
        if set_pairs is not None:
            set_pairs(num_pairs)
        try:
            outputs = self.network(images)
        finally:
            if set_pairs is not None:
                set_pairs(None)
        slots = []
        for sl in (slice(0, num_pairs), slice(num_pairs, 2 * num_pairs)):
            out = _slice_outputs(outputs, sl)
            tgt = FrameTargets(targets.boxes[sl], targets.labels[sl], targets.masks[sl], ids[sl])
            slots.append((out, tgt, self.criterion.assign(out, tgt), self.criterion.stride4_masks(tgt, out)))

        losses: dict[str, Tensor] = {}
        for out, tgt, assignment, gt4 in slots:
            frame_losses = self.criterion.detection_losses(out, assignment)
            frame_losses["loss_mask"] = self.criterion.mask_loss(out, assignment, gt4)
            for key in _DETECTION_KEYS:
                losses[key] = losses.get(key, 0.0) + 0.5 * frame_losses[key]
        if self.crossover:
            losses["loss_cross_over"] = combine_directions(self._crossover_direction(slots[0], slots[1]),
                                                           self._crossover_direction(slots[1], slots[0]))
        losses["loss_reid"] = self._embedding_loss(slots)
        return losses

    def _identity_ids(self, targets: FrameTargets, frames: Sequence[dict]) -> list[Tensor]:
        if targets.ids is None:
            raise CrossVISError("CrossVIS training frames need instances.ids (identity index per instance); "
                                "use a video dataset for data.train")
        for i, ids in enumerate(targets.ids):
            if ids.numel() != targets.boxes[i].shape[0]:
                raise CrossVISError(f"frame {frames[i].get('file_name', i)}: instances.ids has {ids.numel()} "
                                    f"entries for {targets.boxes[i].shape[0]} boxes")
            if self.num_identities is None or ids.numel() == 0:
                continue
            bad = ids[(ids < 0) | (ids >= self.num_identities)]
            if bad.numel():
                raise CrossVISError(
                    f"frame {frames[i].get('file_name', i)}: identity id {int(bad[0])} is outside "
                    f"0..{self.num_identities - 1}; model.num_identities must be the training data's number "
                    f"of instance tracks (it is injected from data.train)")
        return targets.ids

    def _crossover_direction(self, src: tuple, dst: tuple) -> Tensor:
        """Mean dice of the source frames' dynamic filters drawing the partner instances on the destination frames."""
        src_out, src_tgt, src_asg, _ = src
        dst_out, dst_tgt, dst_asg, dst_gt4 = dst
        partner = torch.cat([_shift(match_identities(a, b), off)
                             for a, b, off in zip(src_tgt.ids, dst_tgt.ids, dst_tgt.offsets())])
        src_samples = self.criterion.subsample(src_asg.positives)
        dst_samples = self.criterion.subsample(dst_asg.positives)
        src_partner = partner[src_asg.gt_inds[src_samples]]
        keep, chosen = sample_partner_locations(src_partner, dst_asg.gt_inds[dst_samples])
        params = flatten_levels(src_out["controller"]).reshape(-1, self.mask_head.num_params)
        picked = dst_samples[chosen[keep]]
        return self.criterion.dynamic_mask_loss(
            params[src_samples[keep]], dst_out["mask_feats"], dst_asg.im_inds[picked],
            dst_asg.locations[picked], dst_asg.levels[picked], dst_gt4[src_partner[keep]])

    def _embedding_loss(self, slots: list[tuple]) -> Tensor:
        if getattr(self.embedding_loss, "dense_inputs", False):  # hook: dense losses (crossvis.association)
            dense = [(flatten_levels(out["embeddings"]), _location_identities(tgt, asg, out["embeddings"][0].shape[0]))
                     for out, tgt, asg, _ in slots]
            return self.embedding_loss(*dense[0], *dense[1], proxies=self.proxies)
        per_slot = []
        for out, tgt, asg, _ in slots:
            emb = flatten_levels(out["embeddings"])
            emb = emb.reshape(-1, emb.shape[-1])[asg.positives]
            ids = torch.cat(tgt.ids)[asg.gt_inds[asg.positives]]
            per_slot.append((emb, ids, asg.im_inds[asg.positives]))
        if getattr(self.embedding_loss, "requires_proxies", False):
            emb = torch.cat([s[0] for s in per_slot])
            labels = torch.cat([s[1] for s in per_slot])
            return self.embedding_loss(emb, labels, self.proxies)
        (a_emb, a_ids, a_grp), (r_emb, r_ids, r_grp) = per_slot
        return self.embedding_loss(a_emb, a_ids, r_emb, r_ids, a_grp, r_grp)


def _location_identities(targets: FrameTargets, assignment: Any, batch: int) -> Tensor:
    """Identity of every location, int64 [B, L] (−1 background), for dense embedding losses."""
    identities = torch.full_like(assignment.gt_inds, -1)
    pos = assignment.positives
    identities[pos] = torch.cat(targets.ids)[assignment.gt_inds[pos]]
    return identities.reshape(batch, -1)


def _shift(index: Tensor, offset: int) -> Tensor:
    """Add ``offset`` to the valid (≥ 0) entries of an index vector; −1 stays −1."""
    return torch.where(index >= 0, index + offset, index)


def _slice_outputs(outputs: dict, sl: slice) -> dict:
    """The network outputs of batch items ``sl`` (per-level lists are sliced level by level)."""
    return {k: [v[sl] for v in val] if isinstance(val, list) else val[sl] for k, val in outputs.items()}
