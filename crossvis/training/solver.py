"""Optimizer (SGD or AdamW, no weight decay on normalisation parameters) and the warmup
multi-step learning-rate schedule (detectron2's ``WarmupMultiStepLR`` semantics, by iteration)."""
from __future__ import annotations

import bisect
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from crossvis.recipes.sections import SolverConfig

__all__ = ["build_optimizer", "WarmupMultiStepLR", "no_decay_parameter_names"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _is_no_decay(module: nn.Module, param_name: str) -> bool:
    """Normalisation weights/biases and learned per-level scales (FCOS ``Scale``) get no decay."""
    return isinstance(module, _NORM_TYPES) or type(module).__name__ == "Scale" or param_name == "scale"


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters that ``solver.weight_decay_norm`` applies to."""
    names = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if p.requires_grad and _is_no_decay(module, p_name):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    """Two parameter groups: regular (``weight_decay``) and norm/scale (``weight_decay_norm``).

    Frozen parameters (``requires_grad=False``) are left out.
    """
    no_decay = no_decay_parameter_names(model)
    decay_params, norm_params = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (norm_params if name in no_decay else decay_params).append(p)
    groups = [{"params": decay_params, "weight_decay": cfg.weight_decay},
              {"params": norm_params, "weight_decay": cfg.weight_decay_norm}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.base_lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum)


class WarmupMultiStepLR(LRScheduler):
    """``lr(it) = base_lr * warmup(it) * gamma ** #{s in steps : s <= it}``.

    ``warmup(it) = warmup_factor * (1 - a) + a`` with ``a = it / warmup_iters`` for
    ``it < warmup_iters`` and 1 afterwards (linear warmup from ``warmup_factor``). ``it`` is the
    number of completed optimizer steps; call :meth:`step` once per iteration.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps: Iterable[int], gamma: float = 0.1,
                 warmup_iters: int = 1000, warmup_factor: float = 0.001, last_epoch: int = -1) -> None:
        self.steps = sorted(int(s) for s in steps)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        warm = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warm = self.warmup_factor * (1 - alpha) + alpha
        return warm * self.gamma ** bisect.bisect_right(self.steps, iteration)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
