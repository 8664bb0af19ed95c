"""``crossvis dataset``: check, summarise or synthesise YouTube-VIS-format datasets.

* ``crossvis dataset check ANN.json [--images DIR] [--verify-images]`` lists every problem, one per
  line, then a summary; exit status 1 when there are errors, 0 otherwise.
* ``crossvis dataset stats ANN.json`` prints counts per split and per category.
* ``crossvis dataset synth OUT [--videos N --frames T --size HxW --categories K --seed S ...]``
  writes a synthetic dataset (``--test-videos M`` adds a held-out split: OUT/train and OUT/test).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from crossvis.errors import CrossVISError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="check, summarise or synthesise YouTube-VIS-format data",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    check = verbs.add_parser("check", help="list every problem of an annotation file and its frames")
    check.add_argument("annotations", help="YouTube-VIS-format JSON (per-track or CocoVID layout)")
    check.add_argument("--images", help="folder the JSON file_names are relative to (checks the frames exist)")
    check.add_argument("--verify-images", action="store_true",
                       help="also open every frame and compare its size with the video's")
    check.set_defaults(func=run_check)

    stats = verbs.add_parser("stats", help="print counts of videos, frames, tracks and categories")
    stats.add_argument("annotations", help="YouTube-VIS-format JSON")
    stats.set_defaults(func=run_stats)

    synth = verbs.add_parser("synth", help="write a synthetic YouTube-VIS-format dataset")
    synth.add_argument("output", help="output folder")
    synth.add_argument("--videos", type=int, default=10, help="number of videos (train split)")
    synth.add_argument("--test-videos", type=int, default=0,
                       help="also write a held-out test split with this many videos (OUT/train, OUT/test)")
    synth.add_argument("--frames", type=int, default=12, help="frames per video")
    synth.add_argument("--size", default="128x192", help="frame size HxW")
    synth.add_argument("--categories", type=int, default=4, help="number of shape categories (1-8)")
    synth.add_argument("--max-objects", type=int, default=3, help="most objects per video")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split-name", default="train", help="split name of a single-split dataset")
    synth.set_defaults(func=run_synth)


def run_check(args: argparse.Namespace) -> int:
    from crossvis.data.check import check_annotations

    report = check_annotations(args.annotations, images=args.images, verify_images=args.verify_images)
    for problem in report.problems:
        print(problem.format(report.path))
    print(report.summary())
    if args.images is None:
        print("note: frame files were not checked; pass --images DIR to check them")
    return 1 if report.errors else 0


def run_stats(args: argparse.Namespace) -> int:
    from crossvis.data.annotations import load_vis_annotations

    data = load_vis_annotations(args.annotations)
    tracks = [t for ts in data.tracks.values() for t in ts]
    masks = sum(1 for t in tracks for s in t.segmentations if s is not None)
    sizes = Counter(f"{v.height}x{v.width}" for v in data.videos)
    print(f"{data.path}: {len(data.videos)} videos, {sum(len(v) for v in data.videos)} frames, "
          f"{len(tracks)} tracks ({sum(t.iscrowd for t in tracks)} crowd), {masks} masks, "
          f"{data.num_classes} categories")
    print("frame sizes: " + ", ".join(f"{s} ({n})" for s, n in sizes.most_common()))
    per_category = Counter(t.category_id for t in tracks)
    for cat in data.categories:
        print(f"  {int(cat['id']):>4} {str(cat.get('name', '')):<24} {per_category[int(cat['id'])]} tracks")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from crossvis.data.synthetic import generate_synthetic_dataset, generate_synthetic_splits

    try:
        height, width = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise CrossVISError(f"--size must look like 128x192 (HxW), got {args.size!r}") from None
    common = dict(num_frames=args.frames, height=height, width=width, num_categories=args.categories,
                  max_objects=args.max_objects, seed=args.seed)
    start = time.perf_counter()
    if args.test_videos > 0:
        splits = generate_synthetic_splits(args.output, train_videos=args.videos, test_videos=args.test_videos,
                                           **common)
    else:
        splits = {args.split_name: generate_synthetic_dataset(args.output, num_videos=args.videos,
                                                              split_name=args.split_name, **common)}
    elapsed = time.perf_counter() - start
    for name, paths in splits.items():
        print(f"{name}: annotations {paths.annotations}  images {paths.images}")
    print(f"generated in {elapsed:.2f} s")
    return 0
