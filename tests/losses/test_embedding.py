"""Tests of crossvis.losses.embedding against hand computations (plain ``math``)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossvis.losses.embedding import (
    GlobalFocalEmbeddingLoss,
    GlobalSoftmaxEmbeddingLoss,
    PairwiseEmbeddingLoss,
    embedding_scale,
)
from crossvis.errors import CrossVISError

# A 2-d embedding space with M = 3 proxies, set by hand.
W = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
B = [0.0, 0.5, -1.0]
EMB = [[3.0, 4.0], [0.0, -2.0]]          # norms 5 and 2
LABELS = [0, 2]


def make_proxies(weight=W, bias=B) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def hand_logits(scale: float) -> list[list[float]]:
    """z_im = s * <w_m, e_i / |e_i|> + b_m with plain floats."""
    out = []
    for e in EMB:
        norm = math.sqrt(sum(v * v for v in e))
        u = [scale * v / norm for v in e]
        out.append([sum(w_k * u_k for w_k, u_k in zip(w, u)) + b for w, b in zip(W, B)])
    return out


def hand_focal(z: float, target: int, alpha: float, gamma: float) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    if target == 1:
        return -alpha * (1.0 - p) ** gamma * math.log(p)
    return -(1.0 - alpha) * p ** gamma * math.log(1.0 - p)


def test_embedding_scale_matches_official_constant():
    assert embedding_scale(3774) == pytest.approx(11.6469, abs=1e-4)
    assert embedding_scale(3) == pytest.approx(math.sqrt(2) * math.log(2))
    with pytest.raises(CrossVISError, match="M >= 3"):
        embedding_scale(2)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_global_focal_matches_hand_computation(alpha, gamma):
    s = math.sqrt(2) * math.log(3 - 1)                    # default scale for M = 3
    logits = hand_logits(s)
    total = 0.0
    for i, label in enumerate(LABELS):                   # manual loop over samples and proxies
        for m in range(3):
            total += hand_focal(logits[i][m], int(m == label), alpha, gamma)
    expected = total / len(LABELS)

    loss = GlobalFocalEmbeddingLoss(alpha=alpha, gamma=gamma)(
        torch.tensor(EMB), torch.tensor(LABELS), make_proxies())
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_global_focal_at_official_initialisation():
    # With zero proxy weights every logit equals the prior bias -ln(99), i.e. p = 0.01:
    # positive term 0.25 * 0.99^2 * ln(100), each of the M - 1 negatives 0.75 * 0.01^2 * -ln(0.99).
    num_ids = 3774
    proxies = nn.Linear(256, num_ids)
    nn.init.zeros_(proxies.weight)
    nn.init.constant_(proxies.bias, -math.log(99.0))
    expected = 0.25 * 0.99 ** 2 * math.log(100.0) + (num_ids - 1) * 0.75 * 0.01 ** 2 * -math.log(0.99)
    labels = torch.tensor([0, 17, 3773, 2000])
    loss = GlobalFocalEmbeddingLoss()(torch.randn(4, 256), labels, proxies)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_global_focal_explicit_scale_and_first_numbers():
    # s = 1: z_1 = [0.6, 0.8 + 0.5, -1.4 - 1] for e_1 = [3, 4] / 5 (label 0).
    z1 = [0.6, 1.3, -2.4]
    z2 = [0.0, -1.0 + 0.5, 1.0 - 1.0]                    # e_2 / |e_2| = [0, -1] (label 2)
    expected = (sum(hand_focal(z, int(m == 0), 0.25, 2.0) for m, z in enumerate(z1))
                + sum(hand_focal(z, int(m == 2), 0.25, 2.0) for m, z in enumerate(z2))) / 2
    loss = GlobalFocalEmbeddingLoss(scale=1.0)(torch.tensor(EMB), torch.tensor(LABELS), make_proxies())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_global_focal_is_invariant_to_embedding_norm():
    proxies = make_proxies()
    loss_fn = GlobalFocalEmbeddingLoss()
    e = torch.tensor(EMB)
    a = loss_fn(e, torch.tensor(LABELS), proxies)
    b = loss_fn(e * torch.tensor([[7.0], [0.1]]), torch.tensor(LABELS), proxies)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_global_softmax_matches_hand_computation_and_cross_entropy():
    s = math.sqrt(2) * math.log(2)
    logits = hand_logits(s)
    expected = sum(-math.log(math.exp(z[y]) / sum(math.exp(v) for v in z))
                   for z, y in zip(logits, LABELS)) / len(LABELS)
    reference = F.cross_entropy(torch.tensor(logits), torch.tensor(LABELS))

    loss = GlobalSoftmaxEmbeddingLoss()(torch.tensor(EMB), torch.tensor(LABELS), make_proxies())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("loss_cls", [GlobalFocalEmbeddingLoss, GlobalSoftmaxEmbeddingLoss])
def test_global_losses_zero_samples_give_connected_zero(loss_cls):
    proxies = make_proxies()
    emb = torch.zeros(0, 2, requires_grad=True)
    loss = loss_cls()(emb, torch.zeros(0, dtype=torch.int64), proxies)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert proxies.weight.grad is not None and proxies.bias.grad is not None
    assert torch.count_nonzero(proxies.weight.grad) == 0
    assert emb.grad is not None


@pytest.mark.parametrize("loss_cls", [GlobalFocalEmbeddingLoss, GlobalSoftmaxEmbeddingLoss])
@pytest.mark.parametrize("bad", [[0, 3], [-1, 1]])
def test_global_losses_reject_out_of_range_labels(loss_cls, bad):
    with pytest.raises(CrossVISError, match=r"0\.\.2"):
        loss_cls()(torch.tensor(EMB), torch.tensor(bad), make_proxies())


@pytest.mark.parametrize("loss_cls", [GlobalFocalEmbeddingLoss, GlobalSoftmaxEmbeddingLoss])
def test_global_losses_reject_bad_shapes(loss_cls):
    with pytest.raises(CrossVISError, match="D = 3"):
        loss_cls()(torch.ones(2, 3), torch.tensor(LABELS), make_proxies())
    with pytest.raises(CrossVISError, match="one entry per embedding"):
        loss_cls()(torch.tensor(EMB), torch.tensor([0]), make_proxies())
    with pytest.raises(CrossVISError, match="integer"):
        loss_cls()(torch.tensor(EMB), torch.tensor([0.0, 1.0]), make_proxies())
    with pytest.raises(CrossVISError, match="nn.Linear"):
        loss_cls()(torch.tensor(EMB), torch.tensor(LABELS), nn.Identity())


def test_global_focal_gradient_pulls_embedding_towards_its_proxy():
    proxies = make_proxies()
    emb = torch.tensor([[1.0, 1.0]], requires_grad=True)
    GlobalFocalEmbeddingLoss()(emb, torch.tensor([0]), proxies).backward()
    step = -emb.grad[0]                                   # descent direction
    # proxy 0 is the x axis: the embedding must rotate towards +x, i.e. away from +y.
    assert step[0] > 0 > step[1]


def test_requires_proxies_flags():
    assert GlobalFocalEmbeddingLoss.requires_proxies and GlobalSoftmaxEmbeddingLoss.requires_proxies
    assert not PairwiseEmbeddingLoss.requires_proxies


# --- pair-wise (MaskTrack style) --------------------------------------------------------------

ANCHOR = [[1.0, 0.0], [0.0, 1.0]]
ANCHOR_IDS = [7, 9]                                       # 7 is in the reference frame, 9 is new
REFERENCE = [[2.0, 0.0], [-1.0, 0.0], [0.0, 2.0]]
REFERENCE_IDS = [7, 8, 7]                                 # instance 7 mean = [1, 1]; 8 = [-1, 0]


def softmax_nll(logits: list[float], target: int) -> float:
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


def test_pairwise_hand_case_with_new_identity_slot():
    # Slot order: [new, instance 7, instance 8].
    a1 = [0.0, 1.0 * 1 + 0.0 * 1, -1.0]                  # target: instance 7 -> slot 1
    a2 = [0.0, 0.0 * 1 + 1.0 * 1, 0.0]                   # target: absent -> new slot 0
    expected = (softmax_nll(a1, 1) + softmax_nll(a2, 0)) / 2
    reference = F.cross_entropy(torch.tensor([a1, a2]), torch.tensor([1, 0]))

    loss = PairwiseEmbeddingLoss()(torch.tensor(ANCHOR), torch.tensor(ANCHOR_IDS),
                                   torch.tensor(REFERENCE), torch.tensor(REFERENCE_IDS))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_pairwise_cosine_scale_and_focal_variant():
    c = 1.0 / math.sqrt(2.0)                              # cos between [1, 0] and [1, 1]
    s, gamma = 3.0, 2.0
    a1 = [0.0, s * c, -s]
    a2 = [0.0, s * c, 0.0]
    expected = 0.0
    for logits, target in ((a1, 1), (a2, 0)):
        nll = softmax_nll(logits, target)
        p = math.exp(-nll)
        expected += (1.0 - p) ** gamma * nll
    expected /= 2
    loss = PairwiseEmbeddingLoss(scale=s, gamma=gamma)(
        torch.tensor(ANCHOR), torch.tensor(ANCHOR_IDS), torch.tensor(REFERENCE),
        torch.tensor(REFERENCE_IDS))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_candidates_are_restricted_to_the_same_pair():
    # Pair 0: anchor id 7 but its reference holds only id 8; pair 1's reference holds id 7.
    anchor = torch.tensor([[1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    anchor_ids = torch.tensor([7, 7])
    anchor_groups = torch.tensor([0, 1])
    reference = torch.tensor([[0.0, 2.0], [3.0, 0.0]], requires_grad=True)
    reference_ids = torch.tensor([8, 7])
    reference_groups = torch.tensor([0, 1])
    first = softmax_nll([0.0, 0.0], 0)                    # [new, <[1,0],[0,2]>]; id 7 is new here
    second = softmax_nll([0.0, 1.5], 1)                   # [new, <[.5,.5],[3,0]>]; matches id 7
    loss = PairwiseEmbeddingLoss()(anchor, anchor_ids, reference, reference_ids,
                                   anchor_groups, reference_groups)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    loss.backward()                                       # masked (other-pair) logits: no NaN
    assert torch.isfinite(anchor.grad).all() and torch.isfinite(reference.grad).all()


def test_pairwise_pair_without_shared_identity_is_finite():
    anchor = torch.tensor([[1.0, 2.0]], requires_grad=True)
    reference = torch.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
    loss = PairwiseEmbeddingLoss()(anchor, torch.tensor([1]), reference, torch.tensor([2, 3]))
    expected = softmax_nll([0.0, 0.5 - 2.0, 2.0], 0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(anchor.grad).all() and torch.isfinite(reference.grad).all()
    assert reference.grad.abs().sum() > 0                # gradients reach the reference means


def test_pairwise_empty_inputs():
    anchor = torch.zeros(0, 2, requires_grad=True)
    reference = torch.tensor(REFERENCE, requires_grad=True)
    loss = PairwiseEmbeddingLoss()(anchor, torch.zeros(0, dtype=torch.int64),
                                   reference, torch.tensor(REFERENCE_IDS))
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert reference.grad is not None

    # No reference instance at all: only the "new" slot exists, so -log 1 = 0.
    loss = PairwiseEmbeddingLoss()(torch.tensor(ANCHOR), torch.tensor(ANCHOR_IDS),
                                   torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_pairwise_rejects_bad_arguments():
    with pytest.raises(CrossVISError, match="differ in size"):
        PairwiseEmbeddingLoss()(torch.ones(1, 2), torch.tensor([0]), torch.ones(1, 3), torch.tensor([0]))
    with pytest.raises(CrossVISError, match="anchor_groups"):
        PairwiseEmbeddingLoss()(torch.ones(2, 2), torch.tensor([0, 1]), torch.ones(1, 2),
                                torch.tensor([0]), anchor_groups=torch.tensor([0]))
    with pytest.raises(CrossVISError, match="scale"):
        PairwiseEmbeddingLoss(scale=0.0)
    with pytest.raises(CrossVISError, match="gamma"):
        PairwiseEmbeddingLoss(gamma=-1.0)


def test_pairwise_reference_gt_without_positives_is_a_candidate():
    """MaskTrack R-CNN: every reference GT is a candidate. Anchor e = (1, 0) has identity 7; the
    reference frame's positives all belong to identity 3 (embedding (0, 1)); identity 7 has no
    positive location and enters through its box-centre embedding (2, 0).
    all:       logits [0, e·(0,1) = 0, e·(2,0) = 2], target id 7 → -log(e² / (2 + e²));
    positives: logits [0, 0], target "new" → log 2."""
    anchor, anchor_ids = torch.tensor([[1.0, 0.0]]), torch.tensor([7])
    reference, reference_ids = torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([3, 3])
    gt_emb, gt_ids = torch.tensor([[5.0, 5.0], [2.0, 0.0]]), torch.tensor([3, 7])  # id 3's entry is unused
    extra = dict(reference_gt_embeddings=gt_emb, reference_gt_ids=gt_ids)
    got = PairwiseEmbeddingLoss()(anchor, anchor_ids, reference, reference_ids, **extra)
    torch.testing.assert_close(got, torch.tensor(-math.log(math.exp(2) / (2 + math.exp(2)))))
    positives_only = PairwiseEmbeddingLoss(candidates="positives")(anchor, anchor_ids, reference, reference_ids,
                                                                   **extra)
    torch.testing.assert_close(positives_only, torch.tensor(math.log(2.0)))
    with pytest.raises(CrossVISError, match="candidates"):
        PairwiseEmbeddingLoss(candidates="some")
