"""CrossVIS: CondInst trained on frame pairs with crossover learning and an identity embedding."""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from crossvis.heads.fcos_head import FCOSHead
from crossvis.heads.mask_branch import MaskBranch
from crossvis.losses.crossover import combine_directions, match_identities, sample_partner_locations
from crossvis.losses.embedding import GlobalFocalEmbeddingLoss
from crossvis.models.build import forwards_keywords
from crossvis.models.condinst import CondInst
from crossvis.models.criterion import Assignment, FrameTargets
from crossvis.models.network import flatten_levels
from crossvis.models.outputs import NetworkOutputs
from crossvis.errors import CrossVISError

__all__ = ["CrossVIS", "FrameSlot", "SlotEmbeddings"]


class FrameSlot(NamedTuple):
    """One frame slot of a pair batch (all anchors, or all references), ready for the losses.

    Attributes:
        outputs: the network outputs of the slot's B frames.
        targets: their ground truth (``ids`` set).
        assignment: FCOS targets of every location of the slot.
        gt_masks: float [G, Hp/4, Wp/4] the slot's batch-concatenated GT masks at stride 4.
    """

    outputs: NetworkOutputs
    targets: FrameTargets
    assignment: Assignment
    gt_masks: Tensor


class SlotEmbeddings(NamedTuple):
    """P embeddings of a slot (at its positive locations, or one per ground truth), the input of
    the pair-wise embedding losses.

    Attributes:
        embeddings: float [P, D]; identities: int64 [P] identity index of each one's instance;
        images: int64 [P] batch item (pair) of each one.
    """

    embeddings: Tensor
    identities: Tensor
    images: Tensor


class CrossVIS(CondInst):
    """CrossVIS (Yang et al., ICCV 2021) and its baselines, trained on frame pairs.

    Training: ``model(batch)`` with ``batch`` a list of ``{"anchor": frame, "reference": frame}``
    (frame samples per docs/contracts.md, ``instances.ids`` required) returns
    ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr`` (whatever ``fcos_loss`` returns),
    ``loss_mask`` (each the mean of the anchor-frame and reference-frame values),
    ``loss_cross_over`` (with ``crossover``) and
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
        settings: every keyword of :class:`CondInst` (``fcos_loss``, thresholds, input format, …),
            passed on unchanged; ``inspect.signature(CrossVIS)`` lists them (the official recipes
            set ``backbone_grad_scale: 0.1``).
    """

    @forwards_keywords(CondInst.__init__)
    def __init__(self, backbone: nn.Module, neck: nn.Module, head: FCOSHead,
                 mask_branch: Optional[MaskBranch] = None, embedding_loss: Optional[nn.Module] = None, *,
                 num_identities: Optional[int] = None, crossover: bool = True, **settings: Any) -> None:
        if head.embed_dim is None:
            raise CrossVISError("model type 'crossvis' needs an embedding tower: set model.head.embed_dim "
                                "(official 256)")
        super().__init__(backbone, neck, head, mask_branch, **settings)
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
        outputs = self.network(images)
        slots = []
        for sl in (slice(0, num_pairs), slice(num_pairs, 2 * num_pairs)):
            out = outputs.select(sl)
            tgt = FrameTargets(targets.boxes[sl], targets.labels[sl], targets.masks[sl], ids[sl])
            slots.append(FrameSlot(out, tgt, self.criterion.assign(out, tgt), self.criterion.stride4_masks(tgt, out)))

        losses: dict[str, Tensor] = {}
        for slot in slots:
            frame_losses = self.criterion.detection_losses(slot.outputs, slot.assignment)
            frame_losses["loss_mask"] = self.criterion.mask_loss(slot.outputs, slot.assignment, slot.gt_masks)
            for key, value in frame_losses.items():
                losses[key] = losses.get(key, 0.0) + 0.5 * value
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

    def _crossover_direction(self, src: FrameSlot, dst: FrameSlot) -> Tensor:
        """Mean dice of the source frames' dynamic filters drawing the partner instances on the destination frames."""
        src_asg, dst_asg = src.assignment, dst.assignment
        partner = torch.cat([_shift(match_identities(a, b), off)
                             for a, b, off in zip(src.targets.ids, dst.targets.ids, dst.targets.offsets())])
        src_samples = self.criterion.subsample(src_asg.positives)
        dst_samples = self.criterion.subsample(dst_asg.positives)
        src_partner = partner[src_asg.gt_inds[src_samples]]
        keep, chosen = sample_partner_locations(src_partner, dst_asg.gt_inds[dst_samples])
        params = flatten_levels(src.outputs.controller).reshape(-1, self.mask_head.num_params)
        picked = dst_samples[chosen[keep]]
        return self.criterion.dynamic_mask_loss(
            params[src_samples[keep]], dst.outputs.mask_feats, dst_asg.im_inds[picked],
            dst_asg.locations[picked], dst_asg.levels[picked], dst.gt_masks[src_partner[keep]])

    def _embedding_loss(self, slots: list[FrameSlot]) -> Tensor:
        per_slot = []
        for slot in slots:
            asg = slot.assignment
            emb = flatten_levels(slot.outputs.embeddings)
            emb = emb.reshape(-1, emb.shape[-1])[asg.positives]
            ids = torch.cat(slot.targets.ids)[asg.gt_inds[asg.positives]]
            per_slot.append(SlotEmbeddings(emb, ids, asg.im_inds[asg.positives]))
        if getattr(self.embedding_loss, "requires_proxies", False):
            emb = torch.cat([s.embeddings for s in per_slot])
            labels = torch.cat([s.identities for s in per_slot])
            return self.embedding_loss(emb, labels, self.proxies)
        anchor, reference = per_slot
        pairs = (anchor.embeddings, anchor.identities, reference.embeddings, reference.identities, anchor.images,
                 reference.images)
        if getattr(self.embedding_loss, "candidates", None) == "all":
            # every reference GT is a candidate (MaskTrack R-CNN), also those without positive locations
            return self.embedding_loss(*pairs, *_box_centre_embeddings(slots[1]))
        return self.embedding_loss(*pairs)


def _box_centre_embeddings(slot: FrameSlot) -> SlotEmbeddings:
    """Per GT of the slot's frames: the embedding at the finest-level location nearest its box
    centre (float [G, D]), its identity (int64 [G]) and its image index (int64 [G])."""
    tgt, asg = slot.targets, slot.assignment
    emb = flatten_levels(slot.outputs.embeddings)                 # [B, L, D]
    num_loc = emb.shape[1]
    finest = asg.locations[:num_loc][asg.levels[:num_loc] == 0]   # [L0, 2], the first L0 locations
    rows, ids, images = [], [], []
    for b, (boxes, gt_ids) in enumerate(zip(tgt.boxes, tgt.ids)):
        if boxes.shape[0] == 0:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        rows.append(emb[b, torch.cdist(centres.float(), finest.float()).argmin(dim=1)])
        ids.append(gt_ids.long())
        images.append(torch.full_like(gt_ids.long(), b))
    if not rows:
        none = torch.zeros(0, dtype=torch.long, device=emb.device)
        return SlotEmbeddings(emb.new_zeros((0, emb.shape[-1])), none, none)
    return SlotEmbeddings(torch.cat(rows), torch.cat(ids), torch.cat(images))


def _shift(index: Tensor, offset: int) -> Tensor:
    """Add ``offset`` to the valid (≥ 0) entries of an index vector; −1 stays −1."""
    return torch.where(index >= 0, index + offset, index)
