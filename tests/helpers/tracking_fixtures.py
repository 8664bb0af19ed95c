"""A tiny random-weight CrossVIS recipe and synthetic frames for the predictor/inference/demo tests."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

#: ResNet-18 + a 32-channel FPN; score_threshold 0 so that random weights still give detections.
TINY_RECIPE = {
    "model": {
        "type": "crossvis", "num_classes": 3, "min_size_test": 64, "max_size_test": 128,
        "score_threshold": 0.0, "max_detections": 4,
        "backbone": {"type": "resnet", "depth": 18, "norm": "FrozenBN"},
        "neck": {"type": "fpn", "in_features": ["res3", "res4", "res5"], "out_channels": 64},
        "head": {"type": "fcos", "num_convs": 1, "embed_dim": 16},
        "mask_branch": {"type": "condinst_mask_branch", "channels": 16, "num_convs": 1},
    },
    "runtime": {"device": "cpu"},
}


def tiny_recipe(**model_updates) -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["model"].update(model_updates)
    return recipe


def save_checkpoint(model: torch.nn.Module, path: Path, recipe: dict | None = None) -> Path:
    state = {"model": model.state_dict()}
    if recipe is not None:
        state["recipe"] = recipe
    torch.save(state, path)
    return path


def synthetic_frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Moving coloured discs on a gradient background, H×W×3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 96)], -1)
    frames = []
    for t in range(n):
        image = background.astype(np.uint8).copy()
        for k, color in enumerate([(230, 40, 40), (40, 200, 60)]):
            progress = t / max(n - 1, 1)
            cy, cx = h * (0.3 + 0.4 * k), w * (0.2 + 0.6 * progress if k == 0 else 0.8 - 0.5 * progress)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) * 0.15) ** 2] = color
        image = np.clip(image.astype(np.int16) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
        frames.append(image)
    return frames


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: far faster for tiny models on a small, shared CPU; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
