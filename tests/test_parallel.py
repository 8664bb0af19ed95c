"""crossvis.parallel.forked_map: the same results as a plain map, in order, from forked workers."""
import os

import pytest

from crossvis.parallel import can_fork, forked_map


def test_forked_map_equals_a_plain_map_and_runs_in_other_processes():
    if not can_fork():
        pytest.skip("no fork start method on this platform")
    data = [list(range(i)) for i in range(40)]  # read by the workers from the inherited memory
    assert forked_map(lambda i: sum(data[i]), len(data), workers=2) == [sum(d) for d in data]
    pids = set(forked_map(lambda i: os.getpid(), 16, workers=2))
    assert os.getpid() not in pids and pids


def test_one_worker_or_one_item_runs_here():
    assert forked_map(lambda i: os.getpid(), 3, workers=1) == [os.getpid()] * 3
    assert forked_map(lambda i: os.getpid(), 1, workers=4) == [os.getpid()]
    assert forked_map(lambda i: i, 0, workers=4) == []


def test_a_worker_error_is_raised_in_the_caller():
    if not can_fork():
        pytest.skip("no fork start method on this platform")

    def fails_at_five(i):
        if i == 5:
            raise ValueError("item 5 is bad")
        return i

    with pytest.raises(ValueError, match="item 5 is bad"):
        forked_map(fails_at_five, 10, workers=2)
