"""Tests of crossvis.losses.crossover: identity matching, partner sampling, the symmetric loss."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossvis.losses.crossover import (
    combine_directions,
    crossover_dice_loss,
    match_identities,
    sample_partner_locations,
)
from crossvis.errors import CrossVISError


def ids(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


# --- match_identities -------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,expected", [
    ((3, 5, 7), (7, 3), (1, -1, 0)),
    ((1, 2), (2, 1), (1, 0)),
    ((4,), (), (-1,)),
    ((), (1, 2), ()),
    ((0, 10, 20), (30, 20, 10, 0), (3, 2, 1)),
])
def test_match_identities_hand_cases(a, b, expected):
    assert match_identities(ids(*a), ids(*b)).tolist() == list(expected)
    assert match_identities(ids(*a), ids(*b)).dtype == torch.int64


def test_match_identities_rejects_repeated_ids_and_floats():
    with pytest.raises(CrossVISError, match="ids_b.*repeated"):
        match_identities(ids(1, 2), ids(2, 2))
    with pytest.raises(CrossVISError, match="integer"):
        match_identities(torch.tensor([1.0]), ids(1))


# --- sample_partner_locations -----------------------------------------------------------------

def test_sample_partner_locations_hand_case():
    # destination positives: 0->gt1, 1->gt0, 2->gt1, 3->gt1, 4->gt0; gt2 has no positive.
    dst = ids(1, 0, 1, 1, 0)
    src = ids(0, 1, -1, 2, 1)
    keep, chosen = sample_partner_locations(src, dst, torch.Generator().manual_seed(0))
    assert keep.tolist() == [True, True, False, False, True]
    assert chosen[2].item() == -1 and chosen[3].item() == -1
    assert chosen[0].item() in (1, 4)
    assert chosen[1].item() in (0, 2, 3) and chosen[4].item() in (0, 2, 3)


def test_sample_partner_locations_empty_inputs():
    keep, chosen = sample_partner_locations(ids(), ids(0, 1))
    assert keep.shape == (0,) and chosen.shape == (0,)
    keep, chosen = sample_partner_locations(ids(0, 1), ids())
    assert keep.tolist() == [False, False] and chosen.tolist() == [-1, -1]


@settings(max_examples=150, deadline=None)
@given(
    num_gt=st.integers(1, 6),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_partner_locations_properties(num_gt, data, seed):
    dst = data.draw(st.lists(st.integers(-1, num_gt - 1), max_size=30), label="dst_pos_gt")
    src = data.draw(st.lists(st.integers(-1, num_gt - 1), max_size=30), label="src_gt_partner")
    keep, chosen = sample_partner_locations(ids(*src), ids(*dst), torch.Generator().manual_seed(seed))
    assert keep.dtype == torch.bool and chosen.dtype == torch.int64
    assert keep.shape == chosen.shape == (len(src),)
    for i, partner in enumerate(src):
        usable = partner >= 0 and partner in dst
        assert keep[i].item() == usable
        if usable:
            assert 0 <= chosen[i].item() < len(dst)
            assert dst[chosen[i].item()] == partner   # the drawn location belongs to the partner
        else:
            assert chosen[i].item() == -1


def test_sample_partner_locations_is_uniform_and_independent_per_source():
    dst = ids(2, 0, 2, 1, 2, 0, 2)                       # gt 2 owns positives 0, 2, 4, 6
    src = torch.full((40000,), 2, dtype=torch.int64)
    keep, chosen = sample_partner_locations(src, dst, torch.Generator().manual_seed(123))
    assert bool(keep.all())
    freq = torch.bincount(chosen, minlength=7).double() / len(src)
    for k in (0, 2, 4, 6):                               # std of each frequency ~ 0.0022
        assert abs(freq[k].item() - 0.25) < 0.015
    assert freq[[1, 3, 5]].sum().item() == 0.0


def test_sample_partner_locations_is_reproducible_with_a_generator():
    dst = ids(0, 1, 0, 1, 1, 0)
    src = ids(0, 1, 1, 0, 0, 1, -1)
    a = sample_partner_locations(src, dst, torch.Generator().manual_seed(7))
    b = sample_partner_locations(src, dst, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_sample_partner_locations_rejects_bad_input():
    with pytest.raises(CrossVISError, match="src_gt_partner"):
        sample_partner_locations(torch.zeros(2, 2, dtype=torch.int64), ids(0))
    with pytest.raises(CrossVISError, match="integer"):
        sample_partner_locations(ids(0), torch.tensor([0.0]))


# --- the symmetric loss -----------------------------------------------------------------------

def test_combine_directions_is_the_mean_of_both():
    a = torch.tensor(0.3, requires_grad=True)
    b = torch.tensor(0.9, requires_grad=True)
    out = combine_directions(a, b)
    assert out.item() == pytest.approx(0.6)
    out.backward()
    assert a.grad.item() == pytest.approx(0.5) and b.grad.item() == pytest.approx(0.5)
    with pytest.raises(CrossVISError, match="loss_ba"):
        combine_directions(a, torch.ones(2))


def test_crossover_dice_loss_hand_case():
    # a->b: two 1x2 samples; b->a: one sample.
    probs_ab = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    targets_ab = torch.tensor([[[1, 0]], [[1, 1]]], dtype=torch.uint8)
    probs_ba = torch.tensor([[[0.2, 0.4]]])
    targets_ba = torch.tensor([[[0, 1]]])
    eps = 1e-5
    d1 = 1 - 2 * 1.0 / (1.0 + 1.0 + eps)
    d2 = 1 - 2 * 1.0 / (0.5 + 2.0 + eps)
    d3 = 1 - 2 * 0.4 / (0.04 + 0.16 + 1.0 + eps)
    expected = 0.5 * ((d1 + d2) / 2 + d3)
    loss = crossover_dice_loss(probs_ab, targets_ab, probs_ba, targets_ba)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_crossover_dice_loss_with_an_empty_direction():
    probs_ab = torch.zeros(0, 4, 4, requires_grad=True)
    probs_ba = torch.full((1, 1, 2), 0.5, requires_grad=True)
    targets_ba = torch.tensor([[[1.0, 1.0]]])
    loss = crossover_dice_loss(probs_ab, torch.zeros(0, 4, 4), probs_ba, targets_ba)
    expected = 0.5 * (0.0 + (1 - 2 * 1.0 / (0.5 + 2.0 + 1e-5)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert probs_ab.grad is not None and torch.isfinite(probs_ba.grad).all()

    both_empty = crossover_dice_loss(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2),
                                     torch.zeros(0, 2, 2), torch.zeros(0, 2, 2))
    assert both_empty.item() == 0.0


def test_crossover_dice_loss_rejects_shape_mismatch():
    with pytest.raises(CrossVISError, match="a->b"):
        crossover_dice_loss(torch.zeros(1, 2, 2), torch.zeros(1, 4, 4), torch.zeros(0, 2, 2),
                            torch.zeros(0, 2, 2))
