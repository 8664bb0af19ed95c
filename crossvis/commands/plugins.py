"""``crossvis plugins [--json]``: loaded plugins, their distributions, and failures."""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plugins", help="list loaded plugins (built-in and installed)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
