"""``crossvis components [--kind K] [--json]``: every registered component with its provider."""
from __future__ import annotations

import argparse
import json

from crossvis.registry import KINDS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("components", help="list registered components and their providers")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossvis.plugins import get_plugin_manager

    pm = get_plugin_manager()
    rows = [{"kind": e.kind, "name": e.name, "provider": e.provider, "distribution": e.distribution,
             "object": e.qualname} for e in pm.registry.entries(args.kind)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = [max([len(h)] + [len(r[h]) for r in rows]) for h in ("kind", "name", "provider")]
    header = ("kind", "name", "provider")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  object")
    for r in rows:
        print("  ".join(r[h].ljust(w) for h, w in zip(header, widths)) + f"  {r['object']}")
    for failure in pm.failures:
        print(f"(skipped) {failure.message()}")
    return 0
