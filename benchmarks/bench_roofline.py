"""Roofline of the per-frame network: GFLOPs per frame, this CPU's measured peak, the fraction reached.

    python benchmarks/bench_roofline.py [--arch r50,dla34] [--threads 0] [--frames 3]
        [--backends fp32,fp32-cl,fp32-winograd,bf16,onnxruntime,openvino,openvino-bf16,onnxruntime-int8,openvino-int8]

* **GFLOPs per frame**: ``torch.utils.flop_counter.FlopCounterMode`` over ``model.network`` at the
  official test size (360×640 padded to 384×640), dense=False (what inference runs: the
  controller and embedding projections are applied at the kept locations only), 1 FLOP = one
  multiply or one add (a multiply-accumulate is 2).
* **Peak**: the best of a large square GEMM (``torch.mm`` 2048³) and a ResNet-like 3×3 convolution
  (256→256 channels at 96×160, channels-last, the bulk of both networks), in float32, bfloat16
  (native oneDNN bf16 only where the CPU has it) and int8 (``torch._int_mm`` GEMM; x86 quantized
  ``quantized::conv2d``), at the same thread count — what a kernel of this torch build reaches on
  this CPU, not a datasheet figure. ``fp32-winograd``: the same convolution by NNPACK's Winograd
  kernels, counted in direct-convolution FLOPs (fewer multiplications: it can pass the fp32 peak).
* **Fraction**: network GFLOPs / median network time of each backend (as in ``crossvis bench``) /
  the peak of that backend's arithmetic (fp32 for fp32 paths, bf16 for bf16 paths, int8 for int8).
"""
from __future__ import annotations

import argparse
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

import benchlib as bench  # noqa: E402

def backend_precision(backend: str) -> str:
    """The arithmetic a backend runs its convolutions in (its name says it: ``bf16-fused``, ``openvino-int8``)."""
    if "winograd" in backend:
        return "fp32-winograd"
    return next((p for p in ("int8", "bf16") if p in backend), "fp32")


def network_gflops(arch: str, height: int = 384, width: int = 640) -> float:
    """GFLOPs (1e9 multiply or add) of one ``network(images, dense=False)`` pass."""
    from torch.utils.flop_counter import FlopCounterMode

    model = bench.crossvis_model(arch)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.network(torch.zeros(1, 3, height, width), dense=False)
    return counter.get_total_flops() / 1e9


def _best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measured_peaks() -> dict[str, dict[str, float]]:
    """GFLOP/s of GEMM and 3×3 convolution per precision (NaN where this build/CPU has no kernel)."""
    from crossvis.inference.backends import backend_unavailable

    n = 2048
    gemm_flops = 2.0 * n ** 3
    conv_shape = (1, 256, 96, 160)
    conv_flops = 2.0 * 256 * 256 * 9 * 96 * 160
    out: dict[str, dict[str, float]] = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    x = torch.randn(conv_shape).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        out["fp32"] = {"gemm": gemm_flops / _best_seconds(lambda: a @ b) / 1e9,
                       "conv": conv_flops / _best_seconds(lambda: conv(x)) / 1e9}
        if backend_unavailable("bf16", torch.device("cpu")) is None:
            ab, bb, xb, convb = a.bfloat16(), b.bfloat16(), x.bfloat16(), conv.bfloat16()
            out["bf16"] = {"gemm": gemm_flops / _best_seconds(lambda: ab @ bb) / 1e9,
                           "conv": conv_flops / _best_seconds(lambda: convb(xb)) / 1e9}
        else:
            out["bf16"] = {"gemm": float("nan"), "conv": float("nan")}
        out["int8"] = {"gemm": _int8_gemm(n, gemm_flops), "conv": _int8_conv(conv, x, conv_flops)}
        out["fp32-winograd"] = {"gemm": float("nan"), "conv": _winograd_conv(conv, x, conv_flops)}
    return out


def _winograd_conv(conv: torch.nn.Conv2d, x: torch.Tensor, flops: float) -> float:
    """The same convolution by NNPACK's Winograd kernels, as direct-convolution GFLOP/s (it does
    fewer multiplications, so this can exceed the fp32 peak)."""
    from crossvis.inference.winograd import WinogradConv2d, winograd_unavailable

    if winograd_unavailable(torch.device("cpu")) is not None:
        return float("nan")
    layer, contiguous = WinogradConv2d(conv.float()), x.float().contiguous()
    return flops / _best_seconds(lambda: layer.winograd(contiguous)) / 1e9


def _int8_gemm(n: int, flops: float) -> float:
    a8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    try:
        return flops / _best_seconds(lambda: torch._int_mm(a8, b8)) / 1e9
    except (RuntimeError, AttributeError):
        return float("nan")


def _int8_conv(conv: torch.nn.Conv2d, x: torch.Tensor, flops: float) -> float:
    try:
        from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

        torch.backends.quantized.engine = "x86"
        qconv = QuantizedConv2d(256, 256, 3, padding=1, bias=False)
        weight = torch.quantize_per_channel(conv.weight.float(), torch.full((256,), 0.01), torch.zeros(256, dtype=torch.long),
                                            0, torch.qint8)
        qconv.set_weight_bias(weight, None)
        qconv.scale, qconv.zero_point = 0.05, 0
        qx = torch.quantize_per_tensor(x.float(), 0.05, 128, torch.quint8)
        return flops / _best_seconds(lambda: qconv(qx)) / 1e9
    except (RuntimeError, AttributeError, ImportError):
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    from crossvis.inference.autotune import cpu_model
    from crossvis.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="r50,dla34")
    parser.add_argument("--threads", type=int, default=0, help="0: the physical cores available")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backends",
                        default="fp32,fp32-cl,fp32-winograd,bf16,onnxruntime,openvino,openvino-bf16,onnxruntime-int8,"
                                "openvino-int8",
                        help="backends timed for the fraction column ('': GFLOPs and peaks only)")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads if args.threads > 0 else None)
    allocator = bench.keep_freed_memory()
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {threads} threads; {allocator}")
    peaks = measured_peaks()
    print(f"{'measured peak GFLOP/s':<24}{'GEMM':>10}{'conv3x3':>10}")
    for precision, row in peaks.items():
        print(f"{precision:<24}{row['gemm']:>10.1f}{row['conv']:>10.1f}")
    frames = bench.synthetic_frames(args.frames + args.warmup)[args.warmup:]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    print()
    print(f"{'arch':<7}{'GFLOPs':>8}{'backend':>15}{'ms':>9}{'GFLOP/s':>9}{'peak':>8}{'fraction':>10}")
    for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
        gflops = network_gflops(arch)
        if not backends:  # --backends '': the work per frame only
            print(f"{arch:<7}{gflops:>8.1f}")
            continue
        for r, _iou, _build, why in bench.bench_backends(arch, frames, backends, warmup=args.warmup):
            name = r.mode.removeprefix("network-")
            rates = [v for v in peaks[backend_precision(name)].values() if v == v]   # NaN: no such kernel
            peak = max(rates) if why == "" and rates else float("nan")
            rate = gflops / (r.median_ms / 1000.0)
            print(f"{arch:<7}{gflops:>8.1f}{name:>15}{r.median_ms:>9.1f}{rate:>9.1f}{peak:>8.1f}"
                  f"{rate / peak:>10.2f}" + (f"  ({why})" if why else ""), flush=True)
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
