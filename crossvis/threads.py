"""How many threads crossvis runs on: the physical cores this process may use, or what the user set.

``runtime.num_threads`` (recipes) and ``--threads`` (CLI) override the default; 0 means "the
default", which is :func:`available_physical_cores`: the CPUs in this process's affinity mask
(``os.sched_getaffinity``), counted once per physical core (hyper-threads share a core's
arithmetic units, so two threads per core make dense convolutions slower, not faster), and capped
by a cgroup CPU quota (containers). Oversubscribing the cores is the usual cause of CPU inference
running many times slower than it should.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

__all__ = ["available_physical_cores", "resolve_num_threads", "configure_threads"]

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


def resolve_num_threads(requested: Optional[int] = None) -> int:
    """``requested`` when it is a positive number, else :func:`available_physical_cores`."""
    if requested is not None and int(requested) > 0:
        return int(requested)
    return available_physical_cores()


def configure_threads(requested: Optional[int] = None) -> int:
    """Set torch's intra-op threads to :func:`resolve_num_threads` ``(requested)`` and return it."""
    import torch

    n = resolve_num_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    logger.debug("using %d intra-op threads", n)
    return n
