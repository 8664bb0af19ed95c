"""crossvis.models.nms.batched_nms gives torchvision's batched_nms result, ties included."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st
from torchvision.ops import batched_nms as torchvision_batched_nms

from crossvis.models.nms import VANILLA_ABOVE, batched_nms


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2500), st.integers(1, 12), st.sampled_from([0.3, 0.5, 0.7]), st.booleans(),
       st.integers(0, 2 ** 31 - 1))
def test_the_same_boxes_kept_in_the_same_order(n, classes, threshold, ties, seed):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 200
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 60 + 0.5], dim=1)
    scores = torch.rand(n, generator=g)
    if ties:  # many equal scores: the order among them must come out the same too
        scores = (scores * 10).round() / 10
    labels = torch.randint(0, classes, (n,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, labels, threshold),
                       torchvision_batched_nms(boxes, scores, labels, threshold))


def test_both_paths_are_exercised():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 10.0]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2]  # few boxes: torchvision's own call
    many = boxes.repeat(VANILLA_ABOVE, 1) + torch.arange(3 * VANILLA_ABOVE)[:, None].float() * 20
    kept = batched_nms(many, scores.repeat(VANILLA_ABOVE), labels.repeat(VANILLA_ABOVE), 0.5)
    assert torch.equal(kept, torchvision_batched_nms(many, scores.repeat(VANILLA_ABOVE), labels.repeat(VANILLA_ABOVE), 0.5))


@settings(max_examples=40, deadline=None)
@given(st.integers(1001, 6000), st.integers(1, 40), st.sampled_from([0.3, 0.6]), st.integers(1, 300),
       st.sampled_from([None, 10, 100]), st.integers(0, 2 ** 31 - 1))
def test_stopping_at_max_keep_gives_the_first_max_keep_of_the_full_run(n, classes, threshold, max_keep, ties, seed):
    """Many overlapping boxes (the early stop must grow its prefix) and few; ties at prefix borders."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 120 + 0.5], dim=1)
    scores = torch.rand(n, generator=g)
    if ties is not None:  # equal scores, also across the border of the prefix the early stop runs on
        scores = (scores * ties).round() / ties
    labels = torch.randint(0, classes, (n,), generator=g)
    expected = torchvision_batched_nms(boxes, scores, labels, threshold)[:max_keep]
    assert torch.equal(batched_nms(boxes, scores, labels, threshold, max_keep), expected)


def _stable_reference(boxes, scores, labels, threshold, max_keep):
    """torchvision's kept boxes, ordered by (score descending, index ascending) in plain Python."""
    kept = torchvision_batched_nms(boxes, scores, labels, threshold).tolist()
    return sorted(kept, key=lambda i: (-float(scores[i]), i))[:max_keep]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6000), st.integers(1, 40), st.sampled_from([0.3, 0.6]), st.integers(1, 300),
       st.sampled_from([None, 4, 10, 100]), st.integers(0, 2 ** 31 - 1))
def test_stable_order_keeps_the_same_boxes_with_ties_by_index(n, classes, threshold, max_keep, ties, seed):
    """Few boxes (torchvision's own call) and many (the early stop, which then never falls back)."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 120 + 0.5], dim=1)
    scores = torch.rand(n, generator=g)
    if ties is not None:
        scores = (scores * ties).round() / ties
    labels = torch.randint(0, classes, (n,), generator=g)
    kept = batched_nms(boxes, scores, labels, threshold, max_keep, stable=True)
    assert kept.tolist() == _stable_reference(boxes, scores, labels, threshold, max_keep)


def test_stable_order_needs_no_full_run_on_ties(monkeypatch):
    """Equal scores everywhere (as a bf16 network gives): the stable order stops early anyway."""
    import crossvis.models.nms as nms_module

    g = torch.Generator().manual_seed(3)
    n = 4600
    corner = torch.rand(n, 2, generator=g) * 600
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * 60 + 0.5], dim=1)
    scores = (torch.rand(n, generator=g) * 50).round() / 50
    labels = torch.randint(0, 40, (n,), generator=g)
    sizes = []
    real = nms_module._classwise_nms
    monkeypatch.setattr(nms_module, "_classwise_nms", lambda b, *a: sizes.append(len(b)) or real(b, *a))
    assert batched_nms(boxes, scores, labels, 0.6, 100, stable=True).tolist() == \
        _stable_reference(boxes, scores, labels, 0.6, 100)
    assert max(sizes) < n
    sizes.clear()
    assert torch.equal(batched_nms(boxes, scores, labels, 0.6, 100),
                       torchvision_batched_nms(boxes, scores, labels, 0.6)[:100])
    assert sizes[-1] == n   # torchvision's order among equal scores: the full run
