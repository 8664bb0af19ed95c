"""A deterministic, resumable, shardable batch sampler with aspect-ratio grouping.

The stream of training batches is a pure function of ``(seed, iteration)``: epoch ``e`` shuffles
every aspect-ratio group with a generator seeded by ``(seed, e)``, cuts each group into batches
of ``batch_size`` (the last one of a group is completed by wrapping around that group's
permutation, so no frame pair is dropped and every epoch has the same number of batches), and
shuffles the order of the batches. Iteration ``i`` therefore lives in epoch
``i // batches_per_epoch`` at offset ``i % batches_per_epoch`` and a resumed run can start at any
iteration without replaying the ones before it.

Under ``torchrun`` every rank computes the same global batch and keeps its contiguous slice of
``batch_size / world_size`` entries, so the union of the ranks' batches equals the batch of a
single-process run with the same total batch size.

Each element yielded is a :class:`SampleKey` ``(index, epoch)``; :class:`KeyedDataset` turns it
into the sample with the dataset's augmentation randomness keyed by it.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from crossvis.errors import CrossVISError

__all__ = ["SampleKey", "GroupedInfiniteBatchSampler", "KeyedDataset", "aspect_ratio_groups"]


class SampleKey(NamedTuple):
    index: int
    epoch: int


def aspect_ratio_groups(dataset: Any, enabled: bool = True) -> list[int]:
    """Group id per dataset index: ``dataset.aspect_ratio_group(i)`` (0 landscape, 1 portrait).

    Falls back to a single group when grouping is disabled or the dataset does not provide it.
    """
    n = len(dataset)
    if not enabled or not hasattr(dataset, "aspect_ratio_group"):
        return [0] * n
    return [int(dataset.aspect_ratio_group(i)) for i in range(n)]


class GroupedInfiniteBatchSampler(Sampler[list[SampleKey]]):
    """Endless batches of :class:`SampleKey`, identical for a given ``(seed, iteration)``.

    Args:
        group_ids: group id of each dataset index (length = dataset size), see
            :func:`aspect_ratio_groups`.
        batch_size: the **total** batch size over all ranks (``solver.ims_per_batch``).
        seed: base seed of the shuffles.
        start_iter: the first iteration to yield (resume).
        rank, world_size: this process's shard; ``batch_size`` must be divisible by ``world_size``.
    """

    def __init__(self, group_ids: Sequence[int], batch_size: int, seed: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(group_ids) == 0:
            raise CrossVISError("the training dataset is empty: no frame has a valid instance; "
                                "check data.train.annotations")
        if batch_size <= 0 or batch_size % world_size:
            raise CrossVISError(f"solver.ims_per_batch={batch_size} must be a positive multiple of the "
                                f"number of processes ({world_size})")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.start_iter = int(start_iter)
        self.rank = rank
        self.world_size = world_size
        groups: dict[int, list[int]] = {}
        for index, g in enumerate(group_ids):
            groups.setdefault(int(g), []).append(index)
        self._groups = [np.asarray(groups[g], dtype=np.int64) for g in sorted(groups)]
        self.batches_per_epoch = sum(-(-len(g) // batch_size) for g in self._groups)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All global batches (dataset indices) of ``epoch``, in order."""
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        batches: list[list[int]] = []
        for members in self._groups:
            perm = members[rng.permutation(len(members))]
            n_batches = -(-len(perm) // self.batch_size)
            padded = np.resize(perm, n_batches * self.batch_size)  # wraps around the permutation
            batches.extend(padded.reshape(n_batches, self.batch_size).tolist())
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def global_batch(self, iteration: int) -> list[SampleKey]:
        """The full (all-rank) batch of ``iteration``."""
        epoch, offset = divmod(iteration, self.batches_per_epoch)
        return [SampleKey(i, epoch) for i in self.epoch_batches(epoch)[offset]]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        per_rank = self.batch_size // self.world_size
        lo = self.rank * per_rank
        epoch, offset = divmod(self.start_iter, self.batches_per_epoch)
        while True:
            batches = self.epoch_batches(epoch)
            for batch in batches[offset:]:
                yield [SampleKey(i, epoch) for i in batch[lo:lo + per_rank]]
            epoch, offset = epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "batch_size": self.batch_size,
                "batches_per_epoch": self.batches_per_epoch}


def _sample_seed(seed: int, key: SampleKey) -> int:
    return int(np.random.SeedSequence([seed, key.epoch, key.index]).generate_state(1)[0])


class KeyedDataset(Dataset):
    """Wraps a map-style dataset so that ``dataset[SampleKey]`` is reproducible.

    Before reading an index it calls ``dataset.set_epoch(epoch)`` (when the dataset has it) and
    seeds Python's, NumPy's and torch's global generators from ``(seed, epoch, index)``; the
    caller's generator states are restored afterwards, so training randomness elsewhere is not
    disturbed when loading runs in the main process (``runtime.num_workers: 0``).
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self._epoch: Optional[int] = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        index, epoch = key
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._epoch = epoch
        s = _sample_seed(self.seed, SampleKey(index, epoch))
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(s)
            np.random.seed(s % 2**32)
            # the CPU generator only: torch.manual_seed also queues lazy CUDA/XPU/MTIA seeding,
            # formatting a Python stack each time (~2 ms per sample)
            torch.default_generator.manual_seed(s)
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)
