"""Dropping the pages of memory-mapped data once they are read.

The gate memory-maps large npz members instead of loading them, but every page a map has read stays in the
process's resident memory until the map is closed: one pass over 3 GB of samples would hold 3 GB, as much as
loading it. Once a batch has been run by every model (or a chunk checked for NaN), its pages are handed back
to the kernel (madvise DONTNEED: a read-only file map reads them again from the file if they are touched
again), so the gate's memory does not grow with the data.

A drop reaches back one large folio before the rows it hands back. Linux maps a file's page cache a whole
folio at a time (ext4 and xfs use folios of up to 2 MB), so the first read of a batch maps the tail of the
batch before it again, after that batch was dropped: about one folio per batch stayed resident, 37 MB over
1M samples of 3 KB each. Dropping from the start of the folio that can hold the first row takes them back.
"""

from __future__ import annotations

import mmap

import numpy as np

PAGE = mmap.PAGESIZE


def _largest_folio() -> int:
    """The largest folio a file's pages may be mapped in: the huge-page size (2 MB on x86-64), at least 2 MB."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", encoding="ascii") as handle:
            size = int(handle.read().strip())
    except (OSError, ValueError):
        size = 0
    return max(size, 2 << 20)


FOLIO = _largest_folio()
_BASES: dict[int, tuple[mmap.mmap, int]] = {}


def _base_address(mm: mmap.mmap) -> int:
    cached = _BASES.get(id(mm))
    if cached is None or cached[0] is not mm:
        cached = (mm, np.frombuffer(mm, dtype=np.uint8).ctypes.data)
        _BASES.clear()  # one map at a time is the common case; never hold a closed one
        _BASES[id(mm)] = cached
    return cached[1]


def drop(rows) -> None:
    """Hand back the pages under `rows`, a contiguous slice of a memory-mapped array, and those of the folio
    before it (see above: pages the reading of `rows` mapped again); anything else (an array in memory, a
    column read another way) is left alone. Rows before `rows` read again later come back from the file."""
    mm = getattr(rows, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise") or not isinstance(rows, np.ndarray) or \
            not rows.flags.c_contiguous or rows.nbytes == 0:
        return
    try:
        start = rows.ctypes.data - _base_address(mm)
        first = max(start - FOLIO, 0)
        first -= first % PAGE
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
