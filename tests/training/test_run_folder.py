"""Run-folder protection and recovery on the toy model: a new run never replaces another run's
files without --resume/--force; --resume falls back past unreadable checkpoints (renamed
``*.broken``, never deleted) and refuses a checkpoint of another model with the tensors named."""
import hashlib
import json
import logging

import pytest
import torch

from engine_toys import ToyModel, ToyPairDataset, toy_recipe

from crossvis.errors import CrossVISError
from crossvis.training.trainer import Trainer


def _train(out, resume=False, force=False, model=None, **solver):
    torch.manual_seed(0)
    return Trainer(toy_recipe(**solver), out, resume=resume, force=force, model=model or ToyModel(),
                   train_dataset=ToyPairDataset()).train()


def _losses(out):
    return [{k: v for k, v in json.loads(line).items() if k.startswith("loss_") or k == "iter"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    _train(out)
    return out


def test_a_folder_with_another_runs_files_is_refused_without_resume_or_force(tmp_path):
    (tmp_path / "recipe.yaml").write_text("solver: {max_iter: 99}\n")
    (tmp_path / "metrics.jsonl").write_text('{"iter": 1, "loss_cls": 1.0}\n')
    before = _digest(tmp_path)
    with pytest.raises(CrossVISError, match=r"recipe\.yaml, metrics\.jsonl .*--resume.*--force"):
        _train(tmp_path)
    assert _digest(tmp_path) == before
    _train(tmp_path, force=True, max_iter=2)
    assert "max_iter: 2" in (tmp_path / "recipe.yaml").read_text()
    assert [r["iter"] for r in _losses(tmp_path)] == [1, 2]


def test_force_starts_over_but_keeps_broken_checkpoints(reference, tmp_path):
    _train(tmp_path, max_iter=4)
    (tmp_path / "checkpoints" / "model_0000002.pth.broken").write_bytes(b"kept")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CrossVISError, match="already holds checkpoints"):
        _train(tmp_path)
    _train(tmp_path, force=True)
    assert _losses(tmp_path) == _losses(reference)
    assert (tmp_path / "checkpoints" / "model_0000002.pth.broken").read_bytes() == b"kept"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_output_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "run"
    target.write_text("a file")
    with pytest.raises(CrossVISError, match="is an existing file, not a folder"):
        _train(target)
    assert target.read_text() == "a file"


def _interrupted_copy(tmp_path):
    """A run killed after the checkpoint of iteration 4: final checkpoint gone, pointer on 4."""
    _train(tmp_path, keep_last=3)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "model_final.pth").unlink()
    (checkpoints / "last_checkpoint").write_text("model_0000004.pth\n")
    return checkpoints


def test_resume_falls_back_past_a_truncated_checkpoint_and_keeps_it(reference, tmp_path, caplog):
    checkpoints = _interrupted_copy(tmp_path)
    newest = checkpoints / "model_0000004.pth"
    truncated = newest.read_bytes()[:3000]
    newest.write_bytes(truncated)
    (checkpoints / ".model_0000006.pth.x1y2.tmp").write_bytes(b"half")
    (tmp_path / ".metrics.jsonl.abcd.tmp").write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="crossvis"):
        _train(tmp_path, resume=True, keep_last=3)
    assert "model_0000004.pth cannot be loaded" in caplog.text and "truncated" in caplog.text
    assert "resuming from model_0000002.pth" in caplog.text
    assert "resumed from" in caplog.text and "at iteration 2/6" in caplog.text
    assert (checkpoints / "model_0000004.pth.broken").read_bytes() == truncated  # renamed, not deleted
    assert not list(tmp_path.rglob(".*.tmp"))
    assert _losses(tmp_path) == _losses(reference)


def test_resume_when_no_checkpoint_loads_is_one_error_and_keeps_the_files(tmp_path):
    checkpoints = _interrupted_copy(tmp_path)
    for path in checkpoints.glob("model_*.pth"):
        path.write_bytes(b"garbage")
    with pytest.raises(CrossVISError, match=r"no checkpoint .* can be loaded.*\.broken"):
        _train(tmp_path, resume=True)
    assert sorted(p.name for p in checkpoints.glob("model_*")) == [
        "model_0000002.pth.broken", "model_0000004.pth.broken"]


def test_resume_with_another_model_names_the_tensors(tmp_path):
    _train(tmp_path, max_iter=4)
    before = _digest(tmp_path)
    with pytest.raises(CrossVISError) as info:
        _train(tmp_path, resume=True, model=ToyModel(num_classes=5))
    message = str(info.value)
    assert "model_final.pth" in message and "different model" in message
    assert "fc.weight: checkpoint (3, 4) vs model (5, 4)" in message and "new --output" in message
    assert "\n" not in message
    assert _digest(tmp_path) == before
