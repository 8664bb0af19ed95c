"""crossvis.parallel.forked_map: the same results as a plain map, in order, from forked workers."""
import os
import signal

import pytest

from crossvis.errors import CrossVISError
from crossvis.parallel import can_fork, forked_map


def test_forked_map_equals_a_plain_map_and_runs_in_other_processes():
    if not can_fork():
        pytest.skip("no fork on this platform")
    data = [list(range(i)) for i in range(40)]  # read by the workers from the inherited memory
    assert forked_map(lambda i: sum(data[i]), len(data), workers=2) == [sum(d) for d in data]
    assert forked_map(lambda i: sum(data[i]), len(data), workers=3) == [sum(d) for d in data]
    pids = forked_map(lambda i: os.getpid(), 9, workers=3)  # item i in process i % 3, the caller first
    assert pids[0::3] == [os.getpid()] * 3
    assert len(set(pids[1::3])) == len(set(pids[2::3])) == 1 and len(set(pids)) == 3


def test_large_results_come_back_whole():
    if not can_fork():
        pytest.skip("no fork on this platform")
    out = forked_map(lambda i: bytes([i]) * (3 << 20), 4, workers=2)  # more than a pipe holds
    assert [len(b) for b in out] == [3 << 20] * 4 and [b[-1] for b in out] == [0, 1, 2, 3]


def test_a_map_inside_a_worker_runs_in_that_worker():
    if not can_fork():
        pytest.skip("no fork on this platform")
    inner = forked_map(lambda i: forked_map(lambda j: os.getpid(), 2, workers=2), 2, workers=2)
    assert inner[0][0] == os.getpid() != inner[0][1]  # item 0 is the caller's: its map forks
    assert inner[1][0] == inner[1][1] != os.getpid()  # item 1 is the worker's: its map runs there


def test_a_killed_worker_is_an_error_not_a_hang():
    if not can_fork():
        pytest.skip("no fork on this platform")

    def dies_in_the_worker(i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return i

    with pytest.raises(CrossVISError, match="killed by signal 9"):
        forked_map(dies_in_the_worker, 2, workers=2)
    assert not _children_left()


def _children_left() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG) != (0, 0)
    except ChildProcessError:
        return False


def test_one_worker_or_one_item_runs_here():
    assert forked_map(lambda i: os.getpid(), 3, workers=1) == [os.getpid()] * 3
    assert forked_map(lambda i: os.getpid(), 1, workers=4) == [os.getpid()]
    assert forked_map(lambda i: i, 0, workers=4) == []


def test_a_worker_error_is_raised_in_the_caller():
    if not can_fork():
        pytest.skip("no fork on this platform")

    def fails_at_five(i):
        if i == 5:
            raise ValueError("item 5 is bad")
        return i

    with pytest.raises(ValueError, match="item 5 is bad"):
        forked_map(fails_at_five, 10, workers=2)  # 5 is the worker's
    with pytest.raises(ValueError, match="item 5 is bad"):
        forked_map(fails_at_five, 10, workers=5)  # 5 is the caller's: the workers are stopped
    assert not _children_left()


def test_workers_end_on_sigterm_whatever_handler_the_caller_has():
    """The caller's own SIGTERM handler (a training run's graceful stop) is not inherited as such:
    when the caller's share fails, its workers are stopped at once, not run to their end."""
    if not can_fork():
        pytest.skip("no fork on this platform")
    import time

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a handler that ignores the signal
    try:
        def slow_worker_failing_caller(i):
            if i == 0:
                time.sleep(0.2)
                raise ValueError("the caller's item failed")
            time.sleep(30)
            return i

        start = time.perf_counter()
        with pytest.raises(ValueError, match="caller's item"):
            forked_map(slow_worker_failing_caller, 2, workers=2)
        assert time.perf_counter() - start < 10
        assert not _children_left()
    finally:
        signal.signal(signal.SIGTERM, previous)
