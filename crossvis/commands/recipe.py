"""``crossvis recipe show RECIPE [--set k=v ...]``: print the resolved recipe."""
from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, example: str = "solver.max_iter=100") -> None:
    """The shared ``--set k=v [k=v ...]`` option (repeatable; values parsed as YAML scalars)."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help=f"override recipe values, e.g. --set {example}")


def add_inference_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The options of the commands that run a model on videos (``eval``, ``demo``): ``--set``,
    ``--device``, ``--threads`` (read with :func:`overrides_with_threads`) and ``--no-progress``."""
    add_set_argument(parser, example)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: runtime.device of the recipe)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads (default: runtime.num_threads of the recipe; 0 = the physical cores "
                             "available to this process)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recipe", help="inspect recipes")
    sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved recipe (after _base_ and --set)")
    show.add_argument("recipe", help="recipe YAML file or crossvis:NAME")
    add_set_argument(show)
    show.add_argument("--provenance", action="store_true", help="print file:line of every value")
    show.set_defaults(func=run_show)
    check = sub.add_parser("check", help="resolve the recipe and build its model (validates every component)")
    check.add_argument("recipe", help="recipe YAML file or crossvis:NAME")
    add_set_argument(check)
    check.add_argument("--num-classes", type=int, help="default: model.num_classes or the training data")
    check.add_argument("--num-identities", type=int, help="default: model.num_identities or the training data")
    check.set_defaults(func=run_check)


def validate_sections(recipe) -> None:
    """Check ``solver:`` and ``runtime:`` exactly as ``crossvis train`` does (one schema)."""
    from crossvis.recipes.sections import section

    for name in ("solver", "runtime"):
        section(recipe, name)


def run_show(args: argparse.Namespace) -> int:
    from crossvis.recipes import RecipeNode, dump_recipe, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    validate_sections(recipe)
    if not args.provenance:
        print(dump_recipe(recipe), end="")
        return 0

    def walk(node: RecipeNode, indent: int) -> None:
        for key, value in node.items():
            loc = node.locations.get(key, "")
            pad = "  " * indent
            if isinstance(value, dict):
                print(f"{pad}{key}:{'  # ' + loc if loc else ''}")
                walk(value, indent + 1)
            else:
                print(f"{pad}{key}: {value!r}{'  # ' + loc if loc else ''}")

    walk(recipe, 0)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossvis.models import build_model
    from crossvis.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    validate_sections(recipe)
    for flag in ("num_classes", "num_identities"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            from crossvis.errors import CrossVISError

            raise CrossVISError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    num_classes, num_identities = args.num_classes, args.num_identities
    train = (recipe.get("data") or {}).get("train") or {}
    model_node = recipe.get("model") or {}
    from crossvis.data.categories import check_declared_categories, declared_categories

    declared = declared_categories(recipe)
    annotations = train.get("annotations")
    needed = num_classes is None and "num_classes" not in model_node and declared is None
    if annotations and (needed or Path(annotations).is_file()):
        # the declared categories make the file optional; when it is there, it must agree with them
        from crossvis.data import load_vis_annotations

        ann = load_vis_annotations(annotations)
        check_declared_categories(declared, ann.categories, str(annotations))
        num_classes = num_classes if num_classes is not None or "num_classes" in model_node else ann.num_classes
        num_identities = num_identities if num_identities is not None else ann.num_identities
    model = build_model(recipe, num_classes=num_classes, num_identities=num_identities)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{args.recipe}: OK — {type(model).__name__} with {total:,} parameters ({trainable:,} trainable)")
    return 0


def overrides_with_threads(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides plus ``runtime.num_threads`` from ``--threads``."""
    from crossvis.errors import CrossVISError

    if args.threads is None:
        return list(args.overrides)
    if args.threads < 0:
        raise CrossVISError(f"--threads must be >= 0 (0: all physical cores), got {args.threads}")
    return [*args.overrides, f"runtime.num_threads={args.threads}"]
