"""NNPACK's Winograd 3×3 convolutions against direct float32 and bfloat16, per map and per network.

    python benchmarks/bench_winograd.py [--threads 2] [--arch r50] [--frames 6]
        [--backends fp32,fp32-winograd,openvino,bf16-fused]

* **Per map**: the 3×3 stride-1 convolutions of the CrossVIS networks at 360×640 (256 channels at
  P3 and P4, 128 and 64 channels at strides 8 and 4): median ms of the direct float32 convolution
  (oneDNN), bfloat16 (where the CPU has native bf16) and NNPACK
  (:class:`crossvis.inference.winograd.WinogradConv2d`), with each one's largest error against a
  float64 convolution relative to the output's magnitude.
* **bf16 F(2,3)**: a question, not a backend: would a bfloat16 Winograd F(2×2, 3×3) written in
  eager torch ops beat the direct bf16 convolution (the fast path's limit on CPUs whose bf16 peak
  is only ~2× fp32's, e.g. AMD Zen 4)? Its 16 products run as one ``torch.bmm`` (oneDNN) with
  2.25× fewer multiply-adds; the input and output transforms as two small GEMMs
  (:func:`_f23_bf16`). Timed against the direct bf16 convolution on the same channels-last maps
  (both without bias; the ``bf16 ms`` column), its error measured like the others, where the CPU
  has native bf16.
* **Per network**: the backends in ``--backends`` built on the same random-weight model and timed
  frame by frame side by side (``benchlib.time_side_by_side``), network only.

NNPACK's thread pool takes torch's thread count at its first use, so one process measures one
thread count: run the script once per ``--threads``.
"""
from __future__ import annotations

import argparse
import functools
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


#: Winograd F(2×2, 3×3) (Lavin & Gray): input tile transform Bᵀ d B, kernel G g Gᵀ, output Aᵀ m A
_F23_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_F23_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_F23_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _f23_kernels(weight: torch.Tensor) -> torch.Tensor:
    """bf16 [16, C_in, C_out]: the transformed kernels G g Gᵀ of float [C_out, C_in, 3, 3] ``weight``."""
    g = torch.tensor(_F23_G, dtype=torch.float64)
    u = torch.einsum("ai,ocij,bj->abco", g, weight.double(), g)
    return u.reshape(16, weight.shape[1], weight.shape[0]).to(torch.bfloat16).contiguous()


@functools.lru_cache(maxsize=None)
def _f23_transforms(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """[16, 16] Bᵀ⊗Bᵀ and [4, 16] Aᵀ⊗Aᵀ in ``dtype`` (their entries 0, ±1 are exact in bf16)."""
    bt, at = torch.tensor(_F23_BT, dtype=torch.float32), torch.tensor(_F23_AT, dtype=torch.float32)
    return torch.kron(bt, bt).to(dtype), torch.kron(at, at).to(dtype)


def _f23_bf16(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """bf16 [1, C_out, H, W] (channels-last): the 3×3 convolution (padding 1) of bf16
    [1, C_in, H, W] ``x`` (channels-last, as the bf16 networks run) by F(2,3), without bias."""
    n, c, h, w = x.shape
    th, tw = (h + 1) // 2, (w + 1) // 2
    padded = x.new_zeros(n, 2 * th + 2, 2 * tw + 2, c)
    padded[:, 1:h + 1, 1:w + 1] = x.permute(0, 2, 3, 1)
    # the 4×4 input tiles at stride 2, [16 (tile pixel), tiles · C_in]
    tiles = padded.unfold(1, 4, 2).unfold(2, 4, 2).permute(4, 5, 0, 1, 2, 3).reshape(16, -1)
    input_transform, output_transform = _f23_transforms(x.dtype)
    transformed = torch.mm(input_transform, tiles).view(16, n * th * tw, c)
    products = torch.bmm(transformed, kernels)                        # [16, tiles, C_out]
    out = torch.mm(output_transform, products.view(16, -1))           # [4 (output pixel), tiles · C_out]
    out = out.view(2, 2, n, th, tw, -1).permute(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, -1)
    return out[:, :h, :w].permute(0, 3, 1, 2)


def per_map_rows() -> list[str]:
    """One line per map of :data:`MAPS`: ms and relative error of each way."""
    from crossvis.inference.backends import backend_unavailable
    from crossvis.inference.winograd import WinogradConv2d

    bf16 = backend_unavailable("bf16", torch.device("cpu")) is None
    lines = [f"{'map':<14}{'GFLOP':>7}{'fp32 ms':>9}{'bf16 ms':>9}{'nnpack ms':>11}{'bf16 F(2,3)':>13}"
             f"{'err fp32':>10}{'err bf16':>10}{'err nnpack':>12}{'err F(2,3)':>12}"]
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
            bf_ms = bf_err = f23_ms = f23_err = float("nan")
            if bf16:
                xb, wb, bb = x.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16()
                bf_err = error(F.conv2d(xb, wb, bb, padding=1))
                # timed: the direct bf16 convolution and F(2,3) on the same channels-last maps, without bias
                xl = xb.contiguous(memory_format=torch.channels_last)
                wl = wb.contiguous(memory_format=torch.channels_last)
                bf_ms = _median_ms(lambda: F.conv2d(xl, wl, padding=1))
                kernels = _f23_kernels(conv.weight)
                f23_ms = _median_ms(lambda: _f23_bf16(xl, kernels))
                f23_err = error(_f23_bf16(xl, kernels) + conv.bias[:, None, None])
        gflop = 2.0 * c * c * 9 * h * w / 1e9
        lines.append(f"{f'{c}@{h}x{w}':<14}{gflop:>7.2f}{fp32_ms:>9.1f}{bf_ms:>9.1f}{nn_ms:>11.1f}{f23_ms:>13.1f}"
                     f"{fp32_err:>10.1e}{bf_err:>10.1e}{nn_err:>12.1e}{f23_err:>12.1e}")
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
    allocator = bench.keep_freed_memory()  # no page faults on the large temporaries of each call
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {threads} threads; {allocator}")
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
