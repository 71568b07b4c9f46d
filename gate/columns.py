"""Columns read per batch: what a Dataset or a runner holds in place of a numpy array when holding the whole
column would copy it (a declared sample shape over rows that are not contiguous) or decode all of it (a folder of
images, gate/imagefolder.py).

What the gate asks of a column (gate/models/binding.py, gate/checks.py, gate/measure/perturb.py): len, shape, ndim,
dtype, indexing by an int (one sample), a slice (a batch) or an index array, each giving a numpy array, and min/max
(read in chunks, so a column is never held whole to find its range).
"""

from __future__ import annotations

import math

import numpy as np

CHUNK_VALUES = 1 << 22  # values per chunk when a whole column must be read (min, max): 16 MB of float32


class LazyColumn:
    """An array-like column whose rows are produced on demand by `_rows(start, stop)`."""

    shape: tuple
    dtype: np.dtype

    def _rows(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of range for {n} samples")
            return self._rows(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._rows(start, max(start, stop))
            key = np.arange(start, stop, step)
        index = np.asarray(key)
        if index.dtype == np.bool_:
            index = np.flatnonzero(index)
        out = np.empty((len(index),) + tuple(self.shape[1:]), dtype=self.dtype)
        for j, i in enumerate(index.reshape(-1)):
            out[j] = self[int(i)]
        return out

    def chunks(self):
        """(first row, rows) over the whole column, a bounded number of values at a time."""
        per_row = max(1, math.prod(self.shape[1:]))
        step = max(1, CHUNK_VALUES // per_row)
        for lo in range(0, len(self), step):
            yield lo, self._rows(lo, min(lo + step, len(self)))

    def min(self, axis=None):
        return self._extreme(np.min, axis)

    def max(self, axis=None):
        return self._extreme(np.max, axis)

    def _extreme(self, pick, axis=None):
        """Over every value, or with axis=0 over the samples (one per position of a sample), a chunk at a
        time: the perturbations' observed ranges read them so, whatever order or layout the column is in."""
        if axis not in (None, 0):
            raise ValueError(f"a lazy column's {pick.__name__} is over all values or axis 0, not axis {axis!r}")
        cache = self.__dict__.setdefault("_extremes", {})
        key = (pick.__name__, axis)
        if key not in cache:
            if not len(self):
                raise ValueError(f"zero-size column has no {pick.__name__}")
            cache[key] = pick(np.stack([pick(rows, axis=axis) for _, rows in self.chunks()]), axis=0) \
                if axis == 0 else pick([pick(rows) for _, rows in self.chunks()])
        return cache[key]

    def __array__(self, dtype=None, copy=None):
        # only for a caller that needs every value at once; the gate itself reads batches
        whole = np.concatenate([rows for _, rows in self.chunks()]) if len(self) else \
            np.empty(self.shape, dtype=self.dtype)
        return whole if dtype is None else whole.astype(dtype, copy=False)


class Reshaped(LazyColumn):
    """`base` with every sample seen in the shape `sample`: each batch is reshaped as it is read (a view of the
    batch's rows when they are contiguous), so a column whose rows are not (a Fortran-order memory map) is never
    copied whole."""

    def __init__(self, base, sample: tuple[int, ...]) -> None:
        self.base = base
        self.shape = (len(base),) + tuple(sample)
        self.dtype = base.dtype

    def _rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.base[start:stop]).reshape((stop - start,) + self.shape[1:])


def with_sample_shape(array, sample: tuple[int, ...]):
    """`array` (rows first) with samples of shape `sample` (the same number of values): a view of the whole array
    when numpy can give one without copying, else a column reshaped batch by batch."""
    if isinstance(array, np.ndarray):
        try:
            return array.reshape((len(array),) + tuple(sample), copy=False)  # refuses rather than copies
        except (ValueError, TypeError):  # TypeError: numpy before 2.1 has no copy argument
            pass
    return Reshaped(array, sample)
