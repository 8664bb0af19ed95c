"""The contrastive embedding loss against hand computations (QDTrack's formulas written out as loops)."""
import math

import pytest
import torch
from torch import nn

from crossvis.association import (ContrastiveEmbeddingLoss, WeightedEmbeddingLoss, auxiliary_cosine_loss,
                                  instance_balanced_choice, multi_positive_loss)
from crossvis.errors import CrossVISError
from crossvis.losses import GlobalFocalEmbeddingLoss

KEY = [[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]
KEY_IDS = [0, 1, -1]
REF = [[1.0, 0.5], [0.0, 1.0], [0.5, 1.5], [1.0, 1.0]]
REF_IDS = [0, 1, 1, -1]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _cos(a, b):
    return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))


def _hand_embed(key, key_ids, ref, ref_ids, temperature=1.0):
    """mean over key positives with a positive reference of log(1 + sum_{k+} sum_{k-} exp(s- - s+))."""
    losses = []
    for v, i in zip(key, key_ids):
        if i < 0 or i not in ref_ids:
            continue
        pos = [_dot(v, k) / temperature for k, j in zip(ref, ref_ids) if j == i]
        neg = [_dot(v, k) / temperature for k, j in zip(ref, ref_ids) if j != i]
        losses.append(math.log(1.0 + sum(math.exp(n - p) for p in pos for n in neg)))
    return sum(losses) / len(losses)


def _hand_aux(key, key_ids, ref, ref_ids, neg_margin=0.1, neg_pos_ub=-1):
    pos_costs, neg_costs = [], []
    for v, i in zip(key, key_ids):
        if i < 0:
            continue
        for k, j in zip(ref, ref_ids):
            c = _cos(v, k)
            if j == i:
                pos_costs.append((min(max(c, 0.0), 1.0) - 1.0) ** 2)
            else:
                neg_costs.append(min(max(c - neg_margin, 0.0), 1.0) ** 2)
    if neg_pos_ub != -1 and len(neg_costs) > neg_pos_ub * len(pos_costs):
        neg_costs = sorted(neg_costs, reverse=True)[:neg_pos_ub * len(pos_costs)]
    kept = pos_costs + neg_costs
    return sum(kept) / len(kept)


def _tensors(emb, ids):
    return torch.tensor([emb]), torch.tensor([ids])


def test_multi_positive_term_matches_hand_computation():
    loss = ContrastiveEmbeddingLoss(embed_weight=1.0, aux_weight=0.0, num_samples=-1, bidirectional=False)
    value = loss(*_tensors(KEY, KEY_IDS), *_tensors(REF, REF_IDS))
    assert value.item() == pytest.approx(_hand_embed(KEY, KEY_IDS, REF, REF_IDS), rel=1e-6)


def test_temperature_divides_the_similarities():
    loss = ContrastiveEmbeddingLoss(temperature=0.5, embed_weight=1.0, aux_weight=0.0, num_samples=-1,
                                    bidirectional=False)
    value = loss(*_tensors(KEY, KEY_IDS), *_tensors(REF, REF_IDS))
    assert value.item() == pytest.approx(_hand_embed(KEY, KEY_IDS, REF, REF_IDS, temperature=0.5), rel=1e-6)


@pytest.mark.parametrize("neg_pos_ub", [-1, 1])
def test_auxiliary_term_matches_hand_computation(neg_pos_ub):
    loss = ContrastiveEmbeddingLoss(embed_weight=0.0, aux_weight=1.0, aux_neg_pos_ub=neg_pos_ub, num_samples=-1,
                                    bidirectional=False)
    value = loss(*_tensors(KEY, KEY_IDS), *_tensors(REF, REF_IDS))
    assert value.item() == pytest.approx(_hand_aux(KEY, KEY_IDS, REF, REF_IDS, neg_pos_ub=neg_pos_ub), rel=1e-6)


def test_default_weights_combine_both_terms_and_directions():
    loss = ContrastiveEmbeddingLoss(num_samples=-1)  # 0.25 embed + 1.0 aux (QDTrack), bi-directional
    value = loss(*_tensors(KEY, KEY_IDS), *_tensors(REF, REF_IDS))
    forward = 0.25 * _hand_embed(KEY, KEY_IDS, REF, REF_IDS) + _hand_aux(KEY, KEY_IDS, REF, REF_IDS, neg_pos_ub=3)
    backward = 0.25 * _hand_embed(REF, REF_IDS, KEY, KEY_IDS) + _hand_aux(REF, REF_IDS, KEY, KEY_IDS, neg_pos_ub=3)
    assert value.item() == pytest.approx(0.5 * (forward + backward), rel=1e-6)


def test_pairs_do_not_mix_and_are_averaged():
    loss = ContrastiveEmbeddingLoss(embed_weight=1.0, aux_weight=0.0, num_samples=-1, bidirectional=False)
    other_key, other_ids = [[0.3, -1.0], [2.0, 0.1], [0.0, 0.0]], [5, 0, -1]
    other_ref, other_ref_ids = [[0.2, -0.5], [1.5, 0.0], [0.1, 0.1], [-1.0, 0.0]], [5, 0, -1, 7]
    value = loss(torch.tensor([KEY, other_key]), torch.tensor([KEY_IDS, other_ids]),
                 torch.tensor([REF, other_ref]), torch.tensor([REF_IDS, other_ref_ids]))
    expected = 0.5 * (_hand_embed(KEY, KEY_IDS, REF, REF_IDS) + _hand_embed(other_key, other_ids, other_ref,
                                                                              other_ref_ids))
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_multi_positive_is_stable_for_large_similarities():
    sim = torch.tensor([[500.0, -500.0, 400.0]])
    positive = torch.tensor([[False, True, False]])
    # log(1 + e^{1000} + e^{900}) ~ 1000
    assert multi_positive_loss(sim, positive).item() == pytest.approx(1000.0, rel=1e-6)
    assert multi_positive_loss(sim, torch.ones_like(positive)).item() == 0.0  # no negatives: log 1


def test_no_usable_query_gives_a_connected_zero():
    emb = torch.randn(1, 5, 4, requires_grad=True)
    ref = torch.randn(1, 5, 4, requires_grad=True)
    value = ContrastiveEmbeddingLoss()(emb, torch.tensor([[0, 0, -1, -1, -1]]), ref,
                                       torch.tensor([[3, -1, -1, -1, -1]]))
    assert value.item() == 0.0
    value.backward()
    assert emb.grad is not None and ref.grad is not None


def test_gradients_pull_positives_together():
    key = torch.tensor([KEY], requires_grad=True)
    loss = ContrastiveEmbeddingLoss(num_samples=-1, bidirectional=False, aux_weight=0.0)
    loss(key, torch.tensor([KEY_IDS]), torch.tensor([REF]), torch.tensor([REF_IDS])).backward()
    step = key - 0.1 * key.grad
    after = loss(step.detach(), torch.tensor([KEY_IDS]), torch.tensor([REF]), torch.tensor([REF_IDS]))
    before = loss(key.detach(), torch.tensor([KEY_IDS]), torch.tensor([REF]), torch.tensor([REF_IDS]))
    assert after < before


def test_sampling_respects_the_quasi_dense_budget():
    torch.manual_seed(0)
    ids = torch.tensor([0] * 100 + [1] * 5 + [-1] * 400)
    loss = ContrastiveEmbeddingLoss(num_samples=32, positive_fraction=0.5, neg_pos_ub=3)
    pos = loss.sampler.positives(ids)
    assert pos.numel() == 16 and (ids[pos] == 1).sum() == 5  # instance balanced: all 5 of the small one
    neg = loss.sampler.negatives(ids, pos.numel())
    assert neg.numel() == 16 and bool((ids[neg] == -1).all())
    assert loss.sampler.negatives(ids, 2).numel() == 6        # at most 3 per positive


def test_instance_balanced_choice_spreads_over_identities():
    torch.manual_seed(1)
    ids = torch.tensor([4] * 50 + [7] * 50 + [9] * 3)
    picked = ids[instance_balanced_choice(ids, 9)]
    assert sorted(picked.tolist()) == [4, 4, 4, 7, 7, 7, 9, 9, 9]
    assert len(set(instance_balanced_choice(ids, 20).tolist())) == 20


def test_aux_without_pairs_kept_is_zero():
    assert auxiliary_cosine_loss(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool)).item() == 0.0


def test_bad_shapes_are_clear_errors():
    with pytest.raises(CrossVISError, match="int64 \\[B, L\\]"):
        ContrastiveEmbeddingLoss()(torch.zeros(1, 3, 2), torch.zeros(1, 4, dtype=torch.long),
                                   torch.zeros(1, 3, 2), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(CrossVISError, match="temperature"):
        ContrastiveEmbeddingLoss(temperature=0.0)


def test_weighted_sum_with_gbe_is_the_weighted_sum_of_the_members():
    torch.manual_seed(0)
    proxies = nn.Linear(2, 8)
    key, ref = _tensors(KEY, KEY_IDS), _tensors(REF, REF_IDS)
    gbe, contrastive = GlobalFocalEmbeddingLoss(), ContrastiveEmbeddingLoss(num_samples=-1)
    combined = WeightedEmbeddingLoss([gbe, contrastive], [1.0, 0.5])
    assert combined.requires_proxies
    value = combined(*key, *ref, proxies=proxies)
    positives = torch.tensor([KEY[0], KEY[1], REF[0], REF[1], REF[2]])
    expected = gbe(positives, torch.tensor([0, 1, 0, 1, 1]), proxies) + 0.5 * contrastive(*key, *ref)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(CrossVISError, match="proxies"):
        combined(*key, *ref)
