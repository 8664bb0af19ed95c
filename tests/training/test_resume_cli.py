"""SIGKILL a real `crossvis train` mid-run, `--resume` it, and compare every logged loss with an
uninterrupted run (CPU, same seed, num_workers 0, one thread: exact equality)."""
import json
import signal
import subprocess
import sys
import time

import pytest

from vis_fixtures import write_handmade_vis

from crossvis.cli import main


def _args(out, train_ann, train_img, *extra):
    return ["train", "crossvis:quickstart_synthetic", "--output", str(out),
            "--set", f"data.train.annotations={train_ann}", f"data.train.images={train_img}", "data.test=null",
            "solver.max_iter=8", "solver.checkpoint_period=2", "solver.ims_per_batch=2", "solver.warmup_iters=3",
            "solver.log_period=1", "runtime.num_threads=1", *extra]


def _cmd(*args):
    return [sys.executable, "-m", "crossvis", *_args(*args)]


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == list(range(1, 9))
    return [{k: v for k, v in r.items() if k.startswith("loss_") or k in ("total_loss", "lr")} for r in records]


def test_sigkill_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    train_ann, train_img = write_handmade_vis(tmp_path, "train")
    reference = tmp_path / "reference"
    assert main(_args(reference, train_ann, train_img)) == 0  # in this process: same code, same thread count

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_cmd(out, train_ann, train_img), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = out / "checkpoints" / "last_checkpoint"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() == "model_0000004.pth":
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the run was not killed mid-way (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
    assert not (out / "checkpoints" / "model_final.pth").exists()

    resumed = subprocess.run(_cmd(out, train_ann, train_img, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert _losses(out) == _losses(reference)
