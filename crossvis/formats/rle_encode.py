"""pycocotools' own RLE encoder, called so that several threads can encode at once.

``pycocotools.mask.encode`` runs ``maskApi.c``'s ``rleEncode`` and ``rleToString`` while holding
the GIL: one core reads every pixel of every mask (20 MB for 87 masks of a 360×640 frame, ~10 ms),
however many cores are idle. The same two C functions are exported by pycocotools' extension
module, so :func:`encode_counts` calls them through :mod:`ctypes`, which releases the GIL for the
duration of each call: the masks are split into contiguous slices and each slice is encoded on its
own thread. The strings are byte for byte those of ``pycocotools.mask.encode`` (the same C code);
on first use a few masks are encoded both ways, and any difference, or a pycocotools build that
does not export the functions, makes :func:`encode_counts` return ``None`` (callers then use
``pycocotools.mask.encode``).

More threads are not always faster: right after a parallel torch operation, torch's OpenMP
threads keep the other cores busy-waiting for a while (see :mod:`crossvis.threads`), and a second
encoding thread then shares a core with one (measured: 11.7 ms on two threads against 12.5 ms on
one, and 6.3 ms once the spin was short). :class:`ThreadChoice` therefore times both on the first calls
and keeps the faster.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Optional

import numpy as np

# ctypes, ctypes.util and threading are imported when first needed: with ctypes.util's
# subprocess they cost ~5 ms of every `crossvis evaluate`, which never encodes

__all__ = ["encode_counts", "ThreadChoice", "MIN_PIXELS_PER_THREAD"]

logger = logging.getLogger(__name__)

#: a thread is started only for at least this many pixels of masks (starting one costs ~0.1 ms,
#: about what the encoder takes for 200k pixels)
MIN_PIXELS_PER_THREAD = 1 << 20


class _Native:
    """The C functions of pycocotools' ``_mask`` extension and the C library's ``free``."""

    def __init__(self, path: str) -> None:
        import ctypes
        import ctypes.util

        class RLE(ctypes.Structure):
            """``maskApi.h``: ``typedef struct { siz h, w, m; uint *cnts; } RLE;`` (``siz``: unsigned long)."""

            _fields_ = [("h", ctypes.c_ulong), ("w", ctypes.c_ulong), ("m", ctypes.c_ulong),
                        ("cnts", ctypes.POINTER(ctypes.c_uint))]

        self.ctypes, self.rle = ctypes, RLE
        lib = ctypes.CDLL(path)  # CDLL: every call releases the GIL
        self.encode, self.to_string, self.free_rle = lib.rleEncode, lib.rleToString, lib.rleFree
        self.encode.argtypes = [ctypes.POINTER(RLE), ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self.encode.restype = None
        self.to_string.argtypes = [ctypes.POINTER(RLE)]
        self.to_string.restype = ctypes.c_void_p  # a malloc'd char*, freed below
        self.free_rle.argtypes = [ctypes.POINTER(RLE)]
        self.free_rle.restype = None
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self.free = libc.free
        self.free.argtypes, self.free.restype = [ctypes.c_void_p], None

    def encode_slice(self, base: int, h: int, w: int, start: int, stop: int, out: list) -> None:
        """Compressed counts (bytes) of masks ``start:stop`` of the buffer at ``base`` into ``out``."""
        ctypes, count = self.ctypes, stop - start
        rles = (self.rle * count)()
        try:
            self.encode(rles, base + start * h * w, h, w, count)
            for i in range(count):
                text = self.to_string(ctypes.byref(rles[i]))
                try:
                    out[start + i] = ctypes.string_at(text)
                finally:
                    self.free(text)
        finally:
            for i in range(count):
                self.free_rle(ctypes.byref(rles[i]))  # frees cnts (NULL-safe) and sets it to NULL


@functools.lru_cache(maxsize=1)
def _native() -> Optional[_Native]:
    """The C functions when they are there and give pycocotools' own strings, else None."""
    try:
        from pycocotools import _mask, mask as mask_utils

        native = _Native(_mask.__file__)
        rng = np.random.default_rng(0)
        probe = np.asfortranarray(rng.random((7, 5, 3)) < 0.5, dtype=np.uint8)
        probe[:, :, 2] = 1
        expected = [r["counts"] for r in mask_utils.encode(probe)]
        got: list = [None] * 3
        native.encode_slice(probe.ctypes.data, 7, 5, 0, 3, got)
        if got != expected:
            logger.warning("pycocotools' C encoder gave other strings through ctypes; encoding on one thread")
            return None
        return native
    except (OSError, AttributeError, ImportError, TypeError, ValueError) as error:
        logger.debug("pycocotools' C encoder is not callable through ctypes (%s); encoding on one thread", error)
        return None


def encode_counts(masks: np.ndarray, threads: int) -> Optional[list[bytes]]:
    """Compressed RLE counts of N masks on up to ``threads`` threads, or None (see the module docstring).

    Args:
        masks: uint8 0/1 [H, W, N], Fortran-ordered (each mask's pixels contiguous, column-major:
            the layout ``pycocotools.mask.encode`` takes).
        threads: the most threads to use (the calling thread included); 1 encodes on the caller's.

    Returns:
        one ``bytes`` counts string per mask, as ``pycocotools.mask.encode(masks)[i]["counts"]``.
    """
    import threading

    h, w, n = masks.shape
    if (masks.dtype != np.uint8 or not masks.flags.f_contiguous or h * w == 0 or n == 0
            or (native := _native()) is None):
        return None
    workers = max(1, min(int(threads), n, (h * w * n) // MIN_PIXELS_PER_THREAD))
    out: list[Any] = [None] * n
    bounds = [round(i * n / workers) for i in range(workers + 1)]
    base = masks.ctypes.data
    errors: list[BaseException] = []

    def run(start: int, stop: int) -> None:
        try:
            native.encode_slice(base, h, w, start, stop, out)
        except BaseException as error:  # re-raised by the caller
            errors.append(error)

    helpers = [threading.Thread(target=run, args=(bounds[i], bounds[i + 1]), daemon=True) for i in range(1, workers)]
    for helper in helpers:
        helper.start()
    run(bounds[0], bounds[1])
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return out


class ThreadChoice:
    """One thread or ``threads``, whichever encodes faster here: measured on the first calls.

    :meth:`pick` alternates between the two until each has :attr:`TRIALS` timings (seconds per
    pixel, so frames with more masks compare fairly), then returns the one with the lower median
    from then on. One instance per process is enough (:func:`crossvis.formats.encode_masks` keeps
    one); ``clock`` is for tests.
    """

    TRIALS = 3

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._timings: dict[tuple[int, int], list[float]] = {}  # (requested, used) -> s/pixel
        self._chosen: dict[int, int] = {}

    def pick(self, threads: int) -> int:
        """The thread count to encode on next when up to ``threads`` are allowed."""
        if threads <= 1:
            return 1
        if threads in self._chosen:
            return self._chosen[threads]
        counts = {used: len(self._timings.get((threads, used), ())) for used in (1, threads)}
        if min(counts.values()) < self.TRIALS:
            return min(counts, key=lambda used: (counts[used], -used))  # fewer timings first, then more threads
        medians = {used: float(np.median(self._timings[(threads, used)])) for used in (1, threads)}
        self._chosen[threads] = min(medians, key=lambda used: (medians[used], used))
        logger.debug("RLE encoding on %d thread(s): %s ns/pixel", self._chosen[threads],
                     {u: round(m * 1e9, 3) for u, m in medians.items()})
        return self._chosen[threads]

    def record(self, threads: int, used: int, seconds: float, pixels: int) -> None:
        """One timing of an encode on ``used`` threads (``threads`` allowed) over ``pixels`` pixels."""
        if threads > 1 and threads not in self._chosen and pixels > 0:
            self._timings.setdefault((threads, used), []).append(seconds / pixels)

    def encode(self, masks: np.ndarray, threads: int) -> Optional[list[bytes]]:
        """:func:`encode_counts` on :meth:`pick` threads, timed for the choice."""
        used = self.pick(threads)
        start = self.clock()
        counts = encode_counts(masks, used)
        if counts is not None:
            self.record(threads, used, self.clock() - start, masks.size)
        return counts
