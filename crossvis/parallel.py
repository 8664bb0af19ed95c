"""``[function(i) for i in range(count)]`` over forked worker processes.

The workers are forked from the calling process, so they inherit ``function`` and everything it
reads (parsed JSON, decoded tracks) without pickling; only the indices go out and the results come
back. Used where the work is large, pure Python/NumPy and split into independent items: the RLE
checks of a results file and the evaluator's scoring of results pieces. Where ``fork`` is unavailable
(Windows, macOS's default), or for one worker, the map runs in the calling process; the results
are identical either way.
"""
from __future__ import annotations

import multiprocessing
from typing import Callable, Optional, TypeVar

__all__ = ["forked_map", "can_fork"]

T = TypeVar("T")
_FUNCTION: Optional[Callable[[int], object]] = None  # what the forked workers call (inherited)


def can_fork() -> bool:
    """Whether this platform offers the ``fork`` start method."""
    return "fork" in multiprocessing.get_all_start_methods()


def forked_map(function: Callable[[int], T], count: int, workers: int) -> list[T]:
    """``[function(i) for i in range(count)]``, computed by ``min(workers, count)`` forked processes.

    Args:
        function: called with each index; its results must be picklable (they travel back).
        count: number of items.
        workers: processes to use; ``<= 1`` (or no ``fork`` here) runs in this process.

    Returns:
        The results in index order. An exception raised by ``function`` is raised here.
    """
    global _FUNCTION
    if workers <= 1 or count < 2 or not can_fork():
        return [function(i) for i in range(count)]
    if _FUNCTION is not None:  # a map inside a map's worker: no nested pools
        return [function(i) for i in range(count)]
    _FUNCTION = function
    try:
        processes = min(workers, count)
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            return pool.map(_call, range(count), chunksize=max(1, count // (8 * processes)))
    finally:
        _FUNCTION = None


def _call(index: int) -> object:
    assert _FUNCTION is not None
    return _FUNCTION(index)
