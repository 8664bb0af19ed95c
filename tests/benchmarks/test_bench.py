"""Benchmark helpers: frames, timing, the fixed detection count, the table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from benchlib import (BenchResult, crossvis_model, format_rows, synthetic_frames, time_per_frame,  # noqa: E402
                      time_side_by_side)


def test_synthetic_frames_are_deterministic_uint8_rgb():
    a, b = synthetic_frames(3, 36, 64, seed=1), synthetic_frames(3, 36, 64, seed=1)
    assert len(a) == 3 and a[0].shape == (36, 64, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[2])  # the blobs move


class _FakeClock:
    """A ``time`` stand-in for ``benchlib``: wall and CPU clocks that move only when a step (or a
    pause) advances them, so the timing helpers are checked exactly on a loaded machine."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def perf_counter(self):
        return self.wall

    def process_time(self):
        return self.cpu

    def sleep(self, seconds):  # the pause between rounds: idle wall time
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch):
    import benchlib

    fake = _FakeClock()
    monkeypatch.setattr(benchlib, "time", fake)
    return fake


def test_time_per_frame_times_every_frame_after_untimed_warmup(clock):
    calls = []

    def step(frame):
        calls.append(frame)
        clock.wall += 0.01 * frame  # wall time grows with the frame, CPU time is a quarter of it
        clock.cpu += 0.0025 * frame

    times = time_per_frame(step, [1, 2, 3, 4], warmup=2)
    assert calls == [1, 2, 1, 2, 3, 4]
    assert [wall for wall, _ in times] == pytest.approx([0.01, 0.02, 0.03, 0.04])
    assert [cpu for _, cpu in times] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])


def test_side_by_side_steps_take_turns_on_every_frame_in_rotating_order(clock):
    calls = []

    def step(name, seconds):
        def run(frame):
            calls.append((name, frame))
            clock.wall += seconds * frame
        return run

    times = time_side_by_side([step("a", 0.004), step("b", 0.012), step("c", 0.0)], [1, 2, 3], warmup=1,
                              pause=0.5)
    assert calls[:3] == [("a", 1), ("b", 1), ("c", 1)]  # the untimed warm-up round
    timed = calls[3:]
    assert [f for _, f in timed] == [1, 1, 1, 2, 2, 2, 3, 3, 3]  # every frame by all before the next
    assert [n for n, _ in timed] == list("abc" "bca" "cab")  # each step first once
    # each step's own time on each frame, neither its neighbours' nor the pause
    assert [[wall for wall, _ in t] for t in times] == [pytest.approx([0.004, 0.008, 0.012]),
                                                        pytest.approx([0.012, 0.024, 0.036]), [0.0, 0.0, 0.0]]
    assert all(cpu == 0.0 for t in times for _, cpu in t)


def test_random_crossvis_model_is_held_at_the_requested_detection_count():
    torch.manual_seed(0)
    model = crossvis_model("dla34", num_detections=7)
    frame = torch.from_numpy(synthetic_frames(1, 96, 160)[0]).permute(2, 0, 1).contiguous()
    model.preprocessor.min_size_test, model.preprocessor.max_size_test = 96, 160
    det = model.predict([frame])[0]
    assert len(det) == 7 and det.masks.shape == (7, 96, 160) and det.embeddings.shape == (7, 256)


def test_format_rows_ratio_column():
    ref = BenchResult("fcos", "fp32", 100.0, 90.0, 110.0, 80.0, 5, 2, 100)
    row = BenchResult("crossvis-r50", "pipeline-fp32", 150.0, 140.0, 160.0, 100.0, 5, 2, 100)
    lines = format_rows([ref, row], ref).splitlines()
    assert lines[1].split()[-2:] == ["1.00", "1.00"] and lines[2].split()[-2:] == ["1.50", "1.25"]


def test_the_targets_line_holds_each_pipeline_to_its_target():
    import bench_latency

    ref = BenchResult("torchvision-fcos", "fp32 before+after", 400.0, 390.0, 410.0, 800.0, 5, 2, 100)
    rows = [ref, BenchResult("crossvis-r50", "network-fp32", 430.0, 0, 0, 0, 5, 2),
            BenchResult("crossvis-r50", "pipeline-fp32:openvino", 464.0, 0, 0, 0, 5, 2),
            BenchResult("crossvis-r50", "pipe-auto:bf16", 204.0, 0, 0, 0, 5, 2),
            BenchResult("crossvis-dla34", "pipeline-fp32", 300.0, 0, 0, 0, 5, 2),
            BenchResult("crossvis-dla34", "pipe-auto:fp32", 300.0, 0, 0, 0, 5, 2)]
    r50, dla = bench_latency.format_targets(rows, ref).splitlines()
    assert "pipeline fp32 / FCOS 1.160 (<= 1.15: NOT met)" in r50  # 464 / 400
    assert "fast pipeline (auto:bf16) / FCOS 0.510 (<= 0.5: NOT met)" in r50
    assert "fast / fp32 pipeline 0.440 (< 1: met)" in r50
    assert "/ FCOS 0.750 (<= 1.15: met)" in dla and "fast / fp32 pipeline 1.000 (< 1: NOT met)" in dla
    assert bench_latency.format_targets(rows[:3], ref) == "" and bench_latency.format_targets(rows, None) == ""
    # the reference timed frame by frame beside r50's pipelines replaces the separate one for r50 only
    beside = BenchResult("torchvision-fcos", "fp32 beside r50", 412.0, 0, 0, 0, 5, 2, 100)
    r50, dla = bench_latency.format_targets(rows, ref, {"crossvis-r50": beside}).splitlines()
    assert "(FCOS fp32 412.0 ms, fp32 beside r50)" in r50 and "pipeline fp32 / FCOS 1.126 (<= 1.15: met)" in r50
    assert "(FCOS fp32 400.0 ms, fp32 before+after)" in dla and "/ FCOS 0.750" in dla


def test_evaluator_benchmark_runs_its_cli_timing_on_distinct_masks():
    """bench_evaluator.py end to end on a tiny set: the analytic ellipse RLE decodes to the raster
    ellipse, and the whole-command timing scores the same AP as the in-process run."""
    import subprocess

    from pycocotools import mask as mask_utils

    import bench_evaluator

    y, x = np.ogrid[:bench_evaluator.H, :bench_evaluator.W]
    raster = ((y - 300.3) / 120.2) ** 2 + ((x - 500.7) / 210.9) ** 2 <= 1
    assert np.array_equal(mask_utils.decode(bench_evaluator.ellipse(300.3, 500.7, 120.2, 210.9)).astype(bool), raster)
    out = subprocess.run([sys.executable, str(BENCH / "bench_evaluator.py"), "--videos", "2", "--preds", "4",
                          "--frames", "3", "--unique", "--cli", "--repeat", "1"],
                         capture_output=True, text=True, check=True).stdout
    assert "all distinct" in out and "same AP as in-process: True" in out


def test_the_fast_path_guard_defaults_to_a_finished_quickstart_run(tmp_path, monkeypatch):
    import pytest

    import bench_latency
    from crossvis.errors import CrossVISError

    monkeypatch.setattr(bench_latency, "QUICKSTART_RUN", str(tmp_path / "quickstart_output" / "run"))
    run = tmp_path / "quickstart_output" / "run"
    assert bench_latency.resolve_guard("auto", None) == (None, None)       # no run: the random-weight guard
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text("model: {}\n")
    assert bench_latency.resolve_guard("auto", None) == (None, None)       # training not finished
    (run / "checkpoints" / "model_final.pth").write_bytes(b"")
    recipe, final = str(run / "recipe.yaml"), str(run / "checkpoints" / "model_final.pth")
    assert bench_latency.resolve_guard("auto", None) == (recipe, final)
    assert bench_latency.resolve_guard(str(run), None) == (recipe, final)  # a run folder
    assert bench_latency.resolve_guard(recipe, "other.pth") == (recipe, "other.pth")
    assert bench_latency.resolve_guard("none", None) == (None, None)
    with pytest.raises(CrossVISError, match="no such recipe"):
        bench_latency.resolve_guard(str(tmp_path / "missing"), None)
    (run / "checkpoints" / "model_final.pth").unlink()
    with pytest.raises(CrossVISError, match="--guard-checkpoint"):
        bench_latency.resolve_guard(str(run), None)


def test_winograd_benchmark_reports_each_map_with_float32_level_nnpack_error(capsys, monkeypatch):
    import bench_winograd
    from crossvis.inference.winograd import winograd_unavailable

    monkeypatch.setattr(bench_winograd, "MAPS", ((64, 24, 40), (32, 48, 80)))   # small: seconds, not tens
    threads = torch.get_num_threads()
    try:
        assert bench_winograd.main(["--arch", "", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)   # the script sets the process's thread count
    out = capsys.readouterr().out
    if winograd_unavailable(torch.device("cpu")) is not None:
        assert "NNPACK unavailable" in out
        return
    rows = [line.split() for line in out.splitlines() if "@" in line.split()[0]]
    assert [r[0] for r in rows] == [f"{c}@{h}x{w}" for c, h, w in bench_winograd.MAPS]
    for row in rows:
        gflop, nnpack_ms, fp32_err, nnpack_err = float(row[1]), float(row[4]), float(row[6]), float(row[8])
        assert gflop > 0 and nnpack_ms > 0
        assert fp32_err < 1e-5 and nnpack_err < 1e-4   # both float32-level, against float64
        bf16_err, f23_err = float(row[7]), float(row[9])
        if bf16_err == bf16_err:   # the CPU has native bf16: the F(2,3) column is measured too
            assert float(row[5]) > 0 and bf16_err < 2e-2 and f23_err < 3e-2   # bfloat16-level


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (1, 5)])
def test_the_f23_winograd_experiment_is_a_3x3_convolution(size):
    """The benchmark's bf16 Winograd F(2,3), run in float32, against a float64 convolution (odd
    sizes: the last tile row and column are partly outside the map)."""
    import bench_winograd

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, *size, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 6, 3, 3, generator=generator)
    kernels = bench_winograd._f23_kernels(weight).float()
    got = bench_winograd._f23_bf16(x, kernels)
    expected = torch.nn.functional.conv2d(x.double(), weight.double(), padding=1)
    assert got.shape == expected.shape
    # the kernels were rounded to bf16 on the way: compare with the convolution by those kernels' error
    assert torch.allclose(got.double(), expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    exact = bench_winograd._f23_bf16(x.double(), _f23_kernels_float64(weight))
    assert torch.allclose(exact, expected, rtol=1e-12, atol=1e-12)


def _f23_kernels_float64(weight: torch.Tensor) -> torch.Tensor:
    g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    return torch.einsum("ai,ocij,bj->abco", g, weight.double(), g).reshape(16, weight.shape[1], weight.shape[0])


def test_the_accuracy_guard_keeps_the_callers_thread_count(tmp_path, monkeypatch):
    """The guard's predictors run at the benchmark's thread count and leave it set: before, each
    one set the recipe's default (the free cores), so `crossvis bench --threads 1` timed at 2."""
    import yaml

    from crossvis import threads
    from benchlib import backend_accuracy

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
    from vis_fixtures import write_handmade_vis

    annotations, images = write_handmade_vis(tmp_path, "valid", num_frames=2)
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "helpers" / "tiny_crossvis.yaml").read_text())
    recipe["data"] = {"test": {"annotations": str(annotations), "images": str(images)}}
    monkeypatch.setattr(threads, "free_physical_cores", lambda window=0.0: 2)  # the recipe default would be 2
    seen = []
    from crossvis.inference import predictor as predictor_module
    original_track = predictor_module.OnlinePredictor.track

    def track(self, frames):
        seen.append(torch.get_num_threads())
        yield from original_track(self, frames)

    monkeypatch.setattr(predictor_module.OnlinePredictor, "track", track)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        table = backend_accuracy(recipe, ["fp32"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert table["fp32"]["mask_iou"] == 1.0 and table["fp32"]["dAP"] == 0.0


def test_rle_benchmark_checks_the_strings_and_times_each_encoder(capsys):
    import bench_rle
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    masks = bench_rle.frame_masks(40, 64, 5, 0.25, rng)
    assert masks.shape == (40, 64, 5) and masks.flags.f_contiguous and masks.dtype == np.uint8
    widths = [np.flatnonzero(masks[:, :, i].any(axis=0)) for i in range(5)]
    assert all(0 < len(cols) <= 0.25 * 1.5 * 64 + 1 and len(cols) == cols[-1] - cols[0] + 1 for cols in widths)
    whole = bench_rle.every_column(lambda m: bench_rle.rle_encode.encode_counts(m, 1))
    assert whole(masks) == [r["counts"] for r in mask_utils.encode(masks)]
    assert bench_rle.main(["--height", "40", "--width", "64", "--masks", "5", "--frames", "2", "--spans", "0.2,1.0"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["0.2", "1.0"] and all(len(row.split()) == 8 for row in rows)
