"""``crossvis bench``: runs ``benchmarks/bench_latency.py`` of a source checkout (the benchmark code is not in the library)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="per-frame latency of CrossVIS vs torchvision detectors (benchmarks/bench_latency.py)",
        description="Runs benchmarks/bench_latency.py of the crossvis source checkout with the given options "
                    "(see `crossvis bench --help-bench`). The benchmarks are not installed with the library.")
    p.add_argument("--help-bench", action="store_true", help="show the benchmark's own options")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options passed to bench_latency.py")
    p.set_defaults(func=run, passthrough=True)  # every argument after `bench` goes to the script


def benchmarks_folder() -> Path:
    """``benchmarks/`` beside the package in a source checkout (an editable install)."""
    return Path(__file__).resolve().parents[2] / "benchmarks"


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from crossvis.errors import CrossVISError

    script = benchmarks_folder() / "bench_latency.py"
    if not script.is_file():
        raise CrossVISError(f"crossvis bench needs the benchmarks of a source checkout ({script} is missing); "
                            f"clone the crossvis repository and `pip install -e .` it")
    spec = importlib.util.spec_from_file_location("crossvis_bench_latency", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    options = [o for o in args.options if o != "--help-bench"]
    if args.help_bench:
        options = ["--help"]
    return int(module.main(options) or 0)
