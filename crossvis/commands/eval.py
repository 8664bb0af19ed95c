"""``crossvis eval``: online inference over ``data.test`` with a trained checkpoint, then scoring."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    from crossvis.commands.recipe import add_inference_arguments

    parser = subparsers.add_parser(
        "eval", help="run online inference on data.test and write results (+ metrics with ground truth)",
        description="Track every video of the recipe's data.test online and write DIR/results.json, "
                    "DIR/results.zip (YouTube-VIS server layout) and, when the annotations have ground "
                    "truth, DIR/metrics.json (official AP/AR).")
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML (the one the checkpoint was trained with)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="model weights (.pth)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    add_inference_arguments(parser, "data.test.annotations=valid.json tracker.max_age=30")
    parser.add_argument("--force", action="store_true",
                        help="replace results.json / results.zip / metrics.json in DIR that an earlier "
                             "`crossvis eval` did not write (the files of an earlier eval there are always "
                             "replaced; other files are never touched)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossvis.commands.recipe import overrides_with_threads

    from crossvis.commands.evaluate import format_table
    from crossvis.inference.outputs import check_not_a_file
    from crossvis.inference.runner import eval_output_folder, infer_and_evaluate, split_paths
    from crossvis.inference.predictor import Predictor
    from crossvis.recipes import load_recipe
    from crossvis.recipes.sections import check_device
    from crossvis.errors import CrossVISError

    if not Path(args.checkpoint).is_file():
        raise CrossVISError(f"checkpoint {args.checkpoint} does not exist; pass the .pth written by crossvis train")
    check_not_a_file(args.output)
    if args.device is not None:
        check_device(args.device)
    recipe = load_recipe(args.recipe, overrides=overrides_with_threads(args))
    annotations, images = split_paths(recipe, "test")
    predictor = Predictor(recipe, checkpoint=args.checkpoint, device=args.device)
    eval_output_folder(args.output, force=args.force)  # before the (long) inference: refuse early
    start = time.perf_counter()
    metrics = infer_and_evaluate(predictor, annotations, images, args.output, progress=not args.no_progress,
                                 force=args.force)
    elapsed = time.perf_counter() - start
    output = Path(args.output)
    print(f"results: {output / 'results.json'} and {output / 'results.zip'} ({elapsed:.1f} s)")
    if metrics is None:
        print(f"{annotations} has no ground truth: upload {output / 'results.zip'} to the evaluation server")
    else:
        print(format_table(metrics))
        print(f"metrics: {output / 'metrics.json'}")
    return 0
