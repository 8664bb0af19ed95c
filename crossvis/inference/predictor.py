"""Online video inference: a model, a tracker and a results accumulator behind one object."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from crossvis.structures import CrossVISError, FrameDetections, TrackedInstances
from crossvis.trackers import CrossVISTracker, VideoAccumulator

__all__ = ["OnlinePredictor", "Predictor", "FrameRunner", "build_tracker", "load_model_weights",
           "recipe_categories"]

RecipeLike = Union[str, os.PathLike, Mapping[str, Any]]
FrameRunner = Callable[[list[Tensor]], list[FrameDetections]]
"""``runner(images) -> detections``: uint8 RGB [3, H, W] frames on the predictor's device → one
:class:`~crossvis.structures.FrameDetections` per frame at its own size (``model.predict``, or a
:class:`~crossvis.inference.fast.FastInference`)."""


class OnlinePredictor:
    """Runs a VIS model online over the frames of a video and tracks its detections, from parts.

    Example::

        predictor = OnlinePredictor(model, tracker=CrossVISTracker(), categories=categories)
        for instances in predictor.track(frames):        # H×W×3 uint8 RGB numpy arrays
            instances.track_ids, instances.masks          # int64 [N], bool [N, H, W]
        entries = predictor.video_results(video_id=1)      # YouTube-VIS result entries

    Args:
        model: a model with ``predict(list[uint8 [3, H, W]]) -> list[FrameDetections]`` (and
            ``num_classes``); switched to eval mode and moved to ``device``.
        tracker: an object with ``reset()`` and ``update(FrameDetections) -> int64 [N]`` ids
            (−1 = dropped); default the official CrossVIS rule (:class:`~crossvis.trackers.CrossVISTracker`).
        categories: the model's categories (``{"id", "name"}`` dicts sorted by id; label ``i`` is
            ``categories[i]``), or None for category ids ``label + 1``; annotation categories
            given later to :meth:`set_categories` must be the same ones.
        device: where the model runs; default the device of its first parameter (CPU without any).
        runner: the per-frame detector, see :data:`FrameRunner`; default: for a CondInst-style
            model without per-stream state, ``model.predict``'s steps with the network in float32
            in the layout measured fastest on the first frame (``autotune.default_runner``),
            else ``model.predict``.
            :class:`~crossvis.inference.fast.FastInference` is the fast one.

    Attributes:
        model, tracker, runner, device: as given (resolved).
        accumulator: the :class:`~crossvis.trackers.VideoAccumulator` of the current video.
        class_names: category names by 0-based label (from ``categories``), or None.
    """

    def __init__(self, model: nn.Module, tracker: Optional[Any] = None, categories: Optional[list[dict]] = None,
                 device: Optional[Union[str, torch.device]] = None, runner: Optional[FrameRunner] = None) -> None:
        self.device = torch.device(device) if device is not None else _parameter_device(model)
        self.model = model.eval().to(self.device)
        if runner is None:
            from crossvis.inference.autotune import default_runner

            # float32, in the layout measured fastest here (contiguous or channels-last, batch
            # norms folded; crossvis/inference/autotune.py); model.predict for other models
            runner = default_runner(self.model) or self.model.predict
        self.runner: FrameRunner = runner
        self.tracker = tracker if tracker is not None else CrossVISTracker()
        self._categories = categories  # the model's own; later annotation categories must match them
        self.set_categories(categories)

    def set_categories(self, categories: Optional[list[dict]]) -> None:
        """Use annotation ``categories`` (``{"id", "name"}`` dicts sorted by id; label ``i`` is
        ``categories[i]``) for category ids and names; ``None`` means ids ``label + 1``."""
        from crossvis.data.categories import check_declared_categories

        if categories is not self._categories:   # annotation categories must be the recipe's declared ones
            check_declared_categories(self._categories, categories, "the annotations")
        if categories is not None and len(categories) != getattr(self.model, "num_classes", len(categories)):
            raise CrossVISError(f"the annotations have {len(categories)} categories but the model predicts "
                                f"{self.model.num_classes} classes; set model.num_classes to match the data")
        self.class_names = None if categories is None else [str(c.get("name", c["id"])) for c in categories]
        self.accumulator = VideoAccumulator(None if categories is None else [int(c["id"]) for c in categories])

    # -- public API -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video: forget the tracks and the accumulated results."""
        self.tracker.reset()
        self.accumulator.reset()
        from crossvis.inference.autotune import stateful_modules

        for module in stateful_modules(self.model):  # temporal necks (crossvis.calibration) forget the last frame
            module.reset_stream()

    def track(self, frames: Iterable[np.ndarray]) -> Iterator[TrackedInstances]:
        """Track the instances of one video, frame by frame (the state is reset first).

        Args:
            frames: H×W×3 uint8 RGB arrays of one video, in order (any size, may vary).

        Yields:
            per frame a :class:`~crossvis.structures.TrackedInstances` on the CPU: ``track_ids``
            int64 [N], ``scores`` float32 [N], ``labels`` int64 [N] (category id =
            ``accumulator.category_id(label)``), ``boxes`` float32 [N, 4], ``masks`` bool [N, H, W]
            at the frame's size. Detections the tracker dropped are not included. The tensors are
            created under ``torch.inference_mode``: read them freely, ``clone()`` before editing
            them in place.
        """
        self.reset()
        for index, frame in enumerate(frames):
            image = _to_chw_tensor(frame, index)
            with torch.inference_mode():
                det = self.runner([image.to(self.device)])[0].to("cpu")
                ids = self.tracker.update(det).to("cpu")
                keep = (ids >= 0).nonzero().flatten()
                # masks are made for the kept detections only (a model's pending masks)
                instances = TrackedInstances.from_detections(det.select(keep), ids[keep])
                self.accumulator.add(instances, instances.track_ids)
            yield instances

    def video_results(self, video_id: int) -> list[dict]:
        """The current video's YouTube-VIS result entries (one per track)."""
        return self.accumulator.results(video_id)

    def category_name(self, label: int) -> str:
        """A display name for a 0-based label."""
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return f"class {label}"


class Predictor(OnlinePredictor):
    """An :class:`OnlinePredictor` built from a recipe (and a checkpoint).

    Example::

        predictor = Predictor("examples/recipes/crossvis_R50_1x.yaml", checkpoint="model_final.pth")
        for instances in predictor.track(frames):        # H×W×3 uint8 RGB numpy arrays
            instances.track_ids, instances.masks          # int64 [N], bool [N, H, W]
        entries = predictor.video_results(video_id=1)      # YouTube-VIS result entries

    Args:
        recipe: a recipe path or a loaded recipe. ``recipe["model"]`` builds the model;
            ``recipe["tracker"]`` (optional, ``{type: crossvis | masktrack, ...}``) the tracker,
            default the official CrossVIS rule.
        checkpoint: a ``.pth`` whose model weights (``ckpt["model"]`` or a bare state dict) must
            match the model exactly; ``None`` keeps the random initialisation.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:K"``; default ``recipe.runtime.device`` (``auto``:
            CUDA when available).
        fast: run frames through :class:`crossvis.inference.autotune.TunedInference`: on the
            first frames it times the network backends available here (fp32, channels-last,
            bf16, ONNX Runtime, OpenVINO, ...), keeps the fastest whose masks agree with fp32
            (mean IoU ≥ 0.98) and caches the choice per machine; post-processing stays fp32.
            Also switched on by the recipe's ``inference: {fast: true}`` (options from that
            section, e.g. ``backend: bf16`` to pin one).

    ``num_classes`` / ``num_identities`` come from ``recipe.model``, else the checkpoint's embedded
    recipe, else the recipe's annotation files (``data.train``, then ``data.test``).

    Attributes:
        recipe: the loaded recipe; fast: whether the fast runner is used; the others as
        :class:`OnlinePredictor` (``class_names`` from the recipe's annotations).
    """

    def __init__(self, recipe: RecipeLike, checkpoint: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[Union[str, torch.device]] = None, fast: bool = False) -> None:
        from crossvis.inference.autotune import TunedInference, autotune_settings
        from crossvis.models import build_model
        from crossvis.recipes import load_recipe

        if not isinstance(recipe, (str, os.PathLike, Mapping)):
            raise CrossVISError(f"Predictor: recipe must be a path or a mapping, got {type(recipe).__name__}")
        self.recipe = load_recipe(recipe)
        from crossvis.recipes.sections import section
        from crossvis.inference.allocator import keep_freed_memory
        from crossvis.threads import configure_threads

        # runtime.num_threads (0: the physical cores this process may use that other processes
        # leave free; oversubscribed cores make CPU inference many times slower)
        self.num_threads = configure_threads(section(self.recipe, "runtime").num_threads, load_aware=True)
        keep_freed_memory()   # no page faults for the same large maps at every frame (allocator.py)
        device = torch.device(device if device is not None else _recipe_device(self.recipe))
        ckpt = _read_checkpoint(checkpoint) if checkpoint is not None else None
        categories = recipe_categories(self.recipe)
        model: nn.Module = build_model(self.recipe, **_wiring(self.recipe, ckpt, categories))
        if ckpt is not None:
            load_model_weights(model, ckpt, str(checkpoint))
        model.eval().to(device)
        enabled, settings = autotune_settings(self.recipe)
        self.fast = bool(fast) or enabled
        # the fast path measures its candidate backends on the first frames and keeps the fastest
        # that passes the accuracy guard (cached per machine; crossvis/inference/autotune.py)
        runner = TunedInference(model, settings) if self.fast else None
        super().__init__(model, tracker=build_tracker(self.recipe), categories=categories, device=device,
                         runner=runner)


# -- helpers ---------------------------------------------------------------------------------------
def _to_chw_tensor(frame: Any, index: int) -> Tensor:
    if isinstance(frame, Tensor):
        frame = frame.numpy()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise CrossVISError(f"Predictor.track: frame {index} must be an H×W×3 uint8 RGB numpy array, "
                            f"got {dtype} with shape {shape}")
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)


def _recipe_device(recipe: Mapping[str, Any]) -> str:
    from crossvis.recipes.sections import section

    return section(recipe, "runtime").resolved_device()


def _parameter_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def build_tracker(recipe: Mapping[str, Any]) -> Any:
    """The tracker of ``recipe["tracker"]`` (``{type: crossvis | masktrack, ...}``, registry kind
    ``tracker``); without that key the official CrossVIS rule.

    Raises:
        CrossVISError: for a node that is not a mapping with a ``type``, or an unknown tracker.
    """
    node = recipe.get("tracker")
    if node is None:
        return CrossVISTracker()
    from crossvis.recipes import build

    if not isinstance(node, Mapping) or "type" not in node:
        raise CrossVISError("recipe key tracker must be a mapping like {type: crossvis} or {type: masktrack}")
    return build("tracker", node, where=getattr(node, "path", None) or "tracker")


def _read_checkpoint(path: Union[str, os.PathLike]) -> dict[str, Any]:
    from crossvis.checkpoints import load_checkpoint

    return load_checkpoint(Path(path))


def recipe_categories(recipe: Mapping[str, Any]) -> Optional[list[dict]]:
    """The model's categories (``{"id", "name"}`` sorted by id): ``data.categories`` as written by
    ``crossvis train``, else those of the recipe's test or train annotation file, if readable."""
    from crossvis.data import load_vis_annotations

    data = recipe.get("data") if isinstance(recipe.get("data"), Mapping) else {}
    if isinstance(data.get("categories"), list) and data["categories"]:
        return [dict(c) for c in data["categories"]]
    for split in ("test", "train"):
        node = data.get(split)
        path = node.get("annotations") if isinstance(node, Mapping) else None
        if path and Path(path).is_file():
            return list(load_vis_annotations(Path(path)).categories)
    return None


def _wiring(recipe: Mapping[str, Any], ckpt: Optional[Mapping[str, Any]],
            categories: Optional[list[dict]]) -> dict[str, int]:
    """num_classes / num_identities not set in ``recipe.model``, from the checkpoint or the data."""
    model_node = recipe.get("model") if isinstance(recipe.get("model"), Mapping) else {}
    ckpt_recipe = ckpt.get("recipe") if ckpt is not None and isinstance(ckpt.get("recipe"), Mapping) else {}
    ckpt_model = ckpt_recipe.get("model") if isinstance(ckpt_recipe.get("model"), Mapping) else {}
    wiring: dict[str, int] = {}
    for key in ("num_classes", "num_identities"):
        if model_node.get(key) is None and ckpt_model.get(key) is not None:
            wiring[key] = int(ckpt_model[key])
    if model_node.get("num_classes") is None and "num_classes" not in wiring and categories is not None:
        wiring["num_classes"] = len(categories)
    return wiring


def load_model_weights(model: nn.Module, ckpt: Mapping[str, Any], source: str) -> None:
    """Load ``ckpt``'s model weights into ``model``, requiring the same keys and shapes.

    Raises:
        CrossVISError: naming ``source`` and the first mismatching keys.
    """
    from crossvis.checkpoints import extract_state_dict
    from crossvis.checkpoints.conventions import check_weight_conventions

    incoming = extract_state_dict(ckpt, source)
    check_weight_conventions(model, ckpt, source, incoming)
    own = model.state_dict()
    missing = [k for k in own if k not in incoming]
    unexpected = [k for k in incoming if k not in own]
    shapes = [f"{k} {tuple(incoming[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in incoming and incoming[k].shape != own[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise CrossVISError(f"checkpoint {source} does not match the recipe's model ({'; '.join(problems)}); "
                            "use the recipe the checkpoint was trained with, or convert the checkpoint")
    model.load_state_dict(incoming, strict=True)
