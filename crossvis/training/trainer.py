"""The training loop: a plain class usable from Python and from ``crossvis train``.

Example:
    >>> from crossvis.recipes import load_recipe
    >>> recipe = load_recipe("examples/recipes/quickstart_synthetic.yaml", ["solver.max_iter=10"])
    >>> Trainer(recipe, "runs/demo").train()      # doctest: +SKIP

What a run writes to its output folder (rank 0 only): ``recipe.yaml`` (the resolved recipe with
the injected ``num_classes``/``num_identities``), ``metrics.jsonl``, ``checkpoints/`` (see
:mod:`crossvis.checkpoints`), ``loss_curve.png`` and, when ``data.test`` is set,
``eval/results.json`` and ``eval/metrics.json``.

Reproducibility: the data order and the augmentation of every sample are pure functions of
``(runtime.seed, iteration)`` (:mod:`crossvis.training.sampler`), and checkpoints carry the optimizer,
scheduler and random-generator states, so on CPU a run resumed from a checkpoint produces the
same per-iteration losses as an uninterrupted one.

Run folders are protected: a new run refuses a folder that already holds a run's outputs
(``recipe.yaml``, ``metrics.jsonl``, ``checkpoints/``, ...) unless ``resume`` (continue it) or
``force`` (start it over: the earlier run's outputs are deleted, ``*.broken`` checkpoints kept).
A resume removes the temporary files killed saves left, falls back past unreadable checkpoints
(renamed ``*.broken``) and refuses, naming the tensors, a checkpoint of a different model.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from crossvis import distributed as dist_utils
from crossvis.atomic import atomic_write_text, remove_stale_temporaries
from crossvis.checkpoints import load_checkpoint, load_weights, unwrap_model
from crossvis.checkpoints.conventions import (ALLOW_RANDOM_FROZEN_KEY, CONVENTIONS_KEY, check_frozen_initialisation,
                                  check_weight_conventions, model_conventions)
from crossvis.data.categories import check_declared_categories, declared_categories
from crossvis.threads import configure_threads
from crossvis.training.checkpointer import Checkpointer
from crossvis.recipes.sections import RuntimeConfig, SolverConfig, section
from crossvis.training.autotune import apply_memory_format, autocast, fastest_training_setup
from crossvis.training.metrics import MetricsLogger, plot_loss_curve
from crossvis.training.sampler import GroupedInfiniteBatchSampler, KeyedDataset, aspect_ratio_groups
from crossvis.training.seeding import get_rng_states, seed_everything, set_rng_states, worker_init_fn
from crossvis.training.solver import WarmupMultiStepLR, build_optimizer
from crossvis.errors import CrossVISError

__all__ = ["Trainer", "collate_as_list", "move_to_device", "RUN_OUTPUTS"]

logger = logging.getLogger(__name__)

#: training items (frame pairs) the ``auto`` setup probe times each candidate on: enough for the
#: convolutions to run at their batch efficiency, few enough that 4 candidates cost seconds
PROBE_ITEMS = 4

#: What a run writes into its folder (``force`` deletes these of an earlier run, nothing else).
RUN_OUTPUTS = ("recipe.yaml", "metrics.jsonl", "loss_curve.png", "checkpoints", "eval", "tensorboard")


def collate_as_list(batch: list[Any]) -> list[Any]:
    """The model takes a list of samples; the loader must not stack them."""
    return batch


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Recursively move every tensor in dicts/lists/tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(move_to_device(v, device) for v in obj)
    return obj


class Trainer:
    """Trains ``model`` on ``train_dataset`` by the recipe's ``solver:`` and ``runtime:`` sections.

    Args:
        recipe: the resolved recipe (a mapping, e.g. from :func:`crossvis.recipes.load_recipe`).
        output_dir: the run folder.
        resume: continue from the newest loadable checkpoint in ``output_dir/checkpoints`` (a
            fresh start when there is none).
        force: start a new run in a folder that holds an earlier run's outputs, deleting them
            (without it, and without ``resume``, such a folder is refused).
        model: a model to train instead of ``build_model(recipe, ...)``; it must map a list of
            samples to a dict of scalar ``loss_*`` tensors.
        train_dataset: a map-style dataset instead of the one built from ``data.train``; it may have
            ``aspect_ratio_group(i)``, ``set_epoch(e)``, ``num_classes``, ``num_identities``.

    Attributes useful to plugins (``crossvis_train_start/after_step/train_end`` receive the trainer):
        ``iteration`` (completed iterations), ``max_iter``, ``model``, ``optimizer``,
        ``scheduler``, ``output_dir``, ``rank``, ``world_size``, ``is_main``, ``recipe``.
    """

    def __init__(self, recipe: Mapping[str, Any], output_dir: Union[str, Path], *, resume: bool = False,
                 force: bool = False, model: Optional[nn.Module] = None,
                 train_dataset: Optional[Any] = None) -> None:
        self.recipe = recipe
        self.output_dir = Path(output_dir)
        self.solver: SolverConfig = section(recipe, "solver").scaled()
        self.runtime: RuntimeConfig = section(recipe, "runtime")
        configure_threads(self.runtime.num_threads)  # 0: the physical cores this process may use
        self.device = dist_utils.init_distributed(self.runtime.resolved_device())
        self.rank = dist_utils.get_rank()
        self.world_size = dist_utils.get_world_size()
        self.is_main = self.rank == 0
        self.max_iter = self.solver.max_iter
        self.iteration = 0
        self.checkpointer = Checkpointer(self.output_dir / "checkpoints", keep_last=self.solver.keep_last)
        self._replace = self._claim_output_dir(resume, force)
        seed_everything(self.runtime.seed)

        self.train_dataset = train_dataset if train_dataset is not None else self._build_train_dataset()
        check_declared_categories(declared_categories(recipe), getattr(getattr(self.train_dataset, "data", None),
                                  "categories", None), str(_get(recipe, "data.train.annotations", "data.train")))
        self.num_classes = getattr(self.train_dataset, "num_classes", None)
        self.num_identities = getattr(self.train_dataset, "num_identities", None)
        self.resolved_recipe = self._resolved_recipe()
        if model is None:
            from crossvis.models import build_model

            # the location-aware recipe, so a bad component names its recipe file:line
            model = build_model(self.recipe, num_classes=self.num_classes, num_identities=self.num_identities)
        model.to(self.device)
        # "auto" layout and precision are measured when training starts (train()); a resume takes
        # the checkpoint's. The probe is for one CPU process (DDP ranks must agree; on CUDA
        # channels-last is not measured and float16 autocast is the standard choice).
        self.memory_format = self.runtime.memory_format
        self.use_amp: Union[bool, str] = self.solver.amp
        if self.world_size > 1 or self.device.type != "cpu":
            if self.memory_format == "auto":
                self.memory_format = "contiguous"
            if self.use_amp == "auto":
                self.use_amp = self.device.type == "cuda"
        if self.device.type not in ("cpu", "cuda"):
            self.use_amp = False  # autocast is used on CPU (bfloat16) and CUDA (float16) only
        if self.memory_format != "auto":
            apply_memory_format(model, self.memory_format)
        weights = _get(recipe, "model.weights")
        if weights and not Path(weights).is_file():
            raise CrossVISError(f"recipe key model.weights: {weights} does not exist; convert the initial weights "
                                f"first (docs/training.md, 'Initialisation') or pass --set model.weights=PATH")
        loaded = load_weights(model, weights, report=self.is_main) if weights else None
        check_frozen_initialisation(model, loaded, allow=bool(_get(recipe, ALLOW_RANDOM_FROZEN_KEY)))
        self.optimizer = build_optimizer(model, self.solver)
        self.scheduler = WarmupMultiStepLR(self.optimizer, self.solver.steps, self.solver.gamma,
                                           self.solver.warmup_iters, self.solver.warmup_factor)
        # mixed precision: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU (bf16 has
        # float32's exponent range, so no loss scaling is needed)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp is True and self.device.type == "cuda" else None
        self._model = model
        if resume:
            self._resume()
        self.model = self._wrap(model)

    # -- construction helpers -------------------------------------------------------------------
    def _claim_output_dir(self, resume: bool, force: bool) -> list[str]:
        """Refuse a folder holding another run's outputs (unless resume/force); return what to replace."""
        from crossvis.inference.outputs import check_not_a_file

        check_not_a_file(self.output_dir)
        if resume:
            return []
        existing = [name for name in RUN_OUTPUTS if (self.output_dir / name).exists()]
        if not existing or force:
            return existing
        if self.checkpointer.latest() is not None:
            raise CrossVISError(f"{self.output_dir} already holds checkpoints; pass --resume (resume=True) to "
                                f"continue that run, --force to start it over, or choose another output folder")
        raise CrossVISError(f"{self.output_dir} already holds {', '.join(existing)} of another run; pass --resume "
                            f"to continue it, --force to replace it, or choose another output folder")

    def _remove_earlier_run(self) -> None:
        """``force``: delete the earlier run's outputs (``*.broken`` checkpoints are kept)."""
        import shutil

        for name in self._replace:
            path = self.output_dir / name
            if name == "checkpoints" and path.is_dir():
                for item in path.iterdir():
                    if ".broken" not in item.name:
                        shutil.rmtree(item) if item.is_dir() else item.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if self._replace:
            logger.info("--force: removed the earlier run's %s from %s", ", ".join(self._replace), self.output_dir)
        self._replace = []

    def _build_train_dataset(self) -> Any:
        from crossvis.training.datasets import build_train_dataset

        return build_train_dataset(self.recipe, seed=self.runtime.seed)

    def _resolved_recipe(self) -> dict[str, Any]:
        from crossvis.recipes import to_plain

        plain = to_plain(self.recipe)
        model = plain.setdefault("model", {})
        if self.num_classes is not None:
            model["num_classes"] = int(self.num_classes)
        if self.num_identities is not None:
            model["num_identities"] = int(self.num_identities)
        categories = getattr(getattr(self.train_dataset, "data", None), "categories", None)
        if categories:
            # the model's label space, so eval/demo name and number categories without the data
            plain.setdefault("data", {})["categories"] = [
                {"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in categories]
        return plain

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=self.runtime.find_unused_parameters)

    def _build_loader(self) -> DataLoader:
        groups = aspect_ratio_groups(self.train_dataset, self.runtime.aspect_ratio_grouping)
        self.sampler = GroupedInfiniteBatchSampler(groups, self.solver.ims_per_batch, self.runtime.seed,
                                                   start_iter=self.iteration, rank=self.rank,
                                                   world_size=self.world_size)
        generator = torch.Generator().manual_seed(self.runtime.seed + self.rank)
        return DataLoader(KeyedDataset(self.train_dataset, self.runtime.seed), batch_sampler=self.sampler,
                          num_workers=self.runtime.num_workers, collate_fn=collate_as_list,
                          worker_init_fn=worker_init_fn, generator=generator,
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=self.runtime.num_workers > 0)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (see :mod:`crossvis.checkpoints`)."""
        state = {"model": unwrap_model(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "iteration": self.iteration,
                 "recipe": self.resolved_recipe, "rng": get_rng_states(),
                 "sampler": {"seed": self.runtime.seed, "ims_per_batch": self.solver.ims_per_batch},
                 CONVENTIONS_KEY: model_conventions(unwrap_model(self.model)),
                 "memory_format": self.memory_format, "amp": self.use_amp}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save(self, name: str) -> Optional[Path]:
        """Write a checkpoint named ``name`` (rank 0 only; other ranks return None)."""
        if not self.is_main:
            return None
        return self.checkpointer.save(name, self.state_dict())

    def _resume(self) -> None:
        if self.is_main:
            for folder in (self.output_dir, self.checkpointer.directory, self.output_dir / "eval"):
                for tmp in remove_stale_temporaries(folder):
                    logger.info("removed %s, left by an interrupted save", tmp)
        path, ckpt, broken = self._newest_loadable_checkpoint()
        if path is None:
            if broken:
                raise CrossVISError(f"no checkpoint in {self.checkpointer.directory} can be loaded; the unreadable "
                                    f"ones were renamed {', '.join(p.name for p in broken)}; pass --force to "
                                    f"start this run over, or choose another --output")
            if self.is_main:
                logger.info("no checkpoint in %s; starting from scratch", self.checkpointer.directory)
            return
        if broken and self.is_main:
            self.checkpointer.point_to(path)
            logger.warning("resuming from %s, the newest checkpoint that loads", path.name)
        missing = [k for k in ("model", "optimizer", "scheduler", "iteration") if k not in ckpt]
        if missing:
            raise CrossVISError(f"{path} cannot be resumed from: it lacks {', '.join(missing)} "
                                f"(it holds weights only; use model.weights to start from it instead)")
        if not isinstance(ckpt["model"], Mapping):
            raise CrossVISError(f"{path} cannot be resumed from: its 'model' entry is not a state_dict")
        check_weight_conventions(self._model, ckpt, str(path))   # a resume with other --set conventions
        _check_same_model(path, ckpt["model"], self._model)
        self._model.load_state_dict(ckpt["model"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CrossVISError(f"{path} cannot be resumed with this recipe's solver (optimizer "
                                f"{self.solver.optimizer!r}): {str(exc).splitlines()[0][:200]}; the solver changed "
                                f"since the run started, so train into a new --output") from None
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        if self.memory_format == "auto":  # continue in the setup the run measured and trained in
            self.memory_format = str(ckpt.get("memory_format", "contiguous"))
            apply_memory_format(self._model, self.memory_format)
        if self.use_amp == "auto":
            self.use_amp = ckpt.get("amp") is True
        if "rng" in ckpt:
            set_rng_states(ckpt["rng"])
        saved = ckpt.get("sampler", {})
        now = {"seed": self.runtime.seed, "ims_per_batch": self.solver.ims_per_batch}
        if saved and saved != now and self.is_main:
            logger.warning("resuming with %s but %s was written with %s; the data order will differ from the "
                           "interrupted run", now, path.name, saved)
        if self.is_main:
            logger.info("resumed from %s at iteration %d/%d", path, self.iteration, self.max_iter)

    @property
    def _setup_pending(self) -> bool:
        return self.memory_format == "auto" or self.use_amp == "auto"

    def _choose_training_setup(self) -> None:
        """Time the ``auto`` layout/precision candidates on the first items of the training set and
        train in the fastest (crossvis/training/autotune.py)."""
        count = min(self.solver.ims_per_batch, PROBE_ITEMS, len(self.train_dataset))
        batch = move_to_device([self.train_dataset[i] for i in range(count)], self.device)
        layouts = ["contiguous", "channels_last"] if self.memory_format == "auto" else [self.memory_format]
        amps = [False, True] if self.use_amp == "auto" else [bool(self.use_amp)]
        if self.use_amp == "auto" and self.device.type == "cpu" and _no_native_bf16():
            # emulated bf16 is never the fastest (a Zen 2 EPYC: 2.9 s per step against 0.3 s in
            # float32); timing it only delays the start by two slow steps
            amps = [False]
        if self.is_main:
            logger.info("timing %d training setups (layout x precision) on the first %d items ...",
                        len(layouts) * len(amps), count)
        best, seconds = fastest_training_setup(self._model, batch, layouts, amps, device_type=self.device.type)
        self.memory_format, self.use_amp = best.memory_format, best.amp
        apply_memory_format(self._model, self.memory_format)
        if self.is_main:
            logger.info("training in %s, the fastest here (forward+backward: %s)", best,
                        ", ".join(f"{setup} {1000 * t:.0f} ms" for setup, t in seconds.items()))

    def _newest_loadable_checkpoint(self) -> tuple[Optional[Path], Optional[dict[str, Any]], list[Path]]:
        """``(path, checkpoint, set_aside)``: the first candidate that loads; unreadable ones are renamed."""
        broken: list[Path] = []
        for path in self.checkpointer.candidates():
            try:
                return path, load_checkpoint(path), broken
            except CrossVISError as exc:
                if not path.exists():  # another rank set it aside meanwhile
                    continue
                target = self.checkpointer.set_aside(path) if self.is_main else path
                broken.append(target)
                if self.is_main:
                    logger.warning("%s cannot be loaded (%s); renamed it to %s", path.name, exc, target.name)
        return None, None, broken

    # -- the loop -------------------------------------------------------------------------------
    def run_step(self, batch: list[Any]) -> dict[str, float]:
        """One optimizer step on ``batch`` (this rank's share); returns this rank's float losses."""
        batch = move_to_device(batch, self.device)
        with autocast(self.device.type, self.use_amp is True):  # "auto" not yet measured: fp32
            losses = self.model(batch)
        if not isinstance(losses, Mapping) or not losses:
            raise CrossVISError("the model's training forward must return a non-empty dict of loss_* tensors")
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.solver.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.solver.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def train(self) -> dict[str, Any]:
        """Run from ``self.iteration`` to ``max_iter``; save checkpoints; evaluate at the end.

        Returns:
            ``{"iteration": int, "final_checkpoint": Path | None, "metrics": dict | None}``
            (``metrics``: the end-of-training evaluation on ``data.test``, when it ran).
        """
        from crossvis.plugins import get_plugin_manager

        plugins = get_plugin_manager()
        if self.is_main:
            self._remove_earlier_run()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            from crossvis.recipes import dump_recipe

            atomic_write_text(self.output_dir / "recipe.yaml", dump_recipe(self.resolved_recipe))
        metrics_log = MetricsLogger(self.output_dir, self.max_iter, self.solver.log_period, start_iter=self.iteration,
                               tensorboard=self.runtime.tensorboard, enabled=self.is_main)
        plugins.call("crossvis_train_start", trainer=self)
        self.model.train()
        loader_iter = iter(self._build_loader()) if self.iteration < self.max_iter else None
        if self._setup_pending and loader_iter is not None:
            self._choose_training_setup()
        try:
            while self.iteration < self.max_iter:
                t0 = time.perf_counter()
                batch = _next_batch(loader_iter)
                data_time = time.perf_counter() - t0
                lr = self.optimizer.param_groups[0]["lr"]
                losses = self.run_step(batch)
                self.scheduler.step()
                self.iteration += 1
                losses = dist_utils.all_reduce_mean(losses, self.device)
                total = sum(losses.values())
                if not math.isfinite(total):
                    raise CrossVISError(f"the training loss became {total} at iteration {self.iteration} "
                                        f"({losses}); lower solver.base_lr or enable solver.clip_grad_norm")
                metrics = {**losses, "total_loss": total, "lr": lr, "time": time.perf_counter() - t0,
                           "data_time": data_time}
                metrics_log.log(self.iteration, metrics)
                plugins.call("crossvis_after_step", trainer=self, iteration=self.iteration, metrics=metrics)
                if self.iteration % self.solver.checkpoint_period == 0 and self.iteration < self.max_iter:
                    self.save(Checkpointer.periodic_name(self.iteration))
        finally:
            metrics_log.close()
        final = self.save("model_final.pth")
        plugins.call("crossvis_train_end", trainer=self)
        eval_metrics = None
        if self.is_main:
            plot_loss_curve(self.output_dir / "metrics.jsonl", self.output_dir / "loss_curve.png")
            if self.runtime.eval_at_end and _get(self.recipe, "data.test"):
                from crossvis.inference.runner import evaluate_on_test

                eval_metrics = evaluate_on_test(unwrap_model(self.model), self.resolved_recipe,
                                                self.output_dir / "eval", self.device)
        dist_utils.barrier()
        return {"iteration": self.iteration, "final_checkpoint": final, "metrics": eval_metrics}


def _next_batch(loader_iter: Any) -> Any:
    """``next(loader_iter)``; a CrossVISError raised in a DataLoader worker keeps its one-line message.

    torch re-raises a worker's exception as the same type with "Caught ... in DataLoader worker
    process K" and the worker's whole traceback as the message; only its last line is the user's.
    """
    try:
        return next(loader_iter)
    except CrossVISError as exc:
        text = str(exc)
        if not text.startswith("Caught "):
            raise
        marker = "CrossVISError: "
        cut = text.rfind(marker)
        raise CrossVISError(text[cut + len(marker):].strip() if cut >= 0 else text.splitlines()[0]) from None


def _check_same_model(path: Path, saved: Mapping[str, Any], model: nn.Module) -> None:
    """A CrossVISError naming the differing tensors when ``saved`` is not a state_dict of ``model``."""
    own = model.state_dict()
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in saved.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if not (shapes or missing or unexpected):
        return

    def listed(what: str, items: list[str]) -> str:
        more = f", ... ({len(items)} in all)" if len(items) > 3 else ""
        return f"{what}: {'; '.join(items[:3])}{more}"

    parts = [listed("shape differs", shapes)] if shapes else []
    parts += [listed("not in the checkpoint", missing)] if missing else []
    parts += [listed("not in the model", unexpected)] if unexpected else []
    raise CrossVISError(f"{path} was saved from a different model than the recipe now builds ({' | '.join(parts)}); "
                        f"the model changed since this run started: train into a new --output (add --set "
                        f"model.weights={path} to start from its matching tensors)")


def _get(recipe: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _no_native_bf16() -> bool:
    """Whether this CPU lacks native bf16 (AVX512-BF16 or AMX), as the inference backends see it."""
    from crossvis.inference.backends import backend_unavailable

    return backend_unavailable("bf16", torch.device("cpu")) is not None
