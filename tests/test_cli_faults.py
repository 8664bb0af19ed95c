"""Faults a new user runs into, against the real commands (in-process ``crossvis.cli.main``).

Every case must end within a time bound, exit 0 or print exactly one ``crossvis: error:`` line
(never a traceback), and leave every file that existed before it unchanged, except where the
case's point is a sanctioned change (``--force``, ``--resume``: listed per case). Set
``CROSSVIS_FAULT_TABLE=PATH`` to write the table of outcomes (area, input, outcome, exit code,
files intact).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vis_fixtures import write_handmade_vis

from crossvis.cli import main

TIME_LIMIT_S = 60
OUTCOMES: list[dict] = []


# -- the world every case runs in ----------------------------------------------------------------
@dataclass
class World:
    root: Path
    data: Path
    run: Path

    @property
    def recipe(self) -> Path:
        return self.run / "recipe.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.run / "checkpoints" / "model_final.pth"

    def train_args(self, output: Path, *extra: str) -> list[str]:
        return ["train", "crossvis:quickstart_synthetic", "--output", str(output), "--set",
                f"data.train.annotations={self.data / 'train.json'}", f"data.train.images={self.data / 'train_frames'}",
                "data.test=null", "solver.max_iter=3", "solver.checkpoint_period=1", "solver.ims_per_batch=2",
                "solver.keep_last=3", "solver.amp=false", *extra]

    def test_set(self) -> list[str]:
        return ["--set", f"data.test.annotations={self.data / 'valid.json'}",
                f"data.test.images={self.data / 'valid_frames'}"]

    @property
    def clip(self) -> Path:
        return self.data / "valid_frames" / "clip101" / "sub"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    data.mkdir()
    write_handmade_vis(data, "train")
    write_handmade_vis(data, "valid")
    w = World(root, data, root / "run")
    assert main(["-q", *w.train_args(w.run)]) == 0
    yield w
    table = os.environ.get("CROSSVIS_FAULT_TABLE")
    if table:
        Path(table).write_text(json.dumps(OUTCOMES, indent=1) + "\n")


# -- running one case --------------------------------------------------------------------------------
def _signature(folder: Path) -> dict[str, str]:
    """Content hash of every small file, (size, mtime, inode) of big ones (checkpoints)."""
    sig = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            st_ = path.stat()
            sig[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest() if st_.st_size < 1 << 20
                              else f"{st_.st_size}:{st_.st_mtime_ns}:{st_.st_ino}")
    return sig


class _TimeUp(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeUp()


@dataclass
class Case:
    area: str
    text: str                      # the input, as a user would describe it
    args: Callable[[World, Path], list[str]]
    expect: str = "error"          # "error" or "ok"
    contains: tuple = ()           # texts the error line (or stdout) must contain
    absent: tuple = ("weights_only=False", "Traceback")
    setup: Optional[Callable[[World, Path], None]] = None
    may_change: Callable[[World, Path], list[Path]] = field(default=lambda w, d: [])
    check: Optional[Callable[[World, Path], None]] = None


def run_case(world: World, case: Case, folder: Path, capsys) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(world, folder)
    before = {**_signature(world.root), **_signature(folder)}
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    start = time.monotonic()
    try:
        rc = main(case.args(world, folder))
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    except _TimeUp:
        pytest.fail(f"{case.text}: still running after {TIME_LIMIT_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    after = {**_signature(world.root), **_signature(folder)}
    allowed = [Path(p) for p in case.may_change(world, folder)]
    changed = [p for p, s in before.items() if after.get(p) != s
               and not any(Path(p) == a or a in Path(p).parents for a in allowed)]
    error_lines = [line for line in err.splitlines() if line.startswith("crossvis: error:")]
    OUTCOMES.append({"area": case.area, "input": case.text, "outcome": error_lines[0][17:] if error_lines
                     else "ok", "exit": rc, "files_intact": not changed, "seconds": round(elapsed, 1)})
    assert "Traceback" not in err and "Traceback" not in out
    assert not changed, f"{case.text}: changed {changed}"
    if case.expect == "ok":
        assert rc == 0, err
        text = out
    else:
        assert rc == 2, (out, err)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("crossvis: warning:")]
        assert len(lines) == 1 and lines[0].startswith("crossvis: error: "), err
        text = lines[0]
    for expected in case.contains:
        assert expected in text, (expected, text)
    for unwanted in case.absent:
        assert unwanted not in err + out, (unwanted, err)
    if case.check:
        case.check(world, folder)


# -- set-ups --------------------------------------------------------------------------------------------
def _copy_run(world: World, folder: Path) -> None:
    shutil.copytree(world.run, folder / "run")


def _truncate_newest(world: World, folder: Path) -> None:
    _copy_run(world, folder)
    checkpoints = folder / "run" / "checkpoints"
    (checkpoints / "model_final.pth").unlink()
    (checkpoints / "last_checkpoint").write_text("model_0000002.pth\n")
    newest = checkpoints / "model_0000002.pth"
    newest.write_bytes(newest.read_bytes()[:4096])
    (checkpoints / ".model_0000003.pth.dead.tmp").write_bytes(b"partial")


def _break_all(world: World, folder: Path) -> None:
    _copy_run(world, folder)
    for path in (folder / "run" / "checkpoints").glob("model_*.pth"):
        path.write_bytes(b"\x00" * 100)


def _half_run(world: World, folder: Path) -> None:
    (folder / "run").mkdir()
    (folder / "run" / "recipe.yaml").write_text("solver: {max_iter: 7}\n")
    (folder / "run" / "metrics.jsonl").write_text('{"iter": 1, "total_loss": 3.0}\n')


def _file(name: str, text: str = "precious\n") -> Callable[[World, Path], None]:
    def setup(world: World, folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return setup


def _missing_frame(world: World, folder: Path) -> None:
    shutil.copytree(world.data, folder / "data")
    for frame in (folder / "data" / "train_frames").rglob("*.png"):  # every sample hits a missing frame
        frame.unlink()


class Opaque:
    """A Python object a checkpoint must not smuggle in."""


def _pickled_object(world: World, folder: Path) -> None:
    import torch

    torch.save({"model": Opaque()}, folder / "odd.pth")


def _truncated_checkpoint(world: World, folder: Path) -> None:
    (folder / "cut.pth").write_bytes(world.checkpoint.read_bytes()[:10000])


def _recipe_with(body: str) -> Callable[[World, Path], None]:
    def setup(world: World, folder: Path) -> None:
        (folder / "r.yaml").write_text("_base_: crossvis:quickstart_synthetic\n" + body)
    return setup


def _user_frames(world: World, folder: Path) -> None:
    (folder / "out" / "frames").mkdir(parents=True)
    (folder / "out" / "frames" / "000000.jpg").write_bytes(b"user's picture")


def _converted_pair(world: World, folder: Path) -> None:
    shutil.copy(world.checkpoint, folder / "official.pth")
    (folder / "out.pth").write_bytes(b"old conversion")


def _symlinked_source(world: World, folder: Path) -> None:
    shutil.copy(world.checkpoint, folder / "official.pth")
    (folder / "link.pth").symlink_to(folder / "official.pth")


def _demo_then_fewer_frames(world: World, folder: Path) -> None:
    assert main(["-q", "demo", str(world.clip), "--recipe", str(world.recipe), "--checkpoint", str(world.checkpoint),
                 "--output", str(folder / "out"), "--no-video", "--no-progress"]) == 0
    assert len(list((folder / "out" / "frames").iterdir())) == 4
    (folder / "out" / "notes.txt").write_text("mine\n")


def _eval_then_user_file(world: World, folder: Path) -> None:
    assert main(["-q", "eval", str(world.recipe), "--checkpoint", str(world.checkpoint), "--output",
                 str(folder / "out"), "--no-progress", *world.test_set()]) == 0
    (folder / "out" / "notes.txt").write_text("mine\n")


def _only_two_frames(world: World, folder: Path) -> None:
    frames = sorted(p.name for p in (folder / "out" / "frames").iterdir())
    assert frames == ["000000.jpg", "000001.jpg"], frames
    assert (folder / "out" / "notes.txt").read_text() == "mine\n"


def _broken_kept(world: World, folder: Path) -> None:
    checkpoints = folder / "run" / "checkpoints"
    assert (checkpoints / "model_0000002.pth.broken").stat().st_size == 4096
    assert not list(checkpoints.glob(".*.tmp"))
    assert (checkpoints / "model_final.pth").is_file()


# -- the cases ------------------------------------------------------------------------------------------
def _demo(world: World, folder: Path, *extra: str, output: Optional[Path] = None) -> list[str]:
    return ["demo", str(world.clip), "--recipe", str(world.recipe), "--checkpoint", str(world.checkpoint),
            "--output", str(output or folder / "out"), "--no-progress", *extra]


def _eval(world: World, folder: Path, *extra: str, checkpoint: Optional[Path] = None,
          output: Optional[Path] = None) -> list[str]:
    return ["eval", str(world.recipe), "--checkpoint", str(checkpoint or world.checkpoint), "--output",
            str(output or folder / "out"), "--no-progress", *world.test_set(), *extra]


CASES = [
    # train
    Case("train", "--output names an existing regular file", lambda w, d: w.train_args(d / "f"),
         setup=_file("f"), contains=("is an existing file",)),
    Case("train", "--output holds recipe.yaml + metrics.jsonl, no checkpoint", lambda w, d: w.train_args(d / "run"),
         setup=_half_run, contains=("recipe.yaml, metrics.jsonl", "--resume", "--force")),
    Case("train", "--output holds checkpoints, no --resume", lambda w, d: w.train_args(d / "run"),
         setup=_copy_run, contains=("already holds checkpoints", "--resume")),
    Case("train", "--resume after changing the model (neck width)",
         lambda w, d: w.train_args(d / "run", "model.neck.out_channels=32", "--resume"), setup=_copy_run,
         contains=("model_final.pth", "different model", "checkpoint (64, 64, 1, 1) vs model (32, 64, 1, 1)",
                   "new --output")),
    Case("train", "--resume, newest checkpoint truncated, a killed save's .tmp",
         lambda w, d: w.train_args(d / "run", "--resume"), expect="ok", setup=_truncate_newest,
         may_change=lambda w, d: [d / "run"], check=_broken_kept, contains=("model_0000001.pth at iteration 1/3",)),
    Case("train", "--resume, every checkpoint unreadable", lambda w, d: w.train_args(d / "run", "--resume"),
         setup=_break_all, may_change=lambda w, d: [d / "run" / "checkpoints"],
         contains=("no checkpoint", "can be loaded", ".broken")),
    Case("train", "--force over another run's recipe.yaml + metrics.jsonl",
         lambda w, d: w.train_args(d / "run", "solver.max_iter=1", "--force"), expect="ok", setup=_half_run,
         may_change=lambda w, d: [d / "run"]),
    Case("train", "typo in a component kwarg (head num_convz)",
         lambda w, d: w.train_args(d / "o")[:1] + [str(d / "r.yaml")] + w.train_args(d / "o")[2:],
         setup=_recipe_with(
             "model:\n  head: {type: fcos, num_convz: 2}\n"),
         contains=("r.yaml:3", "did you mean 'num_convs'")),
    Case("train", "typo in a transform name", lambda w, d: ["train", str(d / "r.yaml"), "--output", str(d / "o")],
         setup=_recipe_with("data:\n  train:\n    transforms: [{type: resize_shortest_edg, min_size: 128}]\n"),
         contains=("r.yaml:4", "did you mean 'resize_shortest_edge'")),
    Case("train", "unknown solver key", lambda w, d: ["train", str(d / "r.yaml"), "--output", str(d / "o")],
         setup=_recipe_with("solver:\n  max_itr: 3\n"), contains=("solver.max_itr", "r.yaml:3", "solver.max_iter")),
    Case("train", "negative solver.max_iter", lambda w, d: w.train_args(d / "o", "solver.max_iter=-1"),
         contains=("solver.max_iter must be positive",)),
    Case("train", "model.weights is a pickle of a Python object",
         lambda w, d: w.train_args(d / "o", f"model.weights={d / 'odd.pth'}"), setup=_pickled_object,
         contains=("odd.pth", "test_cli_faults.Opaque")),
    Case("train", "frame files missing, read in 2 DataLoader workers",
         lambda w, d: ["train", "crossvis:quickstart_synthetic", "--output", str(d / "o"), "--set",
                       f"data.train.annotations={d / 'data' / 'train.json'}",
                       f"data.train.images={d / 'data' / 'train_frames'}", "data.test=null", "solver.max_iter=2",
                       "solver.ims_per_batch=2", "runtime.num_workers=2"],
         setup=_missing_frame, contains=("frame file not found",), absent=("Caught", "Traceback")),
    Case("train", "runtime.device=banana", lambda w, d: w.train_args(d / "o", "runtime.device=banana"),
         contains=("runtime.device 'banana' is not a device",)),
    Case("train", "runtime.device=cuda:99", lambda w, d: w.train_args(d / "o", "runtime.device=cuda:99"),
         contains=("runtime.device is 'cuda:99'",)),
    *[Case("train", f"--set {kv}", lambda w, d, kv=kv: w.train_args(d / "o", kv), contains=(kv.split("=")[0],))
      for kv in ("solver.base_lr=-1", "solver.betas=[0.9,1.5]", "solver.amp=maybe", "runtime.num_threads=-2",
                 "solver.ims_per_batch=abc", "solver.steps=[5,2]")],
    # eval
    Case("eval", "--device banana", lambda w, d: _eval(w, d, "--device", "banana"), contains=("--device 'banana'",)),
    Case("eval", "--output names an existing regular file", lambda w, d: _eval(w, d, output=d / "f"),
         setup=_file("f"), contains=("is an existing file",)),
    Case("eval", "--checkpoint truncated", lambda w, d: _eval(w, d, checkpoint=d / "cut.pth"),
         setup=_truncated_checkpoint, contains=("cut.pth", "truncated")),
    Case("eval", "--checkpoint missing", lambda w, d: _eval(w, d, checkpoint=d / "nope.pth"),
         contains=("nope.pth", "does not exist")),
    Case("eval", "--output holds someone's results.json", lambda w, d: _eval(w, d), setup=_file("out/results.json"),
         contains=("results.json", "--force")),
    Case("eval", "--output holds someone's results.json, --force", lambda w, d: _eval(w, d, "--force"),
         expect="ok", setup=_file("out/results.json"), may_change=lambda w, d: [d / "out" / "results.json"]),
    Case("eval", "again into its own earlier output (+ a user file)", lambda w, d: _eval(w, d), expect="ok",
         setup=_eval_then_user_file, may_change=lambda w, d: [d / "out" / n for n in
                                                              ("results.json", "results.zip", "metrics.json",
                                                               ".crossvis-outputs.json")],
         check=lambda w, d: (d / "out" / "notes.txt").read_text() == "mine\n" or pytest.fail("notes.txt")),
    # demo
    *[Case("demo", f"--fps {v}", lambda w, d, v=v: _demo(w, d, "--fps", v), contains=("--fps",))
      for v in ("-5", "0", "nan", "inf", "1e9")],
    *[Case("demo", f"--score-threshold {v}", lambda w, d, v=v: _demo(w, d, "--score-threshold", v),
           contains=("--score-threshold",)) for v in ("nan", "-1", "2")],
    Case("demo", "--device cuda:99", lambda w, d: _demo(w, d, "--device", "cuda:99"),
         contains=("--device is 'cuda:99'",)),
    Case("demo", "--max-frames 0", lambda w, d: _demo(w, d, "--max-frames", "0"), contains=("--max-frames",)),
    Case("demo", "--output names an existing regular file", lambda w, d: _demo(w, d, output=d / "f"),
         setup=_file("f"), contains=("is an existing file",)),
    Case("demo", "--output holds someone's frames/", lambda w, d: _demo(w, d, "--no-video"), setup=_user_frames,
         contains=("frames/", "--force")),
    Case("demo", "again into its own output with fewer frames (+ a user file)",
         lambda w, d: _demo(w, d, "--no-video", "--max-frames", "2"), expect="ok", setup=_demo_then_fewer_frames,
         may_change=lambda w, d: [d / "out" / "frames", d / "out" / "results.json", d / "out" / "video.json",
                                  d / "out" / ".crossvis-outputs.json"], check=_only_two_frames),
    Case("demo", "INPUT inside the output's frames/", lambda w, d: ["demo", str(d / "out" / "frames"), "--recipe",
                                                                    str(w.recipe), "--checkpoint", str(w.checkpoint),
                                                                    "--output", str(d / "out")],
         setup=_user_frames, contains=("lies in",)),
    Case("demo", "INPUT missing", lambda w, d: ["demo", str(d / "none"), "--recipe", str(w.recipe), "--checkpoint",
                                                str(w.checkpoint), "--output", str(d / "out")],
         contains=("does not exist",)),
    # convert-checkpoint
    Case("convert-checkpoint", "SRC SRC", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                        str(d / "official.pth")],
         setup=_converted_pair, contains=("is the input",)),
    Case("convert-checkpoint", "SRC SRC --force", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                                str(d / "official.pth"), "--force"],
         setup=_converted_pair, contains=("is the input",)),
    Case("convert-checkpoint", "SRC DIR/../SRC", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                               str(d / "sub" / ".." / "official.pth")],
         setup=lambda w, d: (_converted_pair(w, d), (d / "sub").mkdir()), contains=("is the input",)),
    Case("convert-checkpoint", "SRC through a symlink as DST",
         lambda w, d: ["convert-checkpoint", str(d / "official.pth"), str(d / "link.pth"), "--force"],
         setup=_symlinked_source, contains=("is the input",)),
    Case("convert-checkpoint", "existing DST", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                             str(d / "out.pth")],
         setup=_converted_pair, contains=("out.pth already exists", "--force")),
    Case("convert-checkpoint", "existing DST.yaml", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                                  str(d / "new.pth")],
         setup=lambda w, d: (_converted_pair(w, d), (d / "new.yaml").write_text("mine\n")),
         contains=("new.yaml already exists",)),
    Case("convert-checkpoint", "DST.yaml would be SRC", lambda w, d: ["convert-checkpoint", str(d / "a.yaml"),
                                                                      str(d / "a.pth"), "--force"],
         setup=lambda w, d: shutil.copy(w.checkpoint, d / "a.yaml"), contains=("is the input",)),
    Case("convert-checkpoint", "--num-classes 0", lambda w, d: ["convert-checkpoint", str(d / "official.pth"),
                                                                str(d / "n.pth"), "--num-classes", "0"],
         setup=_converted_pair, contains=("--num-classes",)),
    Case("convert-checkpoint", "SRC pickles a Python object", lambda w, d: ["convert-checkpoint", str(d / "odd.pth"),
                                                                            str(d / "n.pth")],
         setup=_pickled_object, contains=("odd.pth", "test_cli_faults.Opaque")),
    # export
    Case("export", "--output exists", lambda w, d: ["export", str(w.recipe), "--output", str(d / "net.pt2")],
         setup=_file("net.pt2"), contains=("already exists", "--force")),
    Case("export", "--output is the checkpoint", lambda w, d: ["export", str(w.recipe), "--checkpoint",
                                                               str(w.checkpoint), "--output", str(w.checkpoint),
                                                               "--force"], contains=("is the input",)),
    Case("export", "--height 33", lambda w, d: ["export", str(w.recipe), "--output", str(d / "n.pt2"),
                                                "--height", "33"], contains=("multiples of 32",)),
    # recipe
    Case("recipe", "show with an unknown runtime key", lambda w, d: ["recipe", "show", str(d / "r.yaml")],
         setup=_recipe_with("runtime:\n  num_wrkers: 1\n"), contains=("runtime.num_wrkers", "r.yaml:3")),
    Case("recipe", "check --num-classes 0", lambda w, d: ["recipe", "check", "crossvis:quickstart_synthetic",
                                                          "--num-classes", "0"], contains=("--num-classes",)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.text}" for c in CASES])
def test_fault(world, case, tmp_path, capsys):
    run_case(world, case, tmp_path / "case", capsys)


# -- fuzzed numeric flags: one error line naming the flag, or (in range) the next check --------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fps=st.floats(allow_nan=True, allow_infinity=True), threshold=st.floats(allow_nan=True, allow_infinity=True))
def test_demo_numeric_flags_never_crash(tmp_path, capsys, fps, threshold):
    rc = main(["demo", str(tmp_path / "missing"), "--recipe", "r.yaml", "--checkpoint", "c.pth",
               "--output", str(tmp_path / "out"), f"--fps={fps!r}", f"--score-threshold={threshold!r}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("crossvis: error: "), err
    fps_ok = fps == fps and 0 < fps <= 1000
    if not fps_ok:
        assert "--fps" in lines[0]
    elif not (threshold == threshold and 0 <= threshold <= 1):
        assert "--score-threshold" in lines[0]
    else:
        assert "does not exist" in lines[0]
    assert not (tmp_path / "out").exists()
