"""Subprocess entry for engine tests: train the toy model, optionally SIGKILL itself mid-run.

    python toy_train.py OUT [--resume] [--kill-after ITER] [--norm gn|bn] [--max-iter N]
    torchrun --nproc_per_node 2 toy_train.py OUT ...
"""
import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from engine_toys import ToyModel, ToyPairDataset, toy_recipe  # noqa: E402

from crossvis.engine.distributed import cleanup_distributed  # noqa: E402
from crossvis.engine.trainer import Trainer  # noqa: E402
from crossvis.plugins import get_plugin_manager, hookimpl  # noqa: E402


class KillAfter:
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    @hookimpl
    def crossvis_after_step(self, iteration):
        if iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-after", type=int)
    p.add_argument("--norm", default="gn")
    p.add_argument("--max-iter", type=int, default=6)
    a = p.parse_args()
    if a.kill_after:
        get_plugin_manager().add_plugin(KillAfter(a.kill_after), name="kill-after")
    recipe = toy_recipe(max_iter=a.max_iter)
    torch.manual_seed(0)  # the same initial weights as the in-process reference run
    Trainer(recipe, a.out, resume=a.resume, model=ToyModel(norm=a.norm), train_dataset=ToyPairDataset()).train()
    cleanup_distributed()


if __name__ == "__main__":
    main()
