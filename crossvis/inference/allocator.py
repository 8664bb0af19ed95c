"""Keep freed memory in the process for re-use instead of handing it back to the OS (glibc malloc).

glibc serves a large allocation (above its *mmap threshold*: 128 KiB at start, raised dynamically
up to 32 MiB) with a fresh ``mmap`` and unmaps it again on ``free``, and it returns the free top
of its heap to the OS once it exceeds the *trim threshold*. Every page of such memory is zeroed by
the kernel on first touch. Inference allocates the same large maps at every frame (the network's
activations, the masks pasted at frame size), so every frame paid for them again: measured on a
CrossVIS R-50 at 360×640 on 2 cores (AMD EPYC), ~10,000 minor page faults and 60–90 ms of a
~400 ms network pass, and render+paste of 87 masks 51 → 25 ms.

:func:`keep_freed_memory` raises both thresholds (``mallopt``), so freed blocks stay in the heap
and the next frame re-uses them without a fault. Peak memory is unchanged (the same blocks are
re-used); the process just does not shrink back between frames. The inference entry points
(:class:`~crossvis.inference.predictor.Predictor` and the benchmarks) call it; set
``CROSSVIS_KEEP_FREED_MEMORY=0`` to leave the allocator as it is. On other C libraries (musl,
macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["keep_freed_memory", "KEEP_BYTES"]

logger = logging.getLogger(__name__)

#: blocks up to this size come from (and return to) the heap; this much free heap is kept
KEEP_BYTES = 1 << 30

# glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_applied: bool | None = None


def keep_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Make glibc keep freed memory for re-use (see the module docstring); idempotent.

    Returns:
        whether the allocator was changed (now or by an earlier call): False on a C library
        other than glibc, when ``CROSSVIS_KEEP_FREED_MEMORY=0``, or when ``mallopt`` refused.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("CROSSVIS_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no", "off"):
        logger.debug("allocator left as it is (CROSSVIS_KEEP_FREED_MEMORY=0)")
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    size = int(min(keep_bytes, 2 ** 31 - 1))
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, size))
    logger.debug("glibc malloc keeps freed blocks up to %d bytes: %s", size, _applied)
    return _applied
