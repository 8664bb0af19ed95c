"""How many threads crossvis runs on: the physical cores this process may use, or what the user set.

``runtime.num_threads`` (recipes) and ``--threads`` (CLI) override the default; 0 means "the
default", which is :func:`available_physical_cores`: the CPUs in this process's affinity mask
(``os.sched_getaffinity``), counted once per physical core (hyper-threads share a core's
arithmetic units, so two threads per core make dense convolutions slower, not faster), and capped
by a cgroup CPU quota (containers). Oversubscribing the cores is the usual cause of CPU inference
running many times slower than it should.

Inference (``Predictor``: ``crossvis eval``, ``demo``, ``bench``) goes one step further by default:
:func:`free_physical_cores` samples ``/proc/stat`` for :data:`LOAD_SAMPLE_S` and leaves out the
cores that other processes keep busy. With one core taken by another job, two threads on a 2-core
machine wait on the preempted one at every operation (measured: 0.35 of the idle throughput);
one thread on the free core keeps 0.51, the share of the cores that is left.

:func:`set_openmp_defaults` (the ``crossvis`` command calls it before torch loads) shortens how
long torch's OpenMP threads busy-wait after a parallel operation. GNU OpenMP spins for
300,000 iterations by default (milliseconds), so after the network the worker threads keep their
cores busy doing nothing while the single-threaded steps of the post-processing run; a second
thread for RLE encoding then only shared a spinning core (measured on 2 cores, Xeon: 87 masks
at 360×640, 11.7 ms on two threads against 6.3 ms with the shorter spin). The spin it sets still
covers the gaps between the network's operations (the network's speed was unchanged).

Because of such effects, the faster of two equivalent settings (one thread or two for a numpy
step, a larger or a smaller batch of instances) differs between machines; :class:`MeasuredChoice`
times each on the first calls and keeps the faster.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
import time
from typing import Callable, Generic, Hashable, Optional, Sequence, TypeVar

__all__ = ["available_physical_cores", "free_physical_cores", "busy_cpus", "resolve_num_threads",
           "configure_threads", "set_openmp_defaults", "MeasuredChoice", "ThreadChoice", "OPENMP_SPIN_COUNT", "LOAD_SAMPLE_S"]

#: busy-wait iterations of an idle GNU OpenMP thread before it sleeps (``GOMP_SPINCOUNT``; the
#: library's default is 300,000): 0.3–1.5 ms depending on the CPU's pause instruction
OPENMP_SPIN_COUNT = 30_000

logger = logging.getLogger(__name__)


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def _physical_core(cpu: int) -> Optional[tuple[str, str]]:
    topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
    except OSError:
        return None


def _cgroup_cpu_limit() -> Optional[float]:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, if one is set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (at least 1)."""
    cpus = _allowed_cpus()
    cores = {_physical_core(c) for c in cpus}
    count = len(cpus) if None in cores else len(cores)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, int(limit)))
    return max(1, count)


#: how long :func:`busy_cpus` watches the CPUs (seconds)
LOAD_SAMPLE_S = 0.1


def _cpu_jiffies(cpus: set[int]) -> Optional[tuple[int, int]]:
    """(busy, total) jiffies summed over ``cpus`` from ``/proc/stat``, or None where it is missing."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                fields = [int(v) for v in rest.split()]
                idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
                used = sum(fields[:8])  # user nice system idle iowait irq softirq steal
                busy, total = busy + used - idle, total + used
    except (OSError, ValueError, IndexError):
        return None
    return busy, total


def busy_cpus(window: float = LOAD_SAMPLE_S) -> float:
    """How many of this process's allowed CPUs other processes kept busy during ``window`` seconds.

    The busy time of the allowed CPUs in ``/proc/stat`` minus this process's own CPU time over the
    same window; 0.0 where ``/proc/stat`` cannot be read (not Linux).
    """
    import time

    cpus = _allowed_cpus()
    before, own_before, start = _cpu_jiffies(cpus), time.process_time(), time.monotonic()
    if before is None:
        return 0.0
    time.sleep(window)
    after, own_after, elapsed = _cpu_jiffies(cpus), time.process_time(), time.monotonic() - start
    if after is None or after[1] <= before[1]:
        return 0.0
    # jiffies over all allowed CPUs → a number of CPUs busy on average during the window
    busy = (after[0] - before[0]) / (after[1] - before[1]) * len(cpus)
    return max(0.0, busy - (own_after - own_before) / max(elapsed, 1e-9))


def free_physical_cores(window: float = LOAD_SAMPLE_S) -> int:
    """:func:`available_physical_cores` less those other processes keep busy now (at least 1).

    A CPU counts as taken when others use more than half of it on average over the window;
    hyper-threads are converted to physical cores in proportion. A window that finds a core taken
    is sampled once more and the lower reading kept: a burst of another process (a shell command,
    a process starting or exiting) must not halve the threads of a whole run; a busy job keeps
    its core in both windows.
    """
    cores = available_physical_cores()
    share = min(1.0, cores / max(1, len(_allowed_cpus())))
    taken = int(busy_cpus(window) * share + 0.5)
    if taken > 0:
        taken = min(taken, int(busy_cpus(window) * share + 0.5))
    return max(1, cores - taken)


def resolve_num_threads(requested: Optional[int] = None, load_aware: bool = False) -> int:
    """``requested`` when it is a positive number, else :func:`available_physical_cores`, or with
    ``load_aware`` :func:`free_physical_cores` (the cores other processes leave free)."""
    if requested is not None and int(requested) > 0:
        return int(requested)
    return free_physical_cores() if load_aware else available_physical_cores()


def configure_threads(requested: Optional[int] = None, load_aware: bool = False) -> int:
    """Set torch's intra-op threads to :func:`resolve_num_threads` ``(requested, load_aware)`` and
    return it."""
    import torch

    n = resolve_num_threads(requested, load_aware)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if load_aware and (requested is None or int(requested) <= 0):
        cores = available_physical_cores()
        if n < cores:
            logger.info("using %d intra-op threads: other processes keep %d of the %d cores busy "
                        "(runtime.num_threads or --threads sets a number)", n, cores - n, cores)
    logger.debug("using %d intra-op threads", n)
    return n


def set_openmp_defaults() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`OPENMP_SPIN_COUNT` unless the environment sets it or
    ``OMP_WAIT_POLICY`` (the user's own choice of waiting; see the module docstring). OpenMP reads
    it when torch loads, so this must run before ``import torch``.

    Returns:
        whether the setting can still take effect (torch not imported yet).
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN_COUNT))
    if "torch" in sys.modules:
        logger.debug("GOMP_SPINCOUNT set after torch was imported: OpenMP keeps its own spin count")
        return False
    return True


Option = TypeVar("Option", bound=Hashable)


class MeasuredChoice(Generic[Option]):
    """The fastest of a few settings that give the same results, timed on the first calls.

    :meth:`pick` hands out the options in turn (the one with the fewest timings first, the earlier
    option on a tie) until each has ``trials`` timings (default :attr:`TRIALS`), then the one with
    the lowest median from then on (the earlier one on equal medians). Timings are seconds per unit of work
    (:meth:`record`), so that calls of different sizes compare fairly.

    Args:
        options: the settings, the preferred one first.
        what: names the setting in the log line that reports the choice.
        clock: seconds, read by callers that time the option they were given (tests pass a fake one).
        trials: timings per option before choosing.
    """

    TRIALS = 3

    def __init__(self, options: Sequence[Option], what: str,
                 clock: Callable[[], float] = time.perf_counter, trials: int = TRIALS) -> None:
        if not options:
            raise ValueError("MeasuredChoice needs at least one option")
        self.options, self.what, self.clock, self.trials = tuple(options), what, clock, int(trials)
        self._timings: dict = {option: [] for option in self.options}
        self.chosen: Optional[Option] = self.options[0] if len(self.options) == 1 else None

    def pick(self) -> Option:
        """The option to run next."""
        if self.chosen is not None:
            return self.chosen
        counts = [len(self._timings[option]) for option in self.options]
        if min(counts) < self.trials:
            return self.options[counts.index(min(counts))]
        medians = [sorted(self._timings[o])[len(self._timings[o]) // 2] for o in self.options]
        self.chosen = self.options[medians.index(min(medians))]
        logger.debug("%s: %r chosen (%s per unit of work)", self.what, self.chosen,
                     {o: f"{m * 1e9:.3f} ns" for o, m in zip(self.options, medians)})
        return self.chosen

    def record(self, option: Option, seconds: float, work: float = 1.0) -> None:
        """One timing of ``option``: ``seconds`` for ``work`` units (ignored once chosen)."""
        if self.chosen is None and work > 0 and option in self._timings:
            self._timings[option].append(seconds / work)


class ThreadChoice:
    """One thread or ``threads``, whichever runs a step faster here: a :class:`MeasuredChoice` per
    allowed thread count, timed in seconds per unit of work (e.g. per pixel).

    Keep one instance per step and process; ``clock`` is for tests, ``what`` names the step in the log.
    """

    TRIALS = MeasuredChoice.TRIALS

    def __init__(self, clock: Callable[[], float] = time.perf_counter, what: str = "work") -> None:
        self.clock, self.what = clock, what
        self._choices: dict[int, MeasuredChoice[int]] = {}

    def _choice(self, threads: int) -> MeasuredChoice[int]:
        if threads not in self._choices:
            self._choices[threads] = MeasuredChoice((1, threads), f"{self.what} (threads, of {threads})",
                                                    self.clock, self.TRIALS)
        return self._choices[threads]

    def pick(self, threads: int) -> int:
        """The thread count to run on next when up to ``threads`` are allowed."""
        return 1 if threads <= 1 else self._choice(threads).pick()

    def record(self, threads: int, used: int, seconds: float, work: float) -> None:
        """One timing of a run on ``used`` threads (``threads`` allowed) over ``work`` units."""
        if threads > 1:
            self._choice(threads).record(used, seconds, work)
