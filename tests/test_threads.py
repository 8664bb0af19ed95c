"""Thread defaults: physical cores of the affinity mask, capped by a cgroup quota; explicit values win."""
import os

import pytest
import torch

from crossvis import threads


@pytest.fixture
def machine(monkeypatch):
    def set_up(cpus, cores, quota=None):
        monkeypatch.setattr(threads, "_allowed_cpus", lambda: set(cpus))
        monkeypatch.setattr(threads, "_physical_core", lambda cpu: cores.get(cpu))
        monkeypatch.setattr(threads, "_cgroup_cpu_limit", lambda: quota)
    return set_up


def test_hyperthreads_count_once(machine):
    machine([0, 1, 2, 3], {0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"), 3: ("0", "1")})
    assert threads.available_physical_cores() == 2


def test_affinity_mask_limits_the_cores(machine):
    machine([2, 3], {c: ("0", str(c)) for c in range(8)})
    assert threads.available_physical_cores() == 2


def test_cores_of_two_sockets_with_the_same_core_id_are_distinct(machine):
    machine([0, 1], {0: ("0", "0"), 1: ("1", "0")})
    assert threads.available_physical_cores() == 2


def test_cgroup_quota_caps_the_count(machine):
    machine(range(8), {c: ("0", str(c)) for c in range(8)}, quota=1.5)
    assert threads.available_physical_cores() == 1


def test_unknown_topology_counts_logical_cpus(machine):
    machine([0, 1, 2], {})
    assert threads.available_physical_cores() == 3


def test_explicit_thread_counts_win(machine):
    machine([0, 1], {0: ("0", "0"), 1: ("0", "1")})
    assert threads.resolve_num_threads(5) == 5
    assert threads.resolve_num_threads(0) == threads.resolve_num_threads(None) == 2


def test_configure_threads_sets_torch(machine):
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_real_machine_reports_at_most_its_affinity():
    assert 1 <= threads.available_physical_cores() <= len(os.sched_getaffinity(0))


def test_predictor_and_eval_honour_the_thread_setting(tmp_path):
    from pathlib import Path

    from crossvis.commands.recipe import overrides_with_threads
    from crossvis.inference import Predictor
    from crossvis.recipes import load_recipe

    recipe = Path(__file__).parent / "helpers" / "tiny_crossvis.yaml"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        predictor = Predictor(load_recipe(recipe, ["runtime.num_threads=1", "model.num_classes=3"]))
        assert predictor.num_threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

    class Args:
        overrides, threads = ["a=1"], 3
    assert overrides_with_threads(Args()) == ["a=1", "runtime.num_threads=3"]
    Args.threads = None
    assert overrides_with_threads(Args()) == ["a=1"]
