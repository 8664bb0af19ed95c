"""``[function(i) for i in range(count)]`` over forked worker processes.

The workers are forked from the calling process, so they inherit ``function`` and everything it
reads (parsed JSON, decoded tracks) without pickling; only the results come back, pickled through
a pipe. Used where the work is large, pure Python/NumPy and split into independent items of about
equal cost: the RLE checks of a results file and the evaluator's scoring of results pieces. The
calling process computes a share itself, so ``workers`` processes run in all (``workers - 1``
forks; no process pool to import and start, which cost ~20 ms of a ~0.5 s command). Where there
is no ``fork`` (Windows), or for one worker, the map runs in the calling process; the results are
identical either way.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Callable, Optional, TypeVar

from crossvis.errors import CrossVISError

__all__ = ["forked_map", "can_fork"]

T = TypeVar("T")
_IN_WORKER = False  # set in forked workers: a map inside a map's worker runs in that worker


def can_fork() -> bool:
    """Whether this platform can fork (POSIX ``os.fork``; not Windows)."""
    return hasattr(os, "fork") and sys.platform != "win32"


def forked_map(function: Callable[[int], T], count: int, workers: int) -> list[T]:
    """``[function(i) for i in range(count)]``, computed by ``min(workers, count)`` processes.

    Process ``p`` (0: the caller, 1..: forks) computes items ``p, p + P, p + 2P, ...``.

    Args:
        function: called with each index; its results must be picklable (they travel back).
        count: number of items.
        workers: processes to use; ``<= 1`` (or no ``fork`` here) runs in this process.

    Returns:
        The results in index order. An exception raised by ``function`` is raised here (that of the
        caller's own share first, else that of the first worker that failed).

    Raises:
        CrossVISError: a worker ended without sending its results (killed, e.g. out of memory).
    """
    if workers <= 1 or count < 2 or _IN_WORKER or not can_fork():
        return [function(i) for i in range(count)]
    processes = min(workers, count)
    _flush_std()  # what is buffered now must not be written again by a worker
    children: list[tuple[int, int, Optional[int]]] = []  # (process number, pid, read end of its results pipe)
    try:
        for p in range(1, processes):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the caller's code
                os.close(read)
                _run_worker(function, range(p, count, processes), write)
            os.close(write)
            children.append((p, pid, read))
        results: list = [None] * count
        for i in range(0, count, processes):
            results[i] = function(i)
        failure = None
        while children:
            p, pid, read = children[0]
            children[0] = (p, pid, None)  # the pipe is _read_all's to close
            payload = _read_all(read)
            _, status = os.waitpid(pid, 0)
            children.pop(0)
            if not payload:
                raise CrossVISError(f"a worker process ended without its results ({_describe(status)}); "
                                    "run again with fewer workers (--workers 1 uses none)")
            error, values = pickle.loads(payload)
            if error is not None:
                failure = failure or error
            else:
                results[p::processes] = values
        if failure is not None:
            raise failure
        return results
    finally:  # after an error here or in a worker: stop and reap the workers not yet read
        for _, pid, read in children:
            _stop(pid, read)


def _run_worker(function: Callable[[int], object], items: range, write: int) -> None:
    """In a forked worker: compute ``items``, send ``(error, results)`` through ``write``, exit."""
    global _IN_WORKER
    _IN_WORKER = True
    try:
        try:
            # the caller's handlers (e.g. a training run's graceful stop) are not the worker's: SIGTERM
            # from the caller (see _stop) and Ctrl-C must end it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread (forked from another thread)
            pass
        try:
            payload = pickle.dumps((None, [function(i) for i in items]), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the caller
            try:
                payload = pickle.dumps((exc, None), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                payload = pickle.dumps((RuntimeError(f"worker failed: {exc!r}"), None))
        view = memoryview(payload)
        while view:
            view = view[os.write(write, view):]
        _flush_std()
    finally:
        os._exit(0)


def _flush_std() -> None:
    """Flush stdout and stderr where they can be (a closed pipe or a missing stream is no error here)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _read_all(fd: int) -> bytes:
    """Everything written to pipe ``fd`` until its writer exits; closes ``fd``."""
    parts = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            part = pipe.read(1 << 20)
            if not part:
                return b"".join(parts)
            parts.append(part)


def _stop(pid: int, read: Optional[int]) -> None:
    """End worker ``pid`` (if still running) and reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    if read is not None:
        os.close(read)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
