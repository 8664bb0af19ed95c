"""A toy model and dataset for engine tests (the trainer does not care what it trains)."""
from __future__ import annotations

import torch
from torch import nn


class ToyPairDataset(torch.utils.data.Dataset):
    """``n`` frame-pair-like samples; odd indices are "portrait". Uses the global torch RNG for its
    "augmentation" so the tests see whether the engine keys that randomness per sample."""

    num_classes = 3
    num_identities = 5

    def __init__(self, n: int = 10, size: int = 8) -> None:
        g = torch.Generator().manual_seed(1234)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, self.num_classes, (n,), generator=g)
        self.epoch_seen: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def aspect_ratio_group(self, index: int) -> int:
        return index % 2

    def set_epoch(self, epoch: int) -> None:
        self.epoch_seen.append(epoch)

    def __getitem__(self, index: int) -> dict:
        noise = 0.1 * torch.rand(3, *self.images.shape[-2:])
        return {"image": self.images[index] + noise, "label": self.labels[index], "index": index}


class ToyModel(nn.Module):
    """conv → GroupNorm → pool → linear; two losses. Has a per-level-style ``Scale`` parameter."""

    def __init__(self, num_classes: int = 3, norm: str = "gn") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4) if norm == "gn" else nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([s["image"] for s in batch])
        y = torch.stack([s["label"] for s in batch])
        logits = self.fc(self.norm(self.conv(x)).relu().mean((2, 3))) * self.scale
        return {"loss_cls": nn.functional.cross_entropy(logits, y),
                "loss_reg": 0.01 * logits.pow(2).mean()}


def toy_recipe(**solver) -> dict:
    base = {"ims_per_batch": 4, "base_lr": 0.05, "max_iter": 6, "steps": [4], "warmup_iters": 2,
            "checkpoint_period": 2, "log_period": 2, "keep_last": 2}
    base.update(solver)
    return {"solver": base, "runtime": {"device": "cpu", "seed": 7, "num_workers": 0, "eval_at_end": False}}
