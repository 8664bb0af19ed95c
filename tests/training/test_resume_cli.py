"""SIGKILL a real `crossvis train` process from inside training (a plugin's ``crossvis_after_step``
kills its own process right after iteration 5, i.e. after the checkpoint of iteration 4 and one
more logged iteration), `--resume` it, and compare every logged loss with an uninterrupted run
(CPU, same seed, num_workers 0, one thread: exact equality). No polling, no race."""
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from vis_fixtures import write_handmade_vis

from crossvis.cli import main

KILL_AT = 5

# `crossvis train` with a plugin that SIGKILLs the process after iteration KILL_AT
KILLER = textwrap.dedent("""
    import os, signal, sys
    from crossvis.cli import main
    from crossvis.hookspecs import hookimpl
    from crossvis.plugins import get_plugin_manager

    class KillAfter:
        @hookimpl
        def crossvis_after_step(self, iteration):
            if iteration == int(os.environ["CROSSVIS_TEST_KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)

    get_plugin_manager().add_plugin(KillAfter(), name="kill-after")
    sys.exit(main(sys.argv[1:]))
""")


def _args(out, train_ann, train_img, *extra):
    return ["train", "crossvis:quickstart_synthetic", "--output", str(out),
            "--set", f"data.train.annotations={train_ann}", f"data.train.images={train_img}", "data.test=null",
            "solver.max_iter=8", "solver.checkpoint_period=2", "solver.ims_per_batch=2", "solver.warmup_iters=3",
            "solver.log_period=1", "runtime.num_threads=1",
            # a fixed layout: "auto" measures per run, and two runs may time differently
            "runtime.memory_format=channels_last", "solver.amp=false", *extra]


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == list(range(1, 9))
    return [{k: v for k, v in r.items() if k.startswith("loss_") or k in ("total_loss", "lr")} for r in records]


@pytest.mark.slow
def test_sigkill_and_resume_reproduce_the_uninterrupted_run(tmp_path, capsys):
    train_ann, train_img = write_handmade_vis(tmp_path, "train")
    reference = tmp_path / "reference"
    assert main(_args(reference, train_ann, train_img)) == 0  # in this process: same code, same thread count

    out = tmp_path / "interrupted"
    killed = subprocess.run([sys.executable, "-c", KILLER, *_args(out, train_ann, train_img)],
                            capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "CROSSVIS_TEST_KILL_AT": str(KILL_AT)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = out / "checkpoints"
    assert (checkpoints / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert not (checkpoints / "model_final.pth").exists()
    logged = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, KILL_AT + 1))  # iteration 5 was logged after the last checkpoint
    (checkpoints / ".model_0000006.pth.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a killed save

    capsys.readouterr()
    assert main(_args(out, train_ann, train_img, "--resume")) == 0
    stdout = capsys.readouterr().out
    assert "resumed from" in stdout and "model_0000004.pth at iteration 4/8" in stdout
    assert _losses(out) == _losses(reference)
    assert not list(checkpoints.glob(".*.tmp"))
