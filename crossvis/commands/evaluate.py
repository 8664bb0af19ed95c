"""``crossvis evaluate``: score a YouTube-VIS results file against annotations (official YouTube-VIS or OVIS AP/AR)."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from crossvis.errors import CrossVISError
from crossvis.threads import available_physical_cores


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a YouTube-VIS results file (official AP/AR)",
        description="Score a YouTube-VIS results JSON against ground truth with the official YouTube-VIS "
                    "AP/AR, or the official OVIS AP/AR with --protocol ovis (fractions; -1 where undefined). The "
                    "annotations may be per-track YouTube-VIS or per-frame CocoVID JSON.")
    parser.add_argument("--annotations", required=True, metavar="GT.json", help="ground-truth annotation JSON")
    parser.add_argument("--results", required=True, metavar="RESULTS.json", help="results JSON (list of predictions)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with all metrics")
    parser.add_argument("--per-category", action="store_true", help="also print the AP of every category")
    # the evaluator checks the name (crossvis.eval.PROTOCOLS), so --help need not import it
    parser.add_argument("--protocol", default="ytvis", metavar="{ytvis,ovis}",
                        help="ytvis (default): the 12 YouTube-VIS metrics; ovis: the 18 OVIS metrics with the "
                             "occlusion bins APso/APmo/APho (needs 'occlusion' labels on every ground-truth track)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="processes for the RLE checks and track IoUs of large inputs (default 0: the physical cores "
                             "available to this process; 1: one process). The metrics do not depend on it")
    parser.set_defaults(func=run, quick_exit=True)  # see crossvis.cli.entry


def run(args: argparse.Namespace) -> int:
    from crossvis.eval import YTVISEvaluator

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _print_warning
        if args.workers < 0:
            raise CrossVISError(f"--workers must be >= 0 (0 = the physical cores), got {args.workers}")
        workers = args.workers or available_physical_cores()
        evaluator = YTVISEvaluator(args.annotations, protocol=args.protocol, workers=workers)
        if args.protocol == "ytvis" and evaluator.gt.all_have_occlusion:
            print("crossvis: note: every ground-truth track has occlusion labels; pass --protocol ovis for the "
                  "OVIS metrics (APso/APmo/APho)", file=sys.stderr)
        metrics = evaluator.evaluate(args.results)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(format_table(metrics, per_category=args.per_category))
    return 0


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"crossvis: warning: {message}", file=sys.stderr)


def format_table(metrics: dict[str, float], per_category: bool = False) -> str:
    """A readable two-column table of the summary metrics, optionally per-category AP.

    Values are fractions in [0, 1] with 4 decimals, the official evaluator's scale (the same as
    metrics.json, the training log and ``crossvis quickstart``); ``-`` where undefined (-1).
    """
    def cell(v: float) -> str:
        return f"{'-':>6}" if v < 0 else f"{v:6.4f}"

    lines = [f"{'metric':<10} {'value':>6}  (fractions in [0, 1], as the official evaluator)", "-" * 17]
    lines += [f"{key:<10} {cell(value)}" for key, value in metrics.items() if not key.startswith("AP/")]
    if per_category:
        rows = [(k[3:], v) for k, v in metrics.items() if k.startswith("AP/")]
        width = max([len(name) for name, _ in rows] + [8])
        lines += ["", f"{'category':<{width}} {'AP':>6}", "-" * (width + 7)]
        lines += [f"{name:<{width}} {cell(v)}" for name, v in rows]
    return "\n".join(lines)
