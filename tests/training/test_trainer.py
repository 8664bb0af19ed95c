"""The training loop on a toy model: outputs, events, exact in-process resume, errors."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from engine_toys import ToyModel, ToyPairDataset, toy_recipe

from crossvis.training.trainer import Trainer
from crossvis.plugins import get_plugin_manager, hookimpl
from crossvis.errors import CrossVISError


def _losses(out: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    iters = [r["iter"] for r in records]
    assert iters == sorted(set(iters)), "every iteration must be logged exactly once"
    return {r["iter"]: {k: v for k, v in r.items() if k.startswith("loss_") or k in ("total_loss", "lr")}
            for r in records}


def _train(out, resume=False, **solver):
    torch.manual_seed(0)
    return Trainer(toy_recipe(**solver), out, resume=resume, model=ToyModel(),
                   train_dataset=ToyPairDataset()).train()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _train(out)
    return out


def test_a_run_writes_its_outputs(reference_run):
    out = reference_run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "last_checkpoint", "model_0000002.pth", "model_0000004.pth", "model_final.pth"]  # keep_last=2
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(set(v) == {"loss_cls", "loss_reg", "total_loss", "lr"} for v in losses.values())
    assert losses[1]["lr"] == pytest.approx(0.05 * 0.001)  # warmup starts at factor 0.001
    assert losses[5]["lr"] == pytest.approx(0.005)  # after the step at 4
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["model"] == {"num_classes": 3, "num_identities": 5}  # injected from the dataset
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(out / "checkpoints" / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 6 and ckpt["recipe"]["solver"]["max_iter"] == 6
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "sampler"}


class _StopAt:
    def __init__(self, iteration):
        self.iteration = iteration

    @hookimpl
    def crossvis_after_step(self, iteration):
        if iteration == self.iteration:
            raise KeyboardInterrupt  # not an Exception: the plugin manager does not swallow it


def test_resume_in_process_reproduces_the_uninterrupted_losses(reference_run, tmp_path):
    pm = get_plugin_manager()
    pm.add_plugin(_StopAt(5), name="stop-at-5")
    try:
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path)
    finally:
        pm.remove_plugin("stop-at-5")
    assert (tmp_path / "checkpoints" / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    with pytest.raises(CrossVISError, match="pass --resume"):
        _train(tmp_path)
    _train(tmp_path, resume=True)
    assert _losses(tmp_path) == _losses(reference_run)  # exact equality on CPU


def test_training_events_reach_plugins(tmp_path):
    seen = []

    class Recorder:
        @hookimpl
        def crossvis_train_start(self, trainer):
            seen.append(("start", trainer.iteration))

        @hookimpl
        def crossvis_after_step(self, trainer, iteration, metrics):
            seen.append(("step", iteration, sorted(metrics)))

        @hookimpl
        def crossvis_train_end(self, trainer):
            seen.append(("end", trainer.iteration))

    pm = get_plugin_manager()
    pm.add_plugin(Recorder(), name="recorder")
    try:
        _train(tmp_path, max_iter=2)
    finally:
        pm.remove_plugin("recorder")
    keys = ["data_time", "loss_cls", "loss_reg", "lr", "time", "total_loss"]
    assert seen == [("start", 0), ("step", 1, keys), ("step", 2, keys), ("end", 2)]


def test_nan_loss_is_a_clear_error(tmp_path):
    with pytest.raises(CrossVISError, match="loss became nan"):
        _train(tmp_path, base_lr=float("nan"), warmup_iters=0)


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    recipe = toy_recipe()
    recipe["runtime"]["tensorboard"] = True
    with pytest.raises(CrossVISError, match="pip install tensorboard"):
        Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset()).train()


def test_memory_format_probe_has_no_side_effects():
    from crossvis.training.memory_format import fastest_memory_format

    torch.manual_seed(0)
    model = ToyModel(norm="bn")
    batch = [ToyPairDataset()[i] for i in range(4)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    best, seconds = fastest_memory_format(model, batch, steps=1)
    assert best in ("contiguous", "channels_last") and set(seconds) == {"contiguous", "channels_last"}
    assert all(t > 0 for t in seconds.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert model.conv.weight.grad is None and model.conv.weight.is_contiguous()
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("chosen", ["contiguous", "channels_last"])
def test_auto_memory_format_is_measured_once_and_kept_on_resume(tmp_path, monkeypatch, chosen):
    """``auto`` trains in the measured layout and records it; a resume reuses it without measuring."""
    import crossvis.training.trainer as trainer_module

    calls = []

    def measured(model, batch, steps=2):
        calls.append(len(batch))
        return chosen, {"contiguous": 1.0, "channels_last": 0.5 if chosen == "channels_last" else 2.0}

    monkeypatch.setattr(trainer_module, "fastest_memory_format", measured)
    recipe = toy_recipe()
    recipe["runtime"]["memory_format"] = "auto"
    pm = get_plugin_manager()
    pm.add_plugin(_StopAt(3), name="stop-at-3")
    try:
        torch.manual_seed(0)
        with pytest.raises(KeyboardInterrupt):
            Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset()).train()
    finally:
        pm.remove_plugin("stop-at-3")
    assert calls == [4]
    ckpt = torch.load(tmp_path / "checkpoints" / "model_0000002.pth", weights_only=True)
    assert ckpt["memory_format"] == chosen
    torch.manual_seed(0)
    model = ToyModel()
    trainer = Trainer(recipe, tmp_path, resume=True, model=model, train_dataset=ToyPairDataset())
    assert trainer.memory_format == chosen and calls == [4]  # not measured again
    layout = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[chosen]
    assert model.conv.weight.is_contiguous(memory_format=layout)
    trainer.train()
    assert calls == [4]


def test_bad_memory_format_is_a_recipe_error(tmp_path):
    recipe = toy_recipe()
    recipe["runtime"]["memory_format"] = "nhwc"
    with pytest.raises(CrossVISError, match="runtime.memory_format must be contiguous, channels_last or auto"):
        Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset())
