"""Losses: FCOS detection losses, dice, and the CrossVIS crossover and embedding losses."""
from crossvis.losses.crossover import (combine_directions, crossover_dice_loss, match_identities,
                                       sample_partner_locations)
from crossvis.losses.dice import dice_loss
from crossvis.distributed import mean_over_processes
from crossvis.losses.embedding import (GlobalFocalEmbeddingLoss, GlobalSoftmaxEmbeddingLoss, PairwiseEmbeddingLoss,
                                       embedding_scale, proxy_logits)
from crossvis.losses.fcos import FCOSLoss, centerness_targets, ltrb_giou_loss

__all__ = ["FCOSLoss", "ltrb_giou_loss", "centerness_targets", "dice_loss", "mean_over_processes",
           "GlobalFocalEmbeddingLoss", "GlobalSoftmaxEmbeddingLoss", "PairwiseEmbeddingLoss", "embedding_scale",
           "proxy_logits", "match_identities", "sample_partner_locations", "combine_directions",
           "crossover_dice_loss"]
