"""``crossvis export RECIPE --checkpoint CKPT --output FILE``: the per-frame network as torch.export / ONNX."""
from __future__ import annotations

import argparse

from crossvis.commands.recipe import add_set_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export the per-frame network (torch.export or ONNX)",
        description="Export the model's per-frame network (normalised padded image -> per-level class/box/"
                    "centerness/controller/embedding maps and mask features) for a fixed input size. The dynamic "
                    "mask head, post-processing and tracker stay in Python (crossvis.deploy.export."
                    "predict_from_outputs).")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="model weights (default: random init)")
    p.add_argument("--output", required=True, metavar="FILE", help="output file (.pt2 or .onnx)")
    p.add_argument("--format", dest="fmt", choices=("torch-export", "onnx"), default="torch-export",
                   help="torch-export (default) or onnx (needs the onnx package)")
    p.add_argument("--height", type=int, default=384, help="padded input height, a multiple of 32 (default 384)")
    p.add_argument("--width", type=int, default=640, help="padded input width, a multiple of 32 (default 640)")
    add_set_argument(p)
    p.add_argument("--force", action="store_true", help="replace an existing output FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossvis.inference.outputs import check_output_file

    check_output_file(args.output, inputs=[args.recipe, args.checkpoint], force=args.force)
    from crossvis.deploy.export import export_network, output_names
    from crossvis.inference.predictor import Predictor
    from crossvis.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    model = Predictor(recipe, checkpoint=args.checkpoint, device="cpu").model
    path = export_network(model, args.output, args.fmt, args.height, args.width)
    print(f"crossvis: wrote {path} (input images [1, 3, {args.height}, {args.width}]; outputs "
          f"{', '.join(output_names(model))})")
    return 0
