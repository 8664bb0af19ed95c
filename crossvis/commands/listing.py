"""``crossvis components [--kind K] [--json]`` and ``crossvis plugins [--json]``: what the plugins provide."""
from __future__ import annotations

import argparse
import json

from crossvis.registry import KINDS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("components", help="list registered components and their providers")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run_components)
    p = subparsers.add_parser("plugins", help="list loaded plugins (built-in and installed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_plugins)


def run_components(args: argparse.Namespace) -> int:
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


def run_plugins(args: argparse.Namespace) -> int:
    from crossvis.plugins import get_plugin_manager

    pm = get_plugin_manager()
    loaded = []
    for name, _plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(_plugin) or [])
        loaded.append({"name": name, "distribution": pm.distributions.get(name, "?"), "hooks": hooks})
    failed = [f.__dict__ for f in pm.failures]
    if args.json:
        print(json.dumps({"loaded": loaded, "failed": failed}, indent=2))
        return 0
    for item in loaded:
        print(f"{item['name']}  ({item['distribution']})  hooks: {', '.join(item['hooks'])}")
    for f in pm.failures:
        print(f"FAILED  {f.message()}")
    return 0
