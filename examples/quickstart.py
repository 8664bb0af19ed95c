"""The quickstart with the Python API: synthetic data → train → online tracking → AP → overlays.

    python examples/quickstart.py [--output quickstart_output] [--fast]

The same pipeline as ``crossvis quickstart``, spelled out step by step.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from crossvis import Predictor, load_recipe
from crossvis.commands.quickstart import DATASET, pick_video_to_draw
from crossvis.data import YTVISVideoDataset, generate_synthetic_splits
from crossvis.threads import available_physical_cores
from crossvis.training import Trainer
from crossvis.inference.visualize import ContactSheet, draw_tracked_instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="quickstart_output")
    parser.add_argument("--fast", action="store_true", help="tiny run that only checks the pipeline")
    args = parser.parse_args()
    out = Path(args.output)

    # 1. a synthetic YouTube-VIS-format dataset with a held-out test split (textured backgrounds,
    #    free colours, crossing and occluding objects, a panning camera: see crossvis.data.synthetic)
    settings = {**DATASET, **({"train_videos": 6, "test_videos": 2, "num_frames": 6} if args.fast else {})}
    splits = generate_synthetic_splits(out / "data", progress=True, **settings)

    # 2. the built-in quickstart recipe, pointed at that data
    overrides = {"data.train.annotations": str(splits["train"].annotations),
                 "data.train.images": str(splits["train"].images),
                 "data.test.annotations": str(splits["test"].annotations),
                 "data.test.images": str(splits["test"].images),
                 "runtime.num_threads": available_physical_cores()}  # physical cores this process may use
    if args.fast:
        overrides.update({"solver.max_iter": 20, "solver.steps": [15], "solver.warmup_iters": 5})
    recipe = load_recipe("crossvis:quickstart_synthetic", overrides)

    # 3. train; with data.test set, training ends with online inference + evaluation (run/eval/)
    run_dir = out / "run"
    result = Trainer(recipe, run_dir, resume=True).train()  # resume=True starts afresh without a checkpoint
    print("held-out AP (fraction):", f"{result['metrics']['AP']:.3f}" if result["metrics"] else "n/a")

    # 4. reload the final checkpoint as a user would and draw the test video with the most
    #    tracks that cross: overlays per frame and a contact sheet (frames x time, one colour per track)
    predictor = Predictor(run_dir / "recipe.yaml", checkpoint=run_dir / "checkpoints" / "model_final.pth")
    video = YTVISVideoDataset(str(splits["test"].annotations),
                              str(splits["test"].images))[pick_video_to_draw(splits["test"].annotations)]
    frames = [np.ascontiguousarray(f.permute(1, 2, 0).numpy()) for f in video["frames"]]
    folder = out / "overlays" / video["name"]
    folder.mkdir(parents=True, exist_ok=True)
    sheet = ContactSheet(predictor.category_name)
    for index, (frame, instances) in enumerate(zip(frames, predictor.track(frames))):
        image = draw_tracked_instances(frame, instances, predictor.category_name, score_threshold=0.3)
        Image.fromarray(image).save(folder / f"{index:05d}.jpg")
        sheet.add(index, image, instances, score_threshold=0.3)
    print("overlays in", folder, "contact sheet", sheet.save(out / "overlays" / "contact_sheet.png"))


if __name__ == "__main__":
    main()
