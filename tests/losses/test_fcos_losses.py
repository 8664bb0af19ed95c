"""FCOS losses and dice against torchvision and hand calculations."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from crossvis.losses import FCOSLoss, centerness_targets, dice_loss, ltrb_giou_loss


def test_giou_plus_one_hand_cases():
    # Concentric boxes: pred area 4, target area 16, I = 4, U = 16, C = 16 → IoU = 5/17, no enclosure penalty.
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 0.0, 0.0]])
    # Second: two 2×2 boxes touching at a corner: I = 0, U = 8, C = 16 → GIoU = 1/9 − 8/16.
    expected = torch.tensor([1 - 5 / 17, 1 - (1 / 9 - 0.5)])
    torch.testing.assert_close(ltrb_giou_loss(pred, target), expected)


def test_centerness_targets_hand():
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    torch.testing.assert_close(centerness_targets(t), torch.tensor([math.sqrt(1 / 3 * 2 / 4), 1.0]))


def test_dice_hand():
    p = torch.tensor([[[0.5, 1.0], [0.0, 0.0]]])
    g = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    # Σpg = 1.5, Σp² = 1.25, Σg² = 3.
    torch.testing.assert_close(dice_loss(p, g), torch.tensor([1 - 3.0 / (4.25 + 1e-5)]))


def _random_problem(seed, num_loc=50, num_classes=4, num_pos=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_loc, num_classes, generator=g)
    reg = torch.rand(num_loc, 4, generator=g) * 3
    ctr = torch.randn(num_loc, generator=g)
    labels = torch.full((num_loc,), num_classes)
    pos = torch.randperm(num_loc, generator=g)[:num_pos]
    labels[pos] = torch.randint(0, num_classes, (num_pos,), generator=g)
    targets = torch.rand(num_loc, 4, generator=g) * 3 + 0.1
    return logits, reg, ctr, labels, targets, pos


def test_losses_against_independent_formulas():
    logits, reg, ctr, labels, targets, pos = _random_problem(0)
    out = FCOSLoss()(logits, reg, ctr, labels, targets)
    onehot = torch.zeros_like(logits)
    onehot[pos, labels[pos]] = 1.0
    n = len(pos)
    cls = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2.0, reduction="sum") / n
    torch.testing.assert_close(out["loss_fcos_cls"], cls)

    t = targets[pos]
    ctr_t = torch.sqrt(torch.minimum(t[:, 0], t[:, 2]) / torch.maximum(t[:, 0], t[:, 2])
                       * torch.minimum(t[:, 1], t[:, 3]) / torch.maximum(t[:, 1], t[:, 3]))
    giou = []
    for p_, t_ in zip(reg[pos].tolist(), t.tolist()):
        # boxes around the origin: (−l, −t, r, b)
        pb = (-p_[0], -p_[1], p_[2], p_[3])
        tb = (-t_[0], -t_[1], t_[2], t_[3])
        iw = min(pb[2], tb[2]) - max(pb[0], tb[0])
        ih = min(pb[3], tb[3]) - max(pb[1], tb[1])
        inter = max(iw, 0) * max(ih, 0)
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        union = area(pb) + area(tb) - inter
        enc = (max(pb[2], tb[2]) - min(pb[0], tb[0])) * (max(pb[3], tb[3]) - min(pb[1], tb[1]))
        giou.append((inter + 1) / (union + 1) - (enc - union) / enc)
    loc = ((1 - torch.tensor(giou)) * ctr_t).sum() / ctr_t.sum()
    torch.testing.assert_close(out["loss_fcos_loc"], loc)
    bce = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction="sum") / n
    torch.testing.assert_close(out["loss_fcos_ctr"], bce)


def test_no_positives_gives_exact_zeros_connected_to_graph():
    logits, reg, ctr, labels, targets, _ = _random_problem(1, num_pos=0)
    logits.requires_grad_(True)
    reg.requires_grad_(True)
    ctr.requires_grad_(True)
    out = FCOSLoss()(logits, reg, ctr, labels, targets)
    assert out["loss_fcos_loc"].item() == 0.0 and out["loss_fcos_ctr"].item() == 0.0
    assert torch.isfinite(out["loss_fcos_cls"])
    # normaliser clamps to 1: the classification loss is the plain focal sum
    torch.testing.assert_close(out["loss_fcos_cls"],
                               sigmoid_focal_loss(logits, torch.zeros_like(logits), reduction="sum"))
    sum(out.values()).backward()
    assert reg.grad is not None and torch.count_nonzero(reg.grad) == 0
    assert ctr.grad is not None and torch.count_nonzero(ctr.grad) == 0


@pytest.mark.parametrize("seed", [2, 3])
def test_perfect_box_prediction_has_zero_box_loss(seed):
    _, _, ctr, labels, targets, pos = _random_problem(seed)
    logits = torch.zeros(len(labels), 4)
    out = FCOSLoss()(logits, targets.clone(), ctr, labels, targets)
    assert out["loss_fcos_loc"].abs().item() < 1e-6
