"""Tiny models and synthetic frames for the model tests (CPU, a few milliseconds per step)."""
from __future__ import annotations

import torch
from torch import nn

from crossvis.backbones import FPN
from crossvis.heads import FCOSHead, MaskBranch
from crossvis.models import CondInst, CrossVIS
from crossvis.structures import ShapeSpec


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyBackbone(nn.Module):
    """Five stride-2 conv stages; returns res3 (stride 8), res4 (16) and res5 (32)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(_stage(3, width), _stage(width, width))
        self.res3, self.res4, self.res5 = _stage(width, width), _stage(width, 2 * width), _stage(2 * width, 2 * width)
        self.width = width

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"res3": ShapeSpec(self.width, 8), "res4": ShapeSpec(2 * self.width, 16),
                "res5": ShapeSpec(2 * self.width, 32)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.res3(self.stem(x))
        c4 = self.res4(c3)
        return {"res3": c3, "res4": c4, "res5": self.res5(c4)}


def tiny_parts(num_classes: int = 2, embed_dim: int | None = None):
    backbone = TinyBackbone()
    neck = FPN(backbone.output_shape(), in_features=("res3", "res4", "res5"), out_channels=32, top_levels=0)
    head = FCOSHead(neck.output_shape(), num_classes=num_classes, num_convs=1, embed_dim=embed_dim)
    branch = MaskBranch(neck.output_shape(), channels=16, num_convs=1)
    return backbone, neck, head, branch


def tiny_condinst(num_classes: int = 2, **kwargs) -> CondInst:
    kwargs.setdefault("min_size_test", 64)
    kwargs.setdefault("max_size_test", 128)
    return CondInst(*tiny_parts(num_classes), **kwargs)


def tiny_crossvis(num_classes: int = 2, num_identities: int = 8, **kwargs) -> CrossVIS:
    kwargs.setdefault("min_size_test", 64)
    kwargs.setdefault("max_size_test", 128)
    backbone, neck, head, branch = tiny_parts(num_classes, embed_dim=16)
    return CrossVIS(backbone, neck, head, branch, num_identities=num_identities, **kwargs)


def frame(height: int, width: int, objects: list[tuple[str, tuple[int, int, int, int], int, int]],
          seed: int = 0) -> dict:
    """A frame sample: ``objects`` = (shape "rect" | "ellipse", (x0, y0, x1, y1), label, identity)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 40, (3, height, width), generator=g, dtype=torch.int64)
    masks, boxes, labels, ids = [], [], [], []
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    colours = [(230, 40, 40), (40, 60, 230), (40, 220, 60)]
    for shape, (x0, y0, x1, y1), label, identity in objects:
        if shape == "rect":
            m = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        else:
            cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            m = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        for c in range(3):
            image[c][m] = colours[label % 3][c]
        masks.append(m.to(torch.uint8))
        nz = torch.nonzero(m)
        boxes.append([nz[:, 1].min().item(), nz[:, 0].min().item(), nz[:, 1].max().item() + 1, nz[:, 0].max().item() + 1])
        labels.append(label)
        ids.append(identity)
    return {
        "image": image.to(torch.uint8),
        "instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.uint8),
            "ids": torch.tensor(ids, dtype=torch.int64),
        },
        "orig_size": (height, width), "video_id": 0, "frame_index": seed, "file_name": f"synthetic_{seed}.jpg",
    }


def empty_frame(height: int = 64, width: int = 64, seed: int = 0) -> dict:
    return frame(height, width, [], seed)
