"""Dropping the pages of memory-mapped data once they are read.

The gate memory-maps large npz members instead of loading them, but every page a map has read stays in the
process's resident memory until the map is closed: one pass over 3 GB of samples would hold 3 GB, as much as
loading it. Once a batch has been run by every model (or a chunk checked for NaN), its pages are handed back
to the kernel (madvise DONTNEED: a read-only file map reads them again from the file if they are touched
again), so the gate's memory does not grow with the data.
"""

from __future__ import annotations

import mmap

import numpy as np

PAGE = mmap.PAGESIZE
_BASES: dict[int, tuple[mmap.mmap, int]] = {}


def _base_address(mm: mmap.mmap) -> int:
    cached = _BASES.get(id(mm))
    if cached is None or cached[0] is not mm:
        cached = (mm, np.frombuffer(mm, dtype=np.uint8).ctypes.data)
        _BASES.clear()  # one map at a time is the common case; never hold a closed one
        _BASES[id(mm)] = cached
    return cached[1]


def drop(rows) -> None:
    """Hand back the pages under `rows`, a contiguous slice of a memory-mapped array; anything else (an array
    in memory, a column read another way) is left alone."""
    mm = getattr(rows, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise") or not isinstance(rows, np.ndarray) or \
            not rows.flags.c_contiguous or rows.nbytes == 0:
        return
    try:
        start = rows.ctypes.data - _base_address(mm)
        first = start - start % PAGE
        stop = min(start + rows.nbytes, len(mm))
        if 0 <= first < stop:
            mm.madvise(mmap.MADV_DONTNEED, first, stop - first)
    except (OSError, ValueError):  # a map closed under us, or a platform without it: only memory is lost
        pass


def drop_rows(columns, start: int, stop: int) -> None:
    """Hand back rows start..stop of every memory-mapped column."""
    for column in columns:
        if isinstance(column, np.memmap):
            drop(column[start:stop])
