"""``crossvis train RECIPE --output DIR [--set k=v ...] [--resume]`` (also under ``torchrun``)."""
from __future__ import annotations

import argparse

from crossvis.commands.recipe import add_set_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model from a recipe",
        description="Train a model from a recipe. Writes DIR/recipe.yaml, DIR/metrics.jsonl, "
                    "DIR/checkpoints/ and, when data.test is set, DIR/eval/. Multi-process: "
                    "torchrun --nproc_per_node N -m crossvis train ...")
    p.add_argument("recipe", help="recipe YAML file or crossvis:NAME")
    p.add_argument("--output", required=True, metavar="DIR", help="run folder")
    add_set_argument(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in DIR/checkpoints that loads (an unreadable one "
                        "is renamed NAME.broken and the previous one used)")
    p.add_argument("--force", action="store_true",
                   help="start a new run in a DIR that holds an earlier run's recipe.yaml, metrics.jsonl, "
                        "checkpoints/, ... (they are deleted); without it or --resume such a DIR is refused")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossvis.distributed import cleanup_distributed
    from crossvis.training.trainer import Trainer
    from crossvis.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    ok = False
    try:
        result = Trainer(recipe, args.output, resume=args.resume, force=args.force).train()
        ok = True
    finally:
        cleanup_distributed(wait=ok)
    print(f"crossvis: finished {result['iteration']} iterations; outputs in {args.output}")
    return 0
