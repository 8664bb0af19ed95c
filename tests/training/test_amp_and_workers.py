"""`solver.amp` on CPU (bfloat16 autocast, no GradScaler) and `runtime.num_workers > 0` (the
default is 2): both on the toy model, so they are quick."""
import json
import math

import pytest
import torch

from engine_toys import ToyModel, ToyPairDataset, toy_recipe

from crossvis.training.trainer import Trainer


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _trainer(out, amp=False, num_workers=0, **solver):
    recipe = toy_recipe(amp=amp, **solver)
    recipe["runtime"]["num_workers"] = num_workers
    torch.manual_seed(0)
    return Trainer(recipe, out, model=ToyModel(), train_dataset=ToyPairDataset())


@pytest.mark.slow
def test_amp_on_cpu_uses_bfloat16_autocast_and_trains(tmp_path):
    trainer = _trainer(tmp_path / "amp", amp=True, max_iter=4)
    assert trainer.use_amp and trainer.scaler is None  # bf16 needs no loss scaling
    dtypes = []
    trainer._model.conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    before = {k: v.detach().clone() for k, v in trainer._model.state_dict().items()}
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the conv ran under autocast
    after = trainer._model.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # the weights stay float32
    assert any(not torch.equal(after[k], before[k]) for k in before)  # the optimizer stepped
    amp = _records(tmp_path / "amp")
    assert [r["iter"] for r in amp] == [1, 2, 3, 4]
    assert all(math.isfinite(r["total_loss"]) for r in amp)

    _trainer(tmp_path / "fp32", max_iter=4).train()
    fp32 = _records(tmp_path / "fp32")
    # bf16 keeps 8 bits of mantissa (relative precision 2^-8 ~ 0.4%); after a few steps the losses
    # stay within a few percent of float32 but are not identical
    for a, b in zip(amp, fp32):
        assert a["total_loss"] == pytest.approx(b["total_loss"], rel=0.05)
    assert any(a["total_loss"] != b["total_loss"] for a, b in zip(amp, fp32))


def test_amp_off_runs_in_float32(tmp_path):
    trainer = _trainer(tmp_path, max_iter=1)
    dtypes = []
    trainer._model.conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    trainer.train()
    assert not trainer.use_amp and dtypes == [torch.float32]


@pytest.mark.slow
def test_two_workers_give_the_same_batches_and_losses_as_none(tmp_path):
    seen = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        trainer = _trainer(out, num_workers=workers, max_iter=5)
        batches = seen.setdefault(workers, [])
        # what the model received: the sample indices and the per-sample "augmentation" noise
        trainer._model.register_forward_pre_hook(
            lambda module, args: batches.append([(int(s["index"]), float(s["image"].sum())) for s in args[0]]))
        trainer.train()
        seen[workers] = (batches, [{k: v for k, v in r.items() if k.startswith("loss_")} for r in _records(out)])
    assert len(seen[0][0]) == 5 and len(seen[2][0]) == 5
    assert seen[2][0] == seen[0][0]   # same samples, same augmentation, same order
    assert seen[2][1] == seen[0][1]   # hence exactly the same losses
