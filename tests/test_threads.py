"""Thread defaults: physical cores of the affinity mask, capped by a cgroup quota; explicit values win."""
import os
import subprocess
import sys

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


def test_load_aware_default_leaves_out_the_cores_others_keep_busy(machine, monkeypatch):
    machine([0, 1, 2, 3], {0: ("0", "0"), 1: ("0", "1"), 2: ("0", "2"), 3: ("0", "3")})
    for busy, free in ((0.0, 4), (0.4, 4), (0.6, 3), (1.0, 3), (2.2, 2), (3.9, 1), (8.0, 1)):
        monkeypatch.setattr(threads, "busy_cpus", lambda window=0.0, b=busy: b)
        assert threads.free_physical_cores() == free, busy
        assert threads.resolve_num_threads(None, load_aware=True) == free
    assert threads.resolve_num_threads(None) == 4           # training keeps every core
    assert threads.resolve_num_threads(3, load_aware=True) == 3  # an explicit number wins


def test_hyperthread_siblings_convert_busy_cpus_to_cores(machine, monkeypatch):
    machine([0, 1, 2, 3], {0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"), 3: ("0", "1")})
    monkeypatch.setattr(threads, "busy_cpus", lambda window=0.0: 2.0)  # two busy logical CPUs = one core
    assert threads.free_physical_cores() == 1


def test_a_burst_in_one_window_does_not_take_a_core(machine, monkeypatch):
    """A core found taken is sampled again; only a load seen in both windows leaves it out."""
    machine([0, 1], {0: ("0", "0"), 1: ("0", "1")})
    for readings, free in (([1.0, 0.1], 2), ([0.9, 1.0], 1), ([0.1], 2), ([2.0, 1.0], 1)):
        calls = iter(readings)
        monkeypatch.setattr(threads, "busy_cpus", lambda window=0.0: next(calls))
        assert threads.free_physical_cores() == free, readings
        assert next(calls, None) is None, f"{readings}: every reading used, no more"


def _stat_line(cpu: int, busy: int, idle: int) -> str:
    return f"cpu{cpu} {busy} 0 0 {idle} 0 0 0 0 0 0\n"


def test_busy_cpus_reads_proc_stat_and_subtracts_this_process(monkeypatch):
    """Two allowed CPUs; over the window one is fully busy, the other idle; this process used a
    quarter of a CPU, so others kept 1 − 0.25 CPUs busy."""
    samples = iter([{0: (100, 900), 1: (50, 950)}, {0: (200, 900), 1: (50, 1050)}])
    clock = iter([0.0, 1.0])
    own = iter([10.0, 10.25])
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0, 1})

    def fake_open(path, *args, **kwargs):
        import io

        stat = next(samples)
        text = "cpu 0 0 0 0\n" + "".join(_stat_line(c, *stat[c]) for c in sorted(stat)) + "cpu7 5 0 0 5\n"
        return io.StringIO(text)

    import builtins
    import time

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(time, "process_time", lambda: next(own))
    assert threads.busy_cpus(1.0) == pytest.approx(0.75)


def _run(code: str, **env) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=environment).stdout.split()


def test_the_cli_shortens_the_openmp_spin_before_torch_loads_and_keeps_a_users_setting():
    code = ("import os, sys, crossvis.cli as cli; cli.main(['--version']); "
            "print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)")
    assert _run(code)[-2:] == [str(threads.OPENMP_SPIN_COUNT), "False"]
    assert _run(code, GOMP_SPINCOUNT="7")[-2:] == ["7", "False"]
    policy = ("import os, crossvis.cli as cli; cli.main(['--version']); "
              "print(os.environ.get('GOMP_SPINCOUNT', 'unset'))")
    assert _run(policy, OMP_WAIT_POLICY="active")[-1] == "unset"  # the user chose how OpenMP waits
    late = "import torch, crossvis.threads as t; print(t.set_openmp_defaults())"
    assert _run(late) == ["False"]  # torch already loaded OpenMP: too late, and it says so


@pytest.mark.parametrize("per_unit, expected", [({"a": 2.0, "b": 1.0}, "b"), ({"a": 1.0, "b": 3.0}, "a"),
                                                ({"a": 1.0, "b": 1.0}, "a")])
def test_measured_choice_times_each_option_then_keeps_the_fastest(per_unit, expected):
    from crossvis.threads import MeasuredChoice

    choice = MeasuredChoice(("a", "b"), "test setting")
    handed = []
    work_sizes = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]   # per-unit timings: the sizes must not matter
    for work in work_sizes:
        option = choice.pick()
        handed.append(option)
        choice.record(option, per_unit[option] * work, work)
    trials = 2 * MeasuredChoice.TRIALS
    assert sorted(handed[:trials]) == ["a"] * (trials // 2) + ["b"] * (trials // 2)
    assert handed[trials:] == [expected] * (len(work_sizes) - trials)
    assert choice.chosen == expected
    choice.record("a" if expected == "b" else "b", 0.0, 1)   # ignored once chosen
    assert choice.pick() == expected


def test_measured_choice_with_one_option_needs_no_timing():
    from crossvis.threads import MeasuredChoice

    assert MeasuredChoice([7], "only").pick() == 7
    with pytest.raises(ValueError):
        MeasuredChoice([], "none")
