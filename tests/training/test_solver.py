"""Optimizer groups, the warmup multi-step schedule, the linear scaling rule and recipe validation."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from crossvis.recipes.sections import SolverConfig, section
from crossvis.training.solver import WarmupMultiStepLR, build_optimizer, no_decay_parameter_names
from crossvis.errors import CrossVISError


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), FrozenBatchNorm2d(4), nn.Conv2d(4, 4, 1),
                         nn.GroupNorm(2, 4), Scale(), nn.Linear(4, 2))


def test_norm_and_scale_parameters_get_no_weight_decay():
    net = _net()
    assert no_decay_parameter_names(net) == {"1.weight", "1.bias", "4.weight", "4.bias", "5.scale"}
    opt = build_optimizer(net, SolverConfig(weight_decay=1e-4, weight_decay_norm=0.0))
    decay, norm = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and norm["weight_decay"] == 0.0
    assert {id(p) for p in norm["params"]} == {id(net[1].weight), id(net[1].bias), id(net[4].weight),
                                               id(net[4].bias), id(net[5].scale)}
    assert len(decay["params"]) == 6  # 2 convs + linear, weight and bias each
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


def test_frozen_parameters_are_left_out_and_adamw_is_available():
    net = _net()
    net[0].weight.requires_grad_(False)
    opt = build_optimizer(net, SolverConfig(optimizer="adamw", base_lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW)
    assert all(p is not net[0].weight for g in opt.param_groups for p in g["params"])


def test_warmup_multistep_matches_the_official_formula():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.005)
    sched = WarmupMultiStepLR(opt, steps=[15000, 21000], gamma=0.1, warmup_iters=1000, warmup_factor=0.001)
    # hand values: lr(it) = 0.005 * (0.001 * (1 - it/1000) + it/1000) during warmup
    expected = {0: 0.005 * 0.001, 500: 0.005 * (0.001 * 0.5 + 0.5), 999: 0.005 * (0.001 * 0.001 + 0.999),
                1000: 0.005, 14999: 0.005, 15000: 0.0005, 20999: 0.0005, 21000: 0.00005, 22999: 0.00005}
    for it in range(23000):
        if it in expected:
            assert opt.param_groups[0]["lr"] == pytest.approx(expected[it], rel=1e-9), it
        opt.step()
        sched.step()


def test_scheduler_state_round_trips():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    a = WarmupMultiStepLR(opt, steps=[3], warmup_iters=2)
    for _ in range(4):
        opt.step()
        a.step()
    opt2 = torch.optim.SGD([p], lr=1.0)
    b = WarmupMultiStepLR(opt2, steps=[3], warmup_iters=2)
    b.load_state_dict(a.state_dict())
    opt2.param_groups[0]["lr"] = b.get_last_lr()[0]
    assert b.last_epoch == 4 and opt2.param_groups[0]["lr"] == pytest.approx(0.1)


def test_linear_scaling_rule():
    cfg = SolverConfig(ims_per_batch=4, scale_by_batch=True, reference_batch_size=16)
    s = cfg.scaled()
    assert s.base_lr == pytest.approx(0.005 / 4)
    assert (s.max_iter, s.steps, s.warmup_iters, s.checkpoint_period) == (92000, (60000, 84000), 4000, 7600)
    assert SolverConfig(ims_per_batch=4).scaled().max_iter == 23000  # off by default


def test_official_defaults():
    s = SolverConfig()
    assert (s.ims_per_batch, s.base_lr, s.max_iter, s.steps, s.warmup_iters, s.warmup_factor,
            s.checkpoint_period, s.momentum, s.weight_decay, s.weight_decay_norm) == (
        16, 0.005, 23000, (15000, 21000), 1000, 0.001, 1900, 0.9, 1e-4, 0.0)


@pytest.mark.parametrize("node, message", [
    ({"base_lrr": 0.1}, "did you mean solver.base_lr"),
    ({"steps": [5, 3]}, "increasing"),
    ({"optimizer": "rmsprop"}, "'sgd' or 'adamw'"),
    ({"max_iter": "many"}, "solver.max_iter must be a number"),
    ({"ims_per_batch": 0}, "solver.ims_per_batch must be positive"),
])
def test_bad_solver_keys_are_one_line_errors(node, message):
    with pytest.raises(CrossVISError, match=message):
        section({"solver": node}, "solver")


def test_string_numbers_from_yaml_are_accepted():
    assert section({"solver": {"base_lr": "1e-3"}}, "solver").base_lr == pytest.approx(1e-3)
