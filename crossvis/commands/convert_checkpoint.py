"""``crossvis convert-checkpoint SRC DST``: official CrossVIS / CondInst weights → crossvis checkpoint + recipe."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert-checkpoint", help="convert an official CrossVIS/CondInst checkpoint",
        description="Convert an official CrossVIS or AdelaiDet CondInst checkpoint (detectron2 .pth or .pkl) "
                    "to a crossvis checkpoint DST and a recipe DST with suffix .yaml that reproduces the "
                    "official inference (use it with crossvis eval / demo). Prints the loaded / skipped / "
                    "missing / unexpected tensors.")
    p.add_argument("src", metavar="SRC", help="official checkpoint (.pth or .pkl)")
    p.add_argument("dst", metavar="DST", help="output crossvis checkpoint (.pth); the recipe goes next to it")
    p.add_argument("--num-classes", type=int, default=40, metavar="N",
                   help="classes of the converted model (default 40, YouTube-VIS 2019)")
    p.add_argument("--num-identities", type=int, default=None, metavar="M",
                   help="identity proxies (default: the checkpoint's, else 3774)")
    p.add_argument("--arch", choices=("r50", "r101", "dla34"), default=None,
                   help="backbone (default: detected from the checkpoint keys)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing DST and DST's .yaml (DST = SRC is always refused)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossvis.errors import CrossVISError
    from crossvis.inference.outputs import check_output_file

    for flag in ("num_classes", "num_identities"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CrossVISError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if not Path(args.src).is_file():
        state = "is not a file" if Path(args.src).exists() else "does not exist"
        raise CrossVISError(f"SRC {args.src} {state}; pass an official CrossVIS/CondInst .pth or .pkl")
    dst = Path(args.dst)
    if dst.suffix == ".yaml":
        raise CrossVISError(f"DST {dst}: the converted checkpoint needs a .pth name (its recipe is written "
                            f"beside it as .yaml)")
    for target in (dst, dst.with_suffix(".yaml")):
        check_output_file(target, inputs=[args.src], force=args.force)
    from crossvis.deploy.convert import convert_checkpoint

    convert_checkpoint(args.src, args.dst, num_classes=args.num_classes, num_identities=args.num_identities,
                       arch=args.arch)
    print(f"crossvis: wrote {args.dst} and {Path(args.dst).with_suffix('.yaml')}")
    return 0
