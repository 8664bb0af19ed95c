"""crossvis: fast online video instance segmentation in PyTorch.

The package root stays light: the public API below is imported on first use, so
``import crossvis.backbones`` does not pull in training, inference or the CLI.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__version__ = "0.1.0"


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``names[attr]`` (a module path) on first use.

    Packages use it as ``__getattr__ = lazy_attributes(__name__, {"Trainer": "crossvis.training.trainer"})``
    so that importing the package costs nothing until a name is used.
    """
    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


_LAZY = {
    "hookimpl": "crossvis.hookspecs",
    "load_recipe": "crossvis.recipes",
    "build_model": "crossvis.models",
    "Predictor": "crossvis.inference.predictor",
    "OnlinePredictor": "crossvis.inference.predictor",
    "get_registry": "crossvis.plugins",
    "CrossVISError": "crossvis.errors",
    "ShapeSpec": "crossvis.structures",
    "FrameDetections": "crossvis.structures",
}

__all__ = ["__version__", "lazy_attributes", *_LAZY]

__getattr__ = lazy_attributes(__name__, _LAZY)
