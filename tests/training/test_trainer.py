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


def test_training_setup_probe_has_no_side_effects():
    from crossvis.training.autotune import TrainingSetup, fastest_training_setup

    torch.manual_seed(0)
    model = ToyModel(norm="bn")
    batch = [ToyPairDataset()[i] for i in range(4)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    best, seconds = fastest_training_setup(model, batch, ["contiguous", "channels_last"], [False, True], steps=1)
    assert set(seconds) == {TrainingSetup(f, a) for f in ("contiguous", "channels_last") for a in (False, True)}
    assert best in seconds and all(t > 0 for t in seconds.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert model.conv.weight.grad is None and model.conv.weight.is_contiguous()
    assert torch.equal(torch.get_rng_state(), rng)


class _FakeClock:
    """A ``time`` stand-in whose ``perf_counter`` moves only when a model step advances it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def __deepcopy__(self, memo):  # the probe times deep copies of the model: they share one clock
        return self


class _SlowUnlessBf16(torch.nn.Module):
    """A model whose training step takes ``fp32_s`` seconds in float32 and ``bf16_s`` under autocast,
    on ``clock`` (a fake clock, so the test is exact on a loaded machine)."""

    def __init__(self, fp32_s, bf16_s, clock):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.fp32_s, self.bf16_s, self.clock = fp32_s, bf16_s, clock

    def forward(self, batch):
        self.clock.now += self.bf16_s if torch.is_autocast_enabled("cpu") else self.fp32_s
        return {"loss": self.weight * 1.0}


@pytest.mark.parametrize("bf16_s, chosen", [(0.01, True), (0.048, False), (0.0474, True), (0.2, False)])
def test_probe_picks_bf16_only_when_clearly_faster(bf16_s, chosen, monkeypatch):
    """The baseline (float32) keeps a tie or a gain under the 5% margin; a clear gain wins."""
    import crossvis.training.autotune as autotune
    from crossvis.training.autotune import TrainingSetup, fastest_training_setup

    clock = _FakeClock()
    monkeypatch.setattr(autotune, "time", clock)
    model = _SlowUnlessBf16(0.05, bf16_s, clock)
    best, seconds = fastest_training_setup(model, [], ["contiguous"], [False, True])
    assert best == TrainingSetup("contiguous", chosen)
    assert seconds[TrainingSetup("contiguous", True)] == pytest.approx(bf16_s)
    assert seconds[TrainingSetup("contiguous", False)] == pytest.approx(0.05)


def test_auto_precision_skips_bf16_where_the_cpu_only_emulates_it(tmp_path, monkeypatch):
    import crossvis.training.trainer as trainer_module
    from crossvis.training.autotune import TrainingSetup

    calls = []

    def measured(model, batch, memory_formats, amps, steps=2, device_type="cpu"):
        calls.append(list(amps))
        return TrainingSetup(memory_formats[0], False), {TrainingSetup(memory_formats[0], False): 1.0}

    monkeypatch.setattr(trainer_module, "fastest_training_setup", measured)
    monkeypatch.setattr(trainer_module, "_no_native_bf16", lambda: True)
    recipe = toy_recipe()
    recipe["solver"]["amp"] = "auto"
    recipe["solver"]["max_iter"] = 1
    torch.manual_seed(0)
    trainer = Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset())
    trainer.train()
    assert calls == [[False]] and trainer.use_amp is False


@pytest.mark.parametrize("chosen", [("contiguous", False), ("channels_last", True)])
def test_auto_setup_is_measured_once_and_kept_on_resume(tmp_path, monkeypatch, chosen):
    """``auto`` trains in the measured layout and precision and records them; a resume reuses them
    without measuring."""
    import crossvis.training.trainer as trainer_module
    from crossvis.training.autotune import TrainingSetup

    calls = []

    def measured(model, batch, memory_formats, amps, steps=2, device_type="cpu"):
        calls.append((len(batch), list(memory_formats), list(amps)))
        return TrainingSetup(*chosen), {TrainingSetup(*chosen): 1.0}

    monkeypatch.setattr(trainer_module, "fastest_training_setup", measured)
    monkeypatch.setattr(trainer_module, "_no_native_bf16", lambda: False)  # a CPU with native bf16
    recipe = toy_recipe()
    recipe["runtime"]["memory_format"] = "auto"
    recipe["solver"]["amp"] = "auto"
    pm = get_plugin_manager()
    pm.add_plugin(_StopAt(3), name="stop-at-3")
    try:
        torch.manual_seed(0)
        with pytest.raises(KeyboardInterrupt):
            Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset()).train()
    finally:
        pm.remove_plugin("stop-at-3")
    assert calls == [(4, ["contiguous", "channels_last"], [False, True])]
    ckpt = torch.load(tmp_path / "checkpoints" / "model_0000002.pth", weights_only=True)
    assert (ckpt["memory_format"], ckpt["amp"]) == chosen
    torch.manual_seed(0)
    model = ToyModel()
    trainer = Trainer(recipe, tmp_path, resume=True, model=model, train_dataset=ToyPairDataset())
    assert (trainer.memory_format, trainer.use_amp) == chosen and len(calls) == 1  # not measured again
    layout = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}[chosen[0]]
    assert model.conv.weight.is_contiguous(memory_format=layout)
    dtypes = []
    model.conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    trainer.train()
    assert len(calls) == 1
    assert set(dtypes) == {torch.bfloat16 if chosen[1] else torch.float32}


def test_bad_memory_format_is_a_recipe_error(tmp_path):
    recipe = toy_recipe()
    recipe["runtime"]["memory_format"] = "nhwc"
    with pytest.raises(CrossVISError, match="runtime.memory_format must be contiguous, channels_last or auto"):
        Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset())


def test_bad_amp_is_a_recipe_error(tmp_path):
    recipe = toy_recipe()
    recipe["solver"]["amp"] = "bf16"
    with pytest.raises(CrossVISError, match="solver.amp must be true, false or auto"):
        Trainer(recipe, tmp_path, model=ToyModel(), train_dataset=ToyPairDataset())
