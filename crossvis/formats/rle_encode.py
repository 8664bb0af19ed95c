"""pycocotools' own RLE encoder, called so that several threads can encode at once and only the
occupied columns are read.

``pycocotools.mask.encode`` runs ``maskApi.c``'s ``rleEncode`` and ``rleToString`` while holding
the GIL: one core reads every pixel of every mask (20 MB for 87 masks of a 360×640 frame, ~10 ms),
however many cores are idle. The same two C functions are exported by pycocotools' extension
module, so :func:`encode_counts` calls them through :mod:`ctypes`, which releases the GIL for the
duration of each ``rleEncode`` call: the masks are split into contiguous slices and each slice is
encoded on its own thread. ``rleEncode``'s pixel loop runs at ~2 GB/s; the columns outside a mask's
first and last occupied one are found first, eight bytes at a time (:func:`column_spans`, ~16 GB/s),
and are not passed to it: they only lengthen the first and the last run of zeros. Measured on
360×640 frames of 85 masks (``benchmarks/bench_rle.py``): masks a tenth of the frame wide 0.39 of
``pycocotools.mask.encode``'s time on one thread, 0.59 of reading every column on two; the
benchmark model's random-weight masks (80% of the width) 0.96; masks that all span the whole
width 1.08–1.18× (the scan is lost). The strings are byte for byte those of ``pycocotools.mask.encode`` (the
same C code); on first use a few masks are encoded both ways, and any difference, or a
pycocotools build that does not export the functions, makes :func:`encode_counts` return ``None``
(callers then use ``pycocotools.mask.encode``).

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

from crossvis.threads import ThreadChoice as _MeasuredThreads

# ctypes, ctypes.util and threading are imported when first needed: with ctypes.util's
# subprocess they cost ~5 ms of every `crossvis evaluate`, which never encodes

__all__ = ["encode_counts", "strings_from_runs", "column_spans", "ThreadChoice", "MIN_PIXELS_PER_THREAD", "MIN_PIXELS_NATIVE"]

logger = logging.getLogger(__name__)

#: a thread is started only for at least this many pixels of masks (starting one costs ~0.1 ms,
#: about what the encoder takes for 200k pixels)
MIN_PIXELS_PER_THREAD = 1 << 20

#: below this many pixels in all, one thread calls ``pycocotools.mask.encode`` directly: each
#: ctypes call costs a few microseconds (measured: one 128×192 mask 19 µs through here, 7 µs
#: there), more than skipping empty columns saves on so few pixels
MIN_PIXELS_NATIVE = 1 << 18


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

    def encode_slice(self, columns: np.ndarray, start: int, stop: int, out: list) -> None:
        """Compressed counts (bytes) of masks ``start:stop`` of ``columns`` into ``out``.

        Args:
            columns: uint8 0/1 [N, W, H], C-contiguous: N column-major masks.

        The encoder reads only each mask's columns from its first nonzero one to one past its last
        (:func:`column_spans`; the extra column is all zero, so the runs end with zeros). The zero
        columns before and after are then added to the first and the last run in place: the
        counts are those of the whole mask.
        """
        ctypes = self.ctypes
        _, w, h = columns.shape
        base = columns.ctypes.data
        rle = self.rle()
        for i, (first, last) in enumerate(column_spans(columns[start:stop]).tolist(), start):
            read = min(last + 1, w) - first  # (0, 0) for an empty mask: one zero column
            self.encode(ctypes.byref(rle), base + (i * w + first) * h, h, read, 1)
            try:  # runs alternate zeros, ones, zeros, ...; the first counts zeros (possibly 0)
                rle.cnts[0] += first * h
                rle.cnts[rle.m - 1] += (w - first - read) * h  # a run of zeros where anything is left
                rle.w = w
                text = self.to_string(ctypes.byref(rle))
                try:
                    out[i] = ctypes.string_at(text)
                finally:
                    self.free(text)
            finally:
                self.free_rle(ctypes.byref(rle))  # frees cnts and sets it to NULL


    def strings(self, counts: np.ndarray, offsets: np.ndarray, h: int, w: int) -> list[bytes]:
        """Compressed counts (bytes) of masks whose run lengths are given (``rleToString`` only).

        Args:
            counts: uint32 [total] C-contiguous, mask ``i``'s runs at ``offsets[i]:offsets[i + 1]``.
        """
        ctypes = self.ctypes
        base = ctypes.cast(counts.ctypes.data, ctypes.POINTER(ctypes.c_uint))
        rle = self.rle()
        rle.h, rle.w = h, w
        out = []
        for start, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            rle.m = stop - start
            rle.cnts = ctypes.cast(ctypes.byref(base.contents, 4 * start), ctypes.POINTER(ctypes.c_uint))
            text = self.to_string(ctypes.byref(rle))
            try:
                out.append(ctypes.string_at(text))
            finally:
                self.free(text)
        return out


def column_spans(columns: np.ndarray) -> np.ndarray:
    """int64 [N, 2]: per mask the first column holding a nonzero pixel and one past the last
    ((0, 0) for an empty mask).

    Args:
        columns: uint8 [N, W, H] masks, C-contiguous (each column's H pixels contiguous).

    A column is tested by OR-ing its bytes eight at a time where H is a multiple of 8 (~16 GB/s,
    against ~2 GB/s for the encoder's pixel loop, so skipping the empty columns pays).
    """
    n, w, h = columns.shape
    if h % 8 == 0 and columns.flags.c_contiguous:
        occupied = np.bitwise_or.reduce(columns.view(np.uint64), axis=2) != 0
    else:
        occupied = np.bitwise_or.reduce(columns, axis=2) != 0
    spans = np.zeros((n, 2), dtype=np.int64)
    present = occupied.any(axis=1)
    rows = occupied[present]
    spans[present, 0] = rows.argmax(axis=1)
    spans[present, 1] = w - rows[:, ::-1].argmax(axis=1)
    return spans


@functools.lru_cache(maxsize=1)
def _native() -> Optional[_Native]:
    """The C functions when they are there and give pycocotools' own strings, else None."""
    try:
        from pycocotools import _mask, mask as mask_utils

        native = _Native(_mask.__file__)
        rng = np.random.default_rng(0)
        probe = np.asfortranarray(rng.random((7, 5, 4)) < 0.5, dtype=np.uint8)
        probe[:, :, 1] = 1  # full; then one inner column only, empty
        probe[:, :, 2:] = 0
        probe[2:4, 2, 2] = 1
        expected = [r["counts"] for r in mask_utils.encode(probe)]
        got: list = [None] * 4
        native.encode_slice(probe.T, 0, 4, got)
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
    columns = masks.T  # [N, W, H], C-contiguous
    errors: list[BaseException] = []

    def run(start: int, stop: int) -> None:
        try:
            native.encode_slice(columns, start, stop, out)
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


def strings_from_runs(counts: np.ndarray, offsets: np.ndarray, h: int, w: int) -> Optional[list[bytes]]:
    """Compressed RLE counts (``bytes``, as ``pycocotools.mask.encode`` writes them) of masks given
    by their run lengths, or None where pycocotools' C functions are not callable here.

    Args:
        counts: uint32 [total] run lengths (column-major, starting with a run of 0s) of all masks
            one after another; offsets: int64 [N + 1], mask ``i``'s runs at
            ``counts[offsets[i]:offsets[i + 1]]``; h, w: the masks' size.
    """
    native = _native()
    if native is None:
        return None
    return native.strings(np.ascontiguousarray(counts, dtype=np.uint32), np.asarray(offsets, dtype=np.int64), h, w)


class ThreadChoice(_MeasuredThreads):
    """:class:`crossvis.threads.ThreadChoice` for RLE encoding, with :meth:`encode`.

    One instance per process is enough (:func:`crossvis.formats.encode_masks` keeps one).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, what: str = "RLE encoding") -> None:
        super().__init__(clock, what)

    def encode(self, masks: np.ndarray, threads: int) -> Optional[list[bytes]]:
        """:func:`encode_counts` on :meth:`pick` threads, timed for the choice."""
        used = self.pick(threads)
        start = self.clock()
        counts = encode_counts(masks, used)
        if counts is not None:
            self.record(threads, used, self.clock() - start, masks.size)
        return counts
