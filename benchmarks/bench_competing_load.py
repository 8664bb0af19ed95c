"""Inference throughput next to a competing CPU load, against the same run without it.

    python benchmarks/bench_competing_load.py [--arch dla34] [--busy 1] [--frames 4] [--backend fp32]

Runs the network of ``--arch`` (random weights, 360×640, network only) for ``--frames`` frames:

1. with no extra load, at the default thread count (the physical cores available to the process,
   :func:`crossvis.threads.available_physical_cores`);
2. next to ``--busy`` processes that each spin one core, at the inference default, which leaves
   out the cores others keep busy (:func:`crossvis.threads.free_physical_cores`, measured while
   the load runs: what ``crossvis eval`` / ``demo`` / ``bench`` and ``Predictor`` use);
3. next to the same load with every available core (the default before it was load-aware: the
   cores are oversubscribed).

Throughput should degrade at most in proportion to the lost cores: ``loaded / idle ≥ (cores − busy) / cores``;
the script prints that bound next to the ratios. The busy processes are started and stopped by
this script (``multiprocessing``); other load on the machine (``uptime``) is printed and adds to it.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "crossvis" not in sys.modules:
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from crossvis.threads import set_openmp_defaults  # noqa: E402

set_openmp_defaults()  # before torch loads OpenMP, as the crossvis command does
import torch  # noqa: E402

import benchlib as bench  # noqa: E402


def _spin(stop: "mp.synchronize.Event") -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _throughput(arch: str, frames: list, threads: int, warmup: int, backend: str) -> float:
    torch.set_num_threads(threads)
    result = bench.bench_network(arch, frames, warmup=warmup, backend=backend)
    return 1000.0 / result.median_ms


def main(argv: list[str] | None = None) -> int:
    from crossvis.inference.autotune import cpu_model
    from crossvis.threads import available_physical_cores, resolve_num_threads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="dla34")
    parser.add_argument("--busy", type=int, default=1, help="competing processes, one busy core each")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backend", default="fp32", help="network backend (crossvis.inference.backends)")
    args = parser.parse_args(argv)
    cores = available_physical_cores()
    frames = bench.synthetic_frames(args.frames + args.warmup)
    print(f"cpu: {cpu_model()}; {cores} physical cores available; load average before "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    idle = _throughput(args.arch, frames, cores, args.warmup, args.backend)
    stop = mp.Event()
    workers = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    try:
        default = resolve_num_threads(None, load_aware=True)
        loaded_default = _throughput(args.arch, frames, default, args.warmup, args.backend)
        loaded_all = _throughput(args.arch, frames, cores, args.warmup, args.backend)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
    bound = max(cores - args.busy, 0) / cores
    print(f"{'configuration':<44}{'frames/s':>10}{'/idle':>8}{'bound':>8}")
    print(f"{f'idle, {cores} threads':<44}{idle:>10.3f}{1.0:>8.2f}{'':>8}")
    print(f"{f'{args.busy} busy, {default} threads (default, load-aware)':<44}{loaded_default:>10.3f}"
          f"{loaded_default / idle:>8.2f}{bound:>8.2f}")
    print(f"{f'{args.busy} busy, {cores} threads (every core)':<44}{loaded_all:>10.3f}"
          f"{loaded_all / idle:>8.2f}{bound:>8.2f}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
