"""crossvis: fast online video instance segmentation in PyTorch.

The package root stays light: the public API below is imported on first use, so
``import crossvis.backbones`` does not pull in the engine or the CLI.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "hookimpl": ("crossvis.hookspecs", "hookimpl"),
    "load_recipe": ("crossvis.recipes", "load_recipe"),
    "build_model": ("crossvis.models", "build_model"),
    "Predictor": ("crossvis.inference.predictor", "Predictor"),
    "OnlinePredictor": ("crossvis.inference.predictor", "OnlinePredictor"),
    "get_registry": ("crossvis.plugins", "get_registry"),
    "CrossVISError": ("crossvis.errors", "CrossVISError"),
    "ShapeSpec": ("crossvis.structures", "ShapeSpec"),
    "FrameDetections": ("crossvis.structures", "FrameDetections"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crossvis' has no attribute {name!r}")
