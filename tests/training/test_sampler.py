"""The deterministic grouped batch sampler and per-sample keyed randomness."""
import itertools
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from crossvis.training.sampler import GroupedInfiniteBatchSampler, KeyedDataset, SampleKey
from crossvis.errors import CrossVISError


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


group_lists = st.lists(st.integers(0, 1), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(groups=group_lists, batch=st.integers(1, 6), seed=st.integers(0, 2**31), start=st.integers(0, 25))
def test_stream_is_a_pure_function_of_seed_and_iteration(groups, batch, seed, start):
    full = _take(GroupedInfiniteBatchSampler(groups, batch, seed), start + 5)
    resumed = _take(GroupedInfiniteBatchSampler(groups, batch, seed, start_iter=start), 5)
    assert resumed == full[start:]


@settings(max_examples=40, deadline=None)
@given(groups=group_lists, batch=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_batches_are_single_group_and_each_epoch_covers_every_index(groups, batch, seed):
    sampler = GroupedInfiniteBatchSampler(groups, batch, seed)
    epoch = _take(sampler, sampler.batches_per_epoch)
    seen = set()
    for b in epoch:
        assert len(b) == batch
        assert len({groups[k.index] for k in b}) == 1
        assert {k.epoch for k in b} == {0}
        seen.update(k.index for k in b)
    assert seen == set(range(len(groups)))
    # the expected count: ceil(n_g / batch) per group
    counts = [groups.count(g) for g in set(groups)]
    assert sampler.batches_per_epoch == sum(-(-c // batch) for c in counts)


@settings(max_examples=30, deadline=None)
@given(groups=group_lists, per_rank=st.integers(1, 3), world=st.integers(1, 4), seed=st.integers(0, 99))
def test_rank_shards_concatenate_to_the_global_batch(groups, per_rank, world, seed):
    total = per_rank * world
    single = _take(GroupedInfiniteBatchSampler(groups, total, seed), 4)
    shards = [_take(GroupedInfiniteBatchSampler(groups, total, seed, rank=r, world_size=world), 4)
              for r in range(world)]
    for it in range(4):
        assert sum((s[it] for s in shards), []) == single[it]


def test_different_epochs_shuffle_differently():
    s = GroupedInfiniteBatchSampler([0] * 20, 4, seed=3)
    assert s.epoch_batches(0) != s.epoch_batches(1)
    assert s.epoch_batches(1) == GroupedInfiniteBatchSampler([0] * 20, 4, seed=3).epoch_batches(1)


def test_bad_batch_size_and_empty_dataset_are_errors():
    with pytest.raises(CrossVISError, match="multiple of the number of processes"):
        GroupedInfiniteBatchSampler([0, 1], 3, 0, world_size=2)
    with pytest.raises(CrossVISError, match="empty"):
        GroupedInfiniteBatchSampler([], 2, 0)


class _RandomDataset(torch.utils.data.Dataset):
    def __init__(self):
        self.epochs = []

    def __len__(self):
        return 5

    def set_epoch(self, e):
        self.epochs.append(e)

    def __getitem__(self, i):
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


def test_keyed_dataset_makes_samples_reproducible_and_leaves_global_rngs_alone():
    ds = KeyedDataset(_RandomDataset(), seed=5)
    torch.manual_seed(0)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    a = ds[SampleKey(2, 0)]
    b = ds[SampleKey(2, 1)]
    assert ds[SampleKey(2, 0)] == a and a != b
    assert KeyedDataset(_RandomDataset(), seed=6)[SampleKey(2, 0)] != a
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    assert ds.dataset.epochs == [0, 1, 0]
