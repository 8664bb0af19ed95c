"""NNPACK's Winograd 3×3 convolutions against direct float32 and bfloat16, per map and per network.

    python benchmarks/bench_winograd.py [--threads 2] [--arch r50] [--frames 6]
        [--backends fp32,fp32-winograd,openvino,bf16-fused]

* **Per map**: the 3×3 stride-1 convolutions of the CrossVIS networks at 360×640 (256 channels at
  P3 and P4, 128 and 64 channels at strides 8 and 4): median ms of the direct float32 convolution
  (oneDNN), bfloat16 (where the CPU has native bf16) and NNPACK
  (:class:`crossvis.inference.winograd.WinogradConv2d`), with each one's largest error against a
  float64 convolution relative to the output's magnitude.
* **Per network**: the backends in ``--backends`` built on the same random-weight model and timed
  frame by frame side by side (``benchlib.time_side_by_side``), network only.

NNPACK's thread pool takes torch's thread count at its first use, so one process measures one
thread count: run the script once per ``--threads``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "crossvis" not in sys.modules:
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from crossvis.threads import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # before torch loads OpenMP, as the crossvis command does
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import benchlib as bench  # noqa: E402

#: (channels, height, width) of the maps timed per convolution
MAPS = ((256, 48, 80), (256, 24, 40), (128, 96, 160), (128, 48, 80), (64, 96, 160))


def _median_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def per_map_rows() -> list[str]:
    """One line per map of :data:`MAPS`: ms and relative error of each way."""
    from crossvis.inference.backends import backend_unavailable
    from crossvis.inference.winograd import WinogradConv2d

    bf16 = backend_unavailable("bf16", torch.device("cpu")) is None
    lines = [f"{'map':<14}{'GFLOP':>7}{'fp32 ms':>9}{'bf16 ms':>9}{'nnpack ms':>11}"
             f"{'err fp32':>10}{'err bf16':>10}{'err nnpack':>12}"]
    generator = torch.Generator().manual_seed(0)
    for c, h, w in MAPS:
        conv = torch.nn.Conv2d(c, c, 3, padding=1).eval()
        x = torch.randn(1, c, h, w, generator=generator)
        layer = WinogradConv2d(conv)
        with torch.inference_mode():
            reference = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
            scale = float(reference.abs().max())

            def error(y: torch.Tensor) -> float:
                return float((y.double() - reference).abs().max()) / scale
            fp32_ms, fp32_err = _median_ms(lambda: conv(x)), error(conv(x))
            nn_ms, nn_err = _median_ms(lambda: layer.winograd(x)), error(layer.winograd(x))
            bf_ms = bf_err = float("nan")
            if bf16:
                xb, wb, bb = x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16()
                bf_ms = _median_ms(lambda: F.conv2d(xb, wb, bb, padding=1))
                bf_err = error(F.conv2d(xb, wb, bb, padding=1))
        gflop = 2.0 * c * c * 9 * h * w / 1e9
        lines.append(f"{f'{c}@{h}x{w}':<14}{gflop:>7.2f}{fp32_ms:>9.1f}{bf_ms:>9.1f}{nn_ms:>11.1f}"
                     f"{fp32_err:>10.1e}{bf_err:>10.1e}{nn_err:>12.1e}")
    return lines


def per_network_rows(arch: str, names: list[str], frames: int) -> list[str]:
    """The backends ``names`` side by side on ``arch`` (network only): median wall and CPU ms."""
    from crossvis.inference.backends import backend_unavailable, build_backend

    model = bench.crossvis_model(arch)
    batches, _ = bench._bench_batches(model, bench.synthetic_frames(frames))
    names = [n for n in names if backend_unavailable(n, model.device) is None]
    backends = [build_backend(n, model, batches[:2]) for n in names]
    steps = [lambda batch, b=b: b(batch) for b in backends]
    times = bench.time_side_by_side(steps, batches, warmup=1)
    for b in backends:
        b.close()
    wall = [statistics.median(t for t, _ in row) * 1000.0 for row in times]
    lines = [f"{'backend':<16}{'ms':>9}{'cpu ms':>9}{'/ first':>9}"]
    for name, row, ms in zip(names, times, wall):
        cpu = statistics.median(c for _, c in row) * 1000.0
        lines.append(f"{name:<16}{ms:>9.1f}{cpu:>9.1f}{ms / wall[0]:>9.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from crossvis.inference.autotune import cpu_model
    from crossvis.inference.winograd import winograd_unavailable
    from crossvis.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="0: the physical cores available")
    parser.add_argument("--arch", default="r50", help="comma-separated networks timed ('': per map only)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--backends", default="fp32,fp32-winograd,openvino,bf16-fused")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads if args.threads > 0 else None)
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {threads} threads")
    why = winograd_unavailable(torch.device("cpu"))
    if why is not None:
        print(f"NNPACK unavailable: {why}")
        return 0
    print("\n".join(per_map_rows()), flush=True)
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        print(f"\n{arch}, network only, side by side ({args.frames} frames)")
        print("\n".join(per_network_rows(arch, [b.strip() for b in args.backends.split(",") if b.strip()],
                                         args.frames)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
