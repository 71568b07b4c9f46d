"""The data, and what models gave on it, seen in another order or in part, without copying the features.

Sequential looks read the samples in one random order and may stop after the first m of them; a shard reads
one run of them. Labels and group columns are small and are reordered or cut at once; a memory-mapped feature
column is read in the new order a batch at a time. Every view keeps `sample_ids` (row -> index in the file),
so messages and flips.csv still name samples as the file has them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gate.columns import LazyColumn
from gate.data import Dataset
from gate.pages import FOLIO, drop


# Rows of a memory map read in one piece before their pages are handed back. Linux maps a file's cached pages
# a large folio (up to 2 MB) at a time, so every scattered row maps about 2 MB: one gather of a batch's
# random rows mapped the whole file (628 MB for 200k samples of 784 floats). Pieces of 32 rows hold at most
# 64 MB mapped, and a later read of the same rows maps them again from the page cache.
_GATHER = 32


class Reordered(LazyColumn):
    """A column read in another order, a batch at a time: row i is the data's row order[i]."""

    def __init__(self, column, order: np.ndarray) -> None:
        self.column, self.order = column, order
        self.shape, self.dtype = (len(order),) + tuple(column.shape[1:]), column.dtype

    def _rows(self, start: int, stop: int) -> np.ndarray:
        rows = self.order[start:stop]
        # read in file order (memory maps read forward), then put back in this order
        ahead = np.argsort(rows, kind="stable")
        wanted = rows[ahead]
        if isinstance(self.column, np.memmap) and len(wanted):
            out = np.empty((len(wanted),) + tuple(self.shape[1:]), dtype=self.dtype)
            # the folio of a piece's last row reaches past it: drop that far too (drop reaches back by itself)
            beyond = -(-FOLIO // max(1, self.column[:1].nbytes)) + 1
            for lo in range(0, len(wanted), _GATHER):
                piece = wanted[lo:lo + _GATHER]
                out[lo:lo + len(piece)] = self.column[piece]
                drop(self.column[int(piece[0]):int(piece[-1]) + 1 + beyond])
        else:
            out = np.asarray(self.column[wanted])
        back = np.empty_like(ahead)
        back[ahead] = np.arange(len(ahead))
        return out[back]


def label_and_group_keys(dataset: Dataset) -> set:
    return {dataset.labels_key, *(k for g in dataset.group_keys for k in (g if isinstance(g, tuple) else (g,)))}


def _in_memory(column) -> bool:
    return isinstance(column, np.ndarray) and not isinstance(column, np.memmap)


def _view(dataset: Dataset, rows: np.ndarray, columns: dict) -> Dataset:
    ids = dataset.sample_ids[rows] if dataset.sample_ids is not None else rows
    return replace(dataset, columns=columns, _stacked={}, _checked=set(), sample_ids=ids,
                   row_lines=dataset.row_lines[rows] if dataset.row_lines is not None else None)


def in_order(dataset: Dataset, order: np.ndarray) -> Dataset:
    """The data with its samples in `order` (the looks' random order)."""
    keys = label_and_group_keys(dataset)
    columns = {key: column[order] if key in keys or _in_memory(column) else Reordered(column, order)
               for key, column in dataset.columns.items()}
    return _view(dataset, order, columns)


def sample_range(dataset: Dataset, first: int, stop: int) -> Dataset:
    """Samples first..stop-1 of the data (a shard)."""
    rows = np.arange(first, stop)
    keys = label_and_group_keys(dataset)
    columns = {key: np.asarray(column[first:stop]) if key in keys or _in_memory(column) else Reordered(column, rows)
               for key, column in dataset.columns.items()}
    return _view(dataset, rows, columns)


def first_samples(dataset: Dataset, m: int) -> Dataset:
    """The first m samples of a view: what a pass stopped at a look has seen. Nothing is gathered here."""
    def first(column):  # a view, or the same lazy reading of fewer rows
        return Reordered(column.column, column.order[:m]) if isinstance(column, Reordered) else column[:m]

    return replace(dataset, columns={k: first(c) for k, c in dataset.columns.items()}, _stacked={}, _checked=set(),
                   sample_ids=dataset.sample_ids[:m] if dataset.sample_ids is not None else None,
                   row_lines=dataset.row_lines[:m] if dataset.row_lines is not None else None)


class First:
    """A collector (or its agreement) seen through its first m samples."""

    def __init__(self, collector, m: int) -> None:
        self._collector, self._m = collector, m

    @property
    def nonfinite(self):
        return getattr(self._collector, "nonfinite", None)

    def result(self):
        whole = self._collector.result()
        return replace(whole, **{f: getattr(whole, f)[:self._m] for f in whole.__dataclass_fields__
                                 if isinstance(getattr(whole, f), np.ndarray)})
