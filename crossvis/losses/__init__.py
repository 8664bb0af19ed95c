"""Losses: FCOS detection losses, dice, and the CrossVIS crossover and embedding losses."""
from crossvis.losses.dice import dice_loss
from crossvis.losses.distributed import mean_over_processes
from crossvis.losses.fcos import FCOSLoss, centerness_targets, ltrb_giou_loss

__all__ = ["FCOSLoss", "ltrb_giou_loss", "centerness_targets", "dice_loss", "mean_over_processes"]
