"""FCOS target assignment: hand-built cases for size ranges, centre sampling and overlaps."""
import torch

from crossvis.models import FCOSTargetAssigner, level_size_ranges, mask_centers

BG = 3  # num_classes in these cases


def _assign(assigner, locs_per_level, boxes, labels, masks=None):
    return assigner([torch.tensor(l, dtype=torch.float32) for l in locs_per_level],
                    torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels), masks)


def test_official_level_ranges():
    assert level_size_ranges([64, 128, 256, 512], 5) == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)]
    assert level_size_ranges([64, 128], 3) == [(-1, 64), (64, 128), (128, 1e8)]


def test_size_ranges_are_inclusive_on_both_ends():
    assigner = FCOSTargetAssigner([8, 16], [64], num_classes=BG)
    locs = [[[100.0, 100.0]], [[100.0, 100.0]]]
    # max(l, t, r, b) = 64 exactly: a candidate on both P3 [-1, 64] and P4 [64, inf].
    t = _assign(assigner, locs, [[36, 36, 164, 164]], [1])
    assert t.labels.tolist() == [1, 1]
    # l = 65: only P4.
    t = _assign(assigner, locs, [[35, 36, 164, 164]], [1])
    assert t.labels.tolist() == [BG, 1]
    assert t.gt_inds.tolist() == [-1, 0]
    torch.testing.assert_close(t.reg_targets[1], torch.tensor([65.0, 64.0, 64.0, 64.0]) / 16)


def test_centre_sampling_around_mask_centre_of_mass():
    assigner = FCOSTargetAssigner([8], [], num_classes=BG)  # radius 1.5·8 = 12
    mask = torch.zeros(1, 48, 104, dtype=torch.uint8)
    mask[0, 0:40, 60:100] = 1  # centre of mass (79.5, 19.5); the box centre would be (50, 20)
    torch.testing.assert_close(mask_centers(mask), torch.tensor([[79.5, 19.5]]))
    xs = [50.0, 67.6, 76.0, 91.0, 91.5, 92.0]
    t = _assign(assigner, [[[x, 20.0] for x in xs]], [[0, 0, 100, 40]], [2], mask)
    # |x − 79.5| < 12 strictly: 67.6, 76, 91 are inside; 91.5 is on the edge; 50 and 92 outside.
    assert t.labels.tolist() == [BG, 2, 2, 2, BG, BG]
    # Without masks the box centre (50, 20) is used.
    t = _assign(assigner, [[[x, 20.0] for x in xs]], [[0, 0, 100, 40]], [2])
    assert t.labels.tolist() == [2, BG, BG, BG, BG, BG]


def test_centre_region_is_clipped_to_the_box():
    assigner = FCOSTargetAssigner([8], [], num_classes=BG)
    mask = torch.zeros(1, 40, 40, dtype=torch.uint8)
    mask[0, 10:30, 0:5] = 1  # centre (2, 19.5): the square reaches x = −10 but the box starts at 10
    t = _assign(assigner, [[[10.5, 20.0], [9.5, 20.0], [13.9, 20.0], [14.0, 20.0]]], [[10, 0, 40, 40]], [0], mask)
    assert t.labels.tolist() == [0, BG, 0, BG]


def test_overlapping_boxes_smaller_area_wins():
    assigner = FCOSTargetAssigner([8], [], num_classes=BG)
    big, small = [0, 0, 100, 100], [40, 40, 60, 60]
    for boxes, labels, winner in (([big, small], [1, 2], 1), ([small, big], [2, 1], 0)):
        t = _assign(assigner, [[[50.0, 50.0]]], boxes, labels)
        assert t.labels.tolist() == [2]
        assert t.gt_inds.tolist() == [winner]
        torch.testing.assert_close(t.reg_targets[0], torch.tensor([10.0, 10.0, 10.0, 10.0]) / 8)


def test_equal_areas_first_box_wins():
    assigner = FCOSTargetAssigner([8], [], num_classes=BG)
    t = _assign(assigner, [[[50.0, 50.0]]], [[40, 40, 60, 60], [42, 42, 62, 62]], [0, 1])
    assert t.gt_inds.tolist() == [0]


def test_empty_ground_truth():
    assigner = FCOSTargetAssigner([8, 16], [64], num_classes=BG)
    t = assigner([torch.rand(5, 2), torch.rand(2, 2)], torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert t.labels.tolist() == [BG] * 7
    assert t.gt_inds.tolist() == [-1] * 7
    assert t.reg_targets.shape == (7, 4)
