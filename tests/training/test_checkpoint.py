"""Atomic saving, rotation, and tolerant weight loading with its report."""
import os

import pytest
import torch
from torch import nn

from crossvis.checkpoints import atomic_save, load_checkpoint, load_weights
from crossvis.training.checkpointer import Checkpointer
from crossvis.errors import CrossVISError


class _Net(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.cls_logits = nn.Conv2d(4, num_classes, 1)


def test_failing_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "model_0000002.pth"
    atomic_save({"iteration": 2, "w": torch.arange(3)}, path)
    good = path.read_bytes()
    with pytest.raises(Exception):
        atomic_save({"iteration": 4, "bad": lambda: None}, path)  # lambdas cannot be pickled
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["model_0000002.pth"]  # no temp file left behind
    assert load_checkpoint(path)["iteration"] == 2


def test_checkpointer_rotates_and_points_at_the_newest(tmp_path):
    ck = Checkpointer(tmp_path, keep_last=2)
    assert ck.latest() is None
    for it in (2, 4, 6):
        ck.save(Checkpointer.periodic_name(it), {"iteration": it})
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000004.pth", "model_0000006.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000006.pth"
    ck.save("model_final.pth", {"iteration": 7})
    assert ck.latest().name == "model_final.pth"
    (tmp_path / "last_checkpoint").unlink()
    assert ck.latest().name == "model_0000006.pth"  # falls back to the newest periodic file


def test_loading_a_checkpoint_with_another_number_of_classes_reports_and_skips(tmp_path, caplog):
    caplog.set_level("INFO", logger="crossvis")
    src = _Net(80)
    path = tmp_path / "coco.pth"
    state = {"module." + k: v for k, v in src.state_dict().items()}  # saved from a DDP wrapper
    state["module.extra.weight"] = torch.zeros(2)
    torch.save({"model": state, "iteration": 9}, path)
    dst = _Net(40)
    before = dst.cls_logits.weight.detach().clone()
    report = load_weights(dst, path)
    assert report.loaded == ["body.weight", "body.bias"]
    assert report.skipped == {"cls_logits.weight": ((80, 4, 1, 1), (40, 4, 1, 1)),
                              "cls_logits.bias": ((80,), (40,))}
    assert report.unexpected == ["extra.weight"] and report.missing == []
    assert torch.equal(dst.body.weight, src.body.weight)
    assert torch.equal(dst.cls_logits.weight, before)
    out = caplog.text   # the load table is logged (the CLI prints it)
    assert "2 loaded, 2 skipped" in out and "(80, 4, 1, 1)" in out and "(40, 4, 1, 1)" in out
    assert "unexpected" in out and "extra.weight" in out


def test_missing_keys_are_reported():
    report = load_weights(_Net(3), {"body.weight": torch.zeros(4, 3, 3, 3)}, report=False)
    assert report.missing == ["body.bias", "cls_logits.weight", "cls_logits.bias"]


@pytest.mark.parametrize("content", [b"this is not a checkpoint\n", None])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CrossVISError, match="weights.pth"):
        load_weights(_Net(3), path)


def test_a_dict_without_tensors_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "config.pth"
    torch.save({"lr": 0.1}, path)
    with pytest.raises(CrossVISError, match="config.pth contains no tensors"):
        load_weights(_Net(3), path)


def test_quickstart_model_transfers_between_class_counts(tmp_path, caplog):
    caplog.set_level("INFO", logger="crossvis")
    from crossvis.models import build_model
    from crossvis.recipes import load_recipe

    recipe = load_recipe("crossvis:quickstart_synthetic")
    src = build_model(recipe, num_classes=4, num_identities=30)
    path = tmp_path / "four_classes.pth"
    torch.save({"model": src.state_dict(), "iteration": 100}, path)
    dst = build_model(recipe, num_classes=3, num_identities=7)
    report = load_weights(dst, path)
    skipped = {k: v for k, v in report.skipped.items()}
    assert any(a[0] == 4 and b[0] == 3 for a, b in skipped.values())        # the class logits
    assert any(a[0] == 30 and b[0] == 7 for a, b in skipped.values())       # the identity proxies
    assert not report.missing and not report.unexpected
    assert len(report.loaded) + len(report.skipped) == len(src.state_dict())
    shared = [k for k in report.loaded if k.endswith("weight")]
    assert all(torch.equal(dst.state_dict()[k], src.state_dict()[k]) for k in shared)
    assert "skipped" in caplog.text
