"""Intervals from sufficient statistics: the same questions as the index bootstrap, without a Python loop of
metric calls (issue 12: a roc_auc rule took 50 s on 285 samples, f1_macro 4x the quality-only run on 100k).

Five methods, chosen by a metric's record (registry.MetricSpec.resample):

- CELLS (confusion-matrix metrics): the samples are summarised as the joint table of (label, base prediction,
  candidate prediction) cells. A bootstrap resample of the samples is a multinomial draw of n over those cells
  with the observed shares, so drawing the cell counts (np.random.Generator.multinomial) is exactly the index
  bootstrap in distribution; each resample's base and candidate per-class counts (true positives, support,
  predicted) are sums over cells. The cells are in content order (np.unique), so permuting the samples
  changes nothing. Cost: O(resamples x cells), cells <= k^3, instead of O(resamples x n) metric calls.
- DELONG (roc_auc): DeLong's paired variance (DeLong, DeLong & Clarke-Pearson 1988) with the midrank
  algorithm of Sun & Xu (2014): one sort per class and model. One-vs-rest macro AUC: each sample's influence
  on every class's AUC (its placement value among the other side), averaged over classes, so the covariance
  between classes and between base and candidate is in the variance. Normal intervals; the judge's
  quantile grids are the normal quantiles (no resampling, no randomness).
- MEAN (per-sample means: log_loss, brier_score, mae, kl_divergence, cosine_similarity): a Poisson bootstrap
  (Hanley & MacGibbon 2006): each resample weights every sample by an independent Poisson(1) count and
  takes the weighted mean (sum w v / sum w), computed as a block of weights times the value columns (one
  matrix product per block), in the content order of the values. Where the sample vouches that the
  bootstrap is normal to within its own Monte Carlo error (normal_limit_holds: 10,000 samples or more, and
  the Cornish-Fisher terms of every column's skewness and kurtosis under 0.05 sd), the means are drawn from
  the bootstrap's normal limit instead (method "bootstrap-normal-limit"): 0.5 s less on 100k samples.
- MOMENTS (smooth functions of several per-sample means: rmse from the mean squared error, r2 from it and
  the target's first two moments): columns of the same shared Poisson weights, the metric taken from the
  resampled means (quality.moment_columns, quality.from_moments).
- BINS (ece): Poisson weights, summed per joint (base bin, candidate bin) of the 15 confidence bins: each
  bin's weighted sum of (correct - confidence) and weighted count give both models' ECE in every resample,
  paired (poisson_sums: one pass over the weights, O(resamples x n), whatever the number of bins). A bin
  (or subgroup) whose Poisson sums are normal to within the bootstrap's Monte Carlo error is drawn from that
  normal instead (its cumulants are power sums of its rows: exact); weights only for the others' rows.

Between subgroups (the `scope: gap` of any metric, and the fairness metrics) the same statistics are kept
per subgroup: the cell table gains the subgroup as a fourth key, the Poisson sums are taken per subgroup (per
subgroup and bin for ece), and each resample's gap is the spread of its subgroup values (spread), as the
index bootstrap's per-resample loop over subgroups computed it. roc_auc's gap draws each subgroup's (base,
candidate) AUC pair from its DeLong normal (grouped_delong_draws), subgroups independent; where a subgroup has
too few samples of a class for that, the gap is drawn by index resampling.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple
from statistics import NormalDist

import numpy as np

CELLS, DELONG, MEAN, MOMENTS, BINS = "cells", "delong", "mean", "moments", "bins"

# resamples x cells (or samples) held at once: a few MB, near the caches
_BLOCK_ELEMENTS = 500_000


# --------------------------------------------------------------------------
# confusion-matrix metrics: multinomial resampling of the joint cell table
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CellCounts:
    """Per-resample per-class counts of both models: arrays (resamples, classes), or (resamples, subgroups,
    classes) when the cells were split by subgroup."""
    labels: np.ndarray  # class label of each column
    support: np.ndarray
    tp_base: np.ndarray
    predicted_base: np.ndarray
    tp_cand: np.ndarray
    predicted_cand: np.ndarray


def joint_cells(y: np.ndarray, pred_base: np.ndarray, pred_cand: np.ndarray, groups: np.ndarray | None = None):
    """(labels, cell class indices (true, base, candidate), cell counts), cells in content order; with
    `groups` (a subgroup index 0.. per sample) the subgroup is a fourth key, its index last in the tuple."""
    n = len(y)
    parts = [np.asarray(v).reshape(-1) for v in (y, pred_base, pred_cand)]
    small = all(np.issubdtype(v.dtype, np.integer) for v in parts) and n and \
        min(int(v.min()) for v in parts) >= 0 and max(int(v.max()) for v in parts) < _DIRECT_LABELS
    if small:  # class indices: labels by counting, cells by bincount (sorting 3n values cost 150 MB at 1M)
        seen = np.zeros(_DIRECT_LABELS, dtype=bool)
        for v in parts:
            seen[np.unique(v) if v.size < 64 else np.flatnonzero(np.bincount(v))] = True
        labels = np.flatnonzero(seen)
        index = np.cumsum(seen) - 1
        y_i, b_i, c_i = (index[v] for v in parts)
    else:
        labels, inverse = np.unique(np.concatenate(parts), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        y_i, b_i, c_i = inverse[:n], inverse[n:2 * n], inverse[2 * n:]
    k = len(labels)
    code = (y_i * k + b_i) * k + c_i
    if groups is not None:
        code = code + np.asarray(groups, dtype=np.int64).reshape(-1) * k ** 3
    cells, counts = np.unique(code, return_counts=True) if code.size and (groups is not None or k ** 3 > 4 * n) \
        else _counted(code, k ** 3)
    index = ((cells // (k * k)) % k, (cells // k) % k, cells % k)
    return labels, index + ((cells // k ** 3,) if groups is not None else ()), counts


_DIRECT_LABELS = 1 << 16  # non-negative integer labels below this are counted, not sorted


def _counted(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the codes present, their counts) as np.unique(return_counts=True) gives them, by one bincount."""
    counts = np.bincount(code, minlength=size)
    cells = np.flatnonzero(counts)
    return cells, counts[cells]


def _class_sums(draws: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """out[r, j] = sum of draws[r, cells whose key is j]."""
    out = np.zeros((draws.shape[0], k), dtype=np.float64)
    if keys.size == 0:
        return out
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    out[:, sorted_keys[starts]] = np.add.reduceat(draws[:, order], starts, axis=1)
    return out


def cell_bootstrap(y: np.ndarray, pred_base: np.ndarray, pred_cand: np.ndarray, *, n_resamples: int,
                   seed: int, groups: np.ndarray | None = None, n_groups: int = 1) -> CellCounts:
    """Per-class counts of both models in each of n_resamples multinomial resamples of the joint table;
    with `groups` (subgroup indices 0..n_groups-1) per subgroup and class."""
    n = len(y)
    labels, cells, counts = joint_cells(y, pred_base, pred_cand, groups)
    k, m = len(labels), len(counts)
    # per subgroup: class j of subgroup g is column g * k + j
    offset = cells[3] * k if groups is not None else 0
    cy, cb, cc = cells[0] + offset, cells[1] + offset, cells[2] + offset
    width = k * n_groups if groups is not None else k
    rng = np.random.Generator(np.random.PCG64(seed))
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(m, 1)))
    parts = {key: [] for key in ("support", "tp_base", "predicted_base", "tp_cand", "predicted_cand")}
    right_b, right_c = cy == cb, cy == cc
    # with nearly as many cells as samples, n binomials per draw cost more than n integer draws
    by_index = m * 4 > n
    sample_cell = np.repeat(np.arange(m), counts) if by_index else None
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        if by_index:
            idx = rng.integers(0, n, size=(size, n))
            flat = (sample_cell[idx] + (np.arange(size) * m)[:, None]).ravel()
            draws = np.bincount(flat, minlength=size * m).reshape(size, m).astype(np.float64)
        else:
            draws = rng.multinomial(n, counts / n, size=size).astype(np.float64)
        parts["support"].append(_class_sums(draws, cy, width))
        parts["predicted_base"].append(_class_sums(draws, cb, width))
        parts["predicted_cand"].append(_class_sums(draws, cc, width))
        parts["tp_base"].append(_class_sums(draws[:, right_b], cy[right_b], width))
        parts["tp_cand"].append(_class_sums(draws[:, right_c], cy[right_c], width))
    shape = (n_resamples, n_groups, k) if groups is not None else (n_resamples, k)
    return CellCounts(labels=labels, **{key: np.concatenate(v).reshape(shape) for key, v in parts.items()})


def observed_counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, tp, support, predicted) of one model over all samples, each (1, classes)."""
    labels, (cy, cb, _), counts = joint_cells(y, pred, pred)
    k, w = len(labels), counts[None, :].astype(np.float64)
    right = cy == cb
    return labels, _class_sums(w[:, right], cy[right], k), _class_sums(w, cy, k), _class_sums(w, cb, k)


def from_counts(name: str, tp: np.ndarray, support: np.ndarray, predicted: np.ndarray, labels: np.ndarray,
                classes: np.ndarray | None = None) -> np.ndarray:
    """A confusion-matrix metric of every row of per-class counts (classes on the last axis; rows =
    resamples, or resamples x subgroups), with quality.py's conventions: a class counts when it is in
    y_true or y_pred, 0/0 is 0; inside a slice the class averages are over the slice's true classes
    (`classes`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        if name == "balanced_accuracy":
            has = support > 0
            return (recall * has).sum(axis=-1) / has.sum(axis=-1)
        if name == "f1_weighted":
            total = support.sum(axis=-1)
            return np.where(total > 0, (f1 * support).sum(axis=-1) / np.where(total > 0, total, 1), np.nan)
        part = {"precision_macro": precision, "recall_macro": recall, "f1_macro": f1}[name]
        counted = (support + predicted) > 0
        if classes is not None:
            counted = counted & np.isin(labels, classes)
        size = counted.sum(axis=-1)
        return np.where(size > 0, (part * counted).sum(axis=-1) / np.where(size > 0, size, 1), np.nan)


_CELL_CACHE: list = []


def shared_cell_bootstrap(y, pred_base, pred_cand, *, n_resamples: int, seed: int) -> CellCounts:
    """cell_bootstrap, drawn once per (labels, base, candidate) arrays and seed: every confusion-matrix metric
    of a candidate (f1_macro, balanced_accuracy, ...) reads the same resamples, as the per-sample means share
    their weights (the cost is in drawing them). Keyed by the arrays' identity (references held, so an id
    cannot be reused while cached); the last one only."""
    for (key_y, key_b, key_c, size, key_seed), value in _CELL_CACHE:
        if key_y is y and key_b is pred_base and key_c is pred_cand and size == n_resamples and key_seed == seed:
            return value
    value = cell_bootstrap(y, pred_base, pred_cand, n_resamples=n_resamples, seed=seed)
    _CELL_CACHE[:] = [((y, pred_base, pred_cand, n_resamples, seed), value)]
    return value


def cell_distributions(name: str, y, pred_base, pred_cand, *, n_resamples: int, seed: int,
                       classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, base) bootstrap distributions of a confusion-matrix metric, from the same resamples (shared
    with the candidate's other confusion-matrix metrics of the same seed)."""
    c = shared_cell_bootstrap(y, pred_base, pred_cand, n_resamples=n_resamples, seed=seed)
    cand = from_counts(name, c.tp_cand, c.support, c.predicted_cand, c.labels, classes)
    base = from_counts(name, c.tp_base, c.support, c.predicted_base, c.labels, classes)
    return cand, base


# --------------------------------------------------------------------------
# per-sample means: Poisson bootstrap, weights @ values in blocks
# --------------------------------------------------------------------------

def _poisson_thresholds() -> np.ndarray:
    """w = #(thresholds <= u) for u uniform on 0..65535 is Poisson(1) to 1/65536 per value."""
    cdf, term, edges = 0.0, math.exp(-1.0), []
    for k in range(12):
        cdf += term
        term /= k + 1
        edge = round(cdf * 65536)
        if edge >= 65536:
            break
        edges.append(edge)
    return np.array(edges, dtype=np.uint16)


_POISSON_EDGES = _poisson_thresholds()


def poisson_weights(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """(size, n) float32 Poisson(1) weights."""
    # raw generator output viewed as 16-bit uniforms: twice as fast as Generator.integers (native byte order)
    u = rng.bit_generator.random_raw(-(-size * n // 4)).view(np.uint16)[:size * n].reshape(size, n)
    w = (u >= _POISSON_EDGES[0]).view(np.uint8)
    for edge in _POISSON_EDGES[1:]:
        w += (u >= edge).view(np.uint8)
    return w.astype(np.float32)


def mean_bootstrap(columns: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, columns) Poisson-bootstrap means of each column of an (n, c) array, in the given row
    order (the caller puts the rows in content order). A resample whose weights are all 0 (only likely
    for a handful of samples) is NaN."""
    columns = np.asarray(columns, dtype=np.float64)
    if columns.ndim == 1:
        columns = columns[:, None]
    n = columns.shape[0]
    centre = columns.mean(axis=0)
    centred = (columns - centre).astype(np.float32)  # float32 products, centred: errors ~1e-7 of the spread
    rng = np.random.Generator(np.random.PCG64(seed))
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(n, 1)))
    out = np.empty((n_resamples, columns.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        w = poisson_weights(rng, size, n)
        total = w.sum(axis=1, dtype=np.float64)
        sums = (w @ centred).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + size] = np.where(total[:, None] > 0, centre + sums / total[:, None], np.nan)
    return out


class MeanDraws(NamedTuple):
    """A candidate's resampled per-sample mean, the base's from the same resamples (or None), and how they
    were drawn (the interval's method)."""
    cand: np.ndarray
    base: np.ndarray | None
    method: str


POISSON, NORMAL_LIMIT = "bootstrap", "bootstrap-normal-limit"

# The normal limit of the Poisson bootstrap of means. The bootstrap distribution of the column means has the
# columns' plug-in covariance / n and, per column, the skewness g / sqrt(n) and excess kurtosis k / n of the
# sample (g, k: the sample's own). Its quantiles differ from the normal limit's by the Cornish-Fisher terms
# of those two cumulants; where that difference is below NORMAL_TOLERANCE standard deviations at |z| = 3
# (two-sided 99.7%), it is under the Monte Carlo error of the bootstrap's own percentiles (1,000 resamples:
# about 0.085 sd at a 2.5% end), so drawing the means from the normal limit gives the same intervals as the
# bootstrap up to noise, at O(n x columns^2) instead of O(resamples x n). tests/test_normal_limit.py
# checks both by simulation. Below NORMAL_FROM samples the sample's cumulants are too noisy to vouch for it,
# and the bootstrap is cheap there anyway.
NORMAL_FROM = 10_000
NORMAL_TOLERANCE = 0.05
_CHECK_Z = 3.0


def cornish_fisher_gap(columns: np.ndarray, z: float = _CHECK_Z) -> np.ndarray:
    """Per column of an (n, c) array: how far (in standard deviations) the z-quantile of the bootstrap
    distribution of its mean lies from the normal limit's, to the Cornish-Fisher terms of order 1/n.
    A constant column is exactly normal (0). The deviations are scaled to a range of 1 first (skewness and
    kurtosis do not change): squares of values near 1e-170 or 1e170 would underflow or overflow."""
    n = columns.shape[0]
    deviations = columns - columns.mean(axis=0)
    top = np.max(np.abs(deviations), axis=0)
    top = np.where(top > 0, top, 1.0)
    centred = deviations / top
    with np.errstate(all="ignore"):
        m2 = np.einsum("ij,ij->j", centred, centred) / n
        squared = centred * centred
        m3 = np.einsum("ij,ij->j", squared, centred) / n
        m4 = np.einsum("ij,ij->j", squared, squared) / n
        # a variance below this is rounding of the values themselves (a constant column, centred)
        spread = m2 > (1e-12 * np.max(np.abs(columns), axis=0) / top) ** 2
        safe = np.where(spread, m2, 1.0)
        g = np.where(spread, m3 / safe ** 1.5, 0.0) / math.sqrt(n)  # skewness of the mean
        k = np.where(spread, m4 / safe ** 2 - 3.0, 0.0) / n  # its excess kurtosis
        gap = (np.abs(g) * (z * z - 1.0) / 6.0 + np.abs(k) * abs(z ** 3 - 3.0 * z) / 24.0
               + g * g * abs(2.0 * z ** 3 - 5.0 * z) / 36.0)
    return np.where(np.isfinite(gap), gap, np.inf)


def normal_limit_holds(columns: np.ndarray, pairs: list[tuple] = ()) -> bool:
    """Whether the normal limit may stand in for the Poisson bootstrap of these columns' means: enough
    samples, and every column, and every pair's sum (a candidate is the base's column plus the difference's),
    within NORMAL_TOLERANCE of it (cornish_fisher_gap)."""
    n = columns.shape[0]
    if n < NORMAL_FROM or not np.all(np.isfinite(columns)):
        return False
    # a column at a time: the check's temporaries stay a few vectors long (at 1M x 6 they were 300 MB)
    checked = (columns[:, [j]] for j in range(columns.shape[1]))
    sums = ((columns[:, first] + columns[:, second]).reshape(n, -1) for first, second in pairs)
    return all(np.all(cornish_fisher_gap(x) <= NORMAL_TOLERANCE) for x in (*checked, *sums))


def normal_limit(columns: np.ndarray, *, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, columns) draws of the column means from the Poisson bootstrap's normal limit:
    N(mean, plug-in covariance / n). The covariance is factored by eigenvalues (a difference column of an
    identical copy is all zeros: the covariance is singular), negative rounding clipped to 0."""
    columns = np.asarray(columns, dtype=np.float64)
    n = columns.shape[0]
    centre = columns.mean(axis=0)
    root = _root_of_products(columns, centre) / n
    rng = np.random.Generator(np.random.PCG64(seed))
    return centre + rng.standard_normal((n_resamples, columns.shape[1])) @ root.T


_SHARED_CACHE: list = []


def shared_mean_distributions(key: tuple, columns: dict[str, tuple[np.ndarray, np.ndarray | None]], *,
                              n_resamples: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Every per-sample mean of one candidate from ONE matrix of weights: name -> (candidate, base or None).

    columns: name -> (candidate values, base values or None), each (n,) or (n, c): a 2-D block gives
    (resamples, c) means (the several means of a MOMENTS metric). The dict is emptied as it is read. The weights are drawn once (the cost is in
    drawing them, not in the extra columns of the product) in the content order of all the columns
    together, so a metric's interval depends on the data and the seed, never on which rules exist.
    key: the objects the columns come from; the result is kept for the next metric of the same key
    (references held, so an id cannot be reused while cached)."""
    for cached_key, cached in _SHARED_CACHE:
        if len(cached_key) == len(key) and all(a is b for a, b in zip(cached_key, key)):
            return cached
    names = sorted(columns)
    slots, width, n = {}, 0, None
    for name in names:  # the place of every column first, then one array filled in place (no stacked copies)
        cand, base = columns[name]
        n = len(cand)
        c = int(np.prod(np.shape(cand)[1:], dtype=np.int64))
        flat = np.ndim(cand) == 1
        first = slice(width, width + c) if not flat else width
        second = None if base is None else (slice(width + c, width + 2 * c) if not flat else width + 1)
        slots[name] = (first, second)
        width += c if base is None else 2 * c
    values = np.empty((n or 0, width), dtype=np.float64)
    for name, (first, second) in slots.items():
        cand, base = columns.pop(name)  # (consumed: at 1M samples each held column is 8 MB)
        cand = np.asarray(cand, dtype=np.float64).reshape(n, -1)
        if isinstance(first, int):  # a per-sample vector: one column
            cand = cand[:, 0]
        if second is None:
            values[:, first] = cand
        else:
            base = np.asarray(base, dtype=np.float64).reshape(cand.shape)
            values[:, first] = base
            values[:, second] = cand - base  # the difference as its own column: no cancellation error
        del cand, base
    order = row_order(values)
    for j in range(width):  # into content order a column at a time: no second full copy
        values[:, j] = values[order, j]
    del order
    if normal_limit_holds(values, [(first, second) for first, second in slots.values() if second is not None]):
        means, method = normal_limit(values, n_resamples=n_resamples, seed=seed), NORMAL_LIMIT
    else:
        means, method = mean_bootstrap(values, n_resamples=n_resamples, seed=seed), POISSON
    out = {}
    for name, (first, second) in slots.items():
        out[name] = MeanDraws(means[:, first], None, method) if second is None else \
            MeanDraws(means[:, first] + means[:, second], means[:, first], method)
    _SHARED_CACHE[:] = [(key, out)]
    return out


_PROJECTION = np.random.Generator(np.random.PCG64(20261129)).standard_normal(64)


def row_order(values: np.ndarray) -> np.ndarray:
    """An order of the rows of an (n, c) array that depends on their values only: by a fixed random projection
    of each row (columns scaled to one range), one argsort instead of a lexsort over every column (60 ms on
    100k x 6). Rows that tie on it must be equal, hence interchangeable for a mean; where distinct rows tie
    (rounding can make them), the lexsort decides.
    A single column sorts stably: NaN rows keep their relative order, and are equal anyway."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 or values.shape[1] == 1:
        return np.argsort(values.reshape(len(values)), kind="stable")
    if not np.all(np.isfinite(values)):  # NaN would tie rows that differ elsewhere: every column as a key
        return np.lexsort(values.T[::-1])
    weights = _PROJECTION[:values.shape[1]] if values.shape[1] <= _PROJECTION.size else \
        np.random.Generator(np.random.PCG64(20261129)).standard_normal(values.shape[1])
    scale = np.max(np.abs(values), axis=0)  # every column on one scale: a tiny one is not lost in rounding
    scale = np.where(scale > 0, scale, 1.0)
    projected = np.zeros(len(values))
    for j in range(values.shape[1]):  # a column at a time: no scaled copy of the whole array
        projected += values[:, j] * (weights[j] / scale[j])
    order = np.argsort(projected)
    tied = np.flatnonzero(projected[order[1:]] == projected[order[:-1]])
    if tied.size and np.any(values[order[tied]] != values[order[tied + 1]]):
        return np.lexsort(values.T[::-1])  # distinct rows on one projection: the order would be the file's
    return order


def content_order(*vectors: np.ndarray) -> np.ndarray:
    """The rows sorted by their values (lexicographically): ties are interchangeable for a mean of them."""
    return np.lexsort([np.asarray(v).reshape(len(v)) for v in vectors[::-1]])


def paired_mean_distributions(base_values: np.ndarray, cand_values: np.ndarray, *, n_resamples: int,
                              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, base) bootstrap distributions of two paired per-sample means, from the same weights.
    The difference is resampled as its own column, so the delta has no cancellation error."""
    b, c = np.asarray(base_values, dtype=np.float64), np.asarray(cand_values, dtype=np.float64)
    order = content_order(b, c)
    b, c = b[order], c[order]
    means = mean_bootstrap(np.stack([b, c - b], axis=1), n_resamples=n_resamples, seed=seed)
    return means[:, 0] + means[:, 1], means[:, 0]


# --------------------------------------------------------------------------
# sums per code (ece's bins, subgroups): Poisson weights, one reduceat per column
# --------------------------------------------------------------------------

def poisson_sums(columns: np.ndarray, codes: np.ndarray, *, n_resamples: int, seed: int,
                 pairs: tuple = ()) -> CodeSums:
    """Poisson-bootstrap sums of each column per code, and of the weights per code: (the codes present,
    sums (resamples, codes present, columns), totals (resamples, codes present)).

    The rows are put in (code, content) order, so permuting the samples changes nothing and each code's
    rows are contiguous. Codes are independent under Poisson weights. A code whose sums are normal to within
    the bootstrap's own Monte Carlo error (sums_normal: the Poisson sums' cumulants are the power sums of its
    rows, so this is exact, not estimated) is drawn from that normal: its sums' mean and covariance. The
    other codes' rows get weights (_weighted_sums), whatever the number of codes. pairs: (base, candidate)
    columns whose difference the caller judges (checked for normality too)."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    n = codes.size
    values = np.asarray(columns, dtype=np.float64).reshape(n, -1)
    order = np.lexsort([*values.T[::-1], codes])
    codes = codes[order]
    values = np.concatenate([np.ones((n, 1)), values[order]], axis=1)  # the first column sums the weights
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], n]
    pairs = tuple((b + 1, c + 1) for b, c in pairs)  # in `values` the first column is the weights' count
    normal = np.array([sums_normal(values[a:b], pairs) for a, b in zip(starts, ends)], dtype=bool)
    rng = np.random.Generator(np.random.PCG64(seed))
    out = np.empty((n_resamples, starts.size, values.shape[1]), dtype=np.float64)
    if not normal.all():  # (with no normal code, exactly the weights of every row, as before)
        lengths = (ends - starts)[~normal]
        rows = np.repeat(starts[~normal] - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        out[:, ~normal] = _weighted_sums(values[rows], np.r_[0, np.cumsum(lengths)[:-1]], rng, n_resamples)
    for i in np.flatnonzero(normal):
        out[:, i] = _normal_sums(values[starts[i]:ends[i]], rng, n_resamples)
    method = NORMAL_LIMIT if normal.all() else POISSON if not normal.any() else PARTLY_NORMAL
    return CodeSums(codes[starts], out[:, :, 1:], out[:, :, 0], method)


class CodeSums(NamedTuple):
    """poisson_sums: the codes present, sums (resamples, codes, columns), totals (resamples, codes), and how
    they were drawn (an interval method)."""
    codes: np.ndarray
    sums: np.ndarray
    totals: np.ndarray
    method: str


PARTLY_NORMAL = "bootstrap-partly-normal-limit"  # some codes drawn from their normal, the others weighted


def _normal_sums(block: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """(resamples, columns) draws of one code's Poisson sums (column 0 all ones: the total weight W) from their
    normal, as S_j = mean_j W + T_j, T_j = sum w (x_j - mean_j). W and the T are uncorrelated (the centred
    values sum to 0), and the T are factored from their own (centred) covariance: with a large common offset
    the raw second moments would bury the spread in rounding."""
    n = block.shape[0]
    mean = block[:, 1:].mean(axis=0)
    centred = block[:, 1:] - mean
    z = rng.standard_normal((n_resamples, block.shape[1]))
    total = n + math.sqrt(n) * z[:, 0]
    return np.concatenate([total[:, None], mean * total[:, None] + z[:, 1:] @ _root_of_products(centred).T],
                          axis=1)


# below this many rows a code's sums stay on weights (a cheap part anyway)
SUMS_NORMAL_FROM = 1_000


def sums_normal(rows: np.ndarray, pairs: tuple = (), z: float = _CHECK_Z) -> bool:
    """Whether the Poisson-bootstrap sums of these rows' columns (sum of w_i x_i, w_i Poisson(1)) are normal
    to within NORMAL_TOLERANCE sd at |z|: their r-th cumulant is the power sum of x^r, so skewness and
    kurtosis are sum x^3 / (sum x^2)^1.5 and sum x^4 / (sum x^2)^2, and the Cornish-Fisher terms follow.
    What the callers take from the sums is a ratio (a mean: sum w x / sum w), whose error is the Poisson sum
    of the centred values x - mean: those are checked too, or a large offset would hide a skewed spread
    (every raw column of 1000 + rare spikes looks normal; its mean does not). pairs: (base, candidate)
    column indices whose difference is judged (a gap's delta): the difference is checked as well, or a
    candidate that is the base plus a few large errors would pass as two normal columns."""
    if rows.shape[0] < SUMS_NORMAL_FROM or not np.all(np.isfinite(rows)):
        return False
    if pairs:
        rows = np.concatenate([rows, np.stack([rows[:, c] - rows[:, b] for b, c in pairs], axis=1)], axis=1)
    return bool(np.all(_power_sum_gap(rows, z) <= NORMAL_TOLERANCE) and
                np.all(_power_sum_gap(rows - rows.mean(axis=0), z, scale=np.max(np.abs(rows), axis=0))
                       <= NORMAL_TOLERANCE))


def _power_sum_gap(x: np.ndarray, z: float, scale: np.ndarray | None = None) -> np.ndarray:
    """Per column: the Cornish-Fisher distance (sd) between sum w_i x_i (w_i Poisson(1)) and its normal.
    A column whose squares are rounding next to `scale` (a constant column, centred) is exactly normal.
    Columns are scaled to a range of 1 first (the standardized cumulants do not change; squares of tiny or
    huge values would underflow or overflow); a gap that is not a number is no normal."""
    top = np.max(np.abs(x), axis=0)
    top = np.where(top > 0, top, 1.0)
    x = x / top
    with np.errstate(all="ignore"):
        squared = x * x
        p2 = squared.sum(axis=0)
        p3 = (squared * x).sum(axis=0)
        p4 = (squared * squared).sum(axis=0)
        floor = 0.0 if scale is None else x.shape[0] * (1e-12 * scale / top) ** 2
        spread = p2 > floor
        safe = np.where(spread, p2, 1.0)
        g = np.where(spread, p3 / safe ** 1.5, 0.0)
        k = np.where(spread, p4 / safe ** 2, 0.0)
        gap = (np.abs(g) * (z * z - 1.0) / 6.0 + k * abs(z ** 3 - 3.0 * z) / 24.0
               + g * g * abs(2.0 * z ** 3 - 5.0 * z) / 36.0)
    return np.where(np.isfinite(gap), gap, np.inf)


_ROWS_AT_ONCE = 65_536


def _root_of_products(x: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """A square root of (x - centre)^T (x - centre), formed from columns scaled to a range of 1 and scaled back
    after factoring (the products themselves underflow for values near 1e-170 and overflow near 1e170), summed
    over blocks of rows (no full-size temporaries; the same blocks every time, so the same bits)."""
    centre = np.zeros(x.shape[1]) if centre is None else centre
    top = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], _ROWS_AT_ONCE):
        top = np.maximum(top, np.max(np.abs(x[start:start + _ROWS_AT_ONCE] - centre), axis=0, initial=0.0))
    top = np.where(top > 0, top, 1.0)
    products = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, x.shape[0], _ROWS_AT_ONCE):
        scaled = (x[start:start + _ROWS_AT_ONCE] - centre) / top
        products += scaled.T @ scaled
    return _root(products) * top[:, None]


def _root(cov: np.ndarray) -> np.ndarray:
    """A square root R of a covariance matrix (R R^T = cov), factored as a correlation matrix and scaled back:
    eigenvalues of the unscaled matrix carry rounding of about eps x its largest variance, which swamps the
    variance of a small column (mae's paired difference beside squared errors of targets near 1e5). Zero
    variances stay zero; negative rounding is clipped to 0, so singular is fine."""
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    scale = np.where(sd > 0, sd, 1.0)
    corr = cov / np.outer(scale, scale)
    corr[sd == 0, :] = 0.0
    corr[:, sd == 0] = 0.0
    eigenvalues, vectors = np.linalg.eigh(corr)
    return (vectors * np.sqrt(np.maximum(eigenvalues, 0.0))) * scale[:, None]


def _weighted_sums(values: np.ndarray, starts: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """(resamples, runs, columns): Poisson-weighted sums of each run of rows (runs begin at `starts`), a block
    of weights at a time: one matrix product per run (few, long runs) or one reduceat per column (many short
    ones), in float64 (the weights are small integers: no cancellation to guard against)."""
    n = values.shape[0]
    ends = np.r_[starts[1:], n]
    block = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(n, 1)))
    # a product per run and block costs ~3 us of calls, reduceat ~2.5 ns per weight and column (measured
    # on 2 cores): products unless there are many runs per row of weights
    long_runs = -(-n_resamples // block) * starts.size * 1200 < n_resamples * n * values.shape[1]
    out = np.empty((n_resamples, starts.size, values.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        w = poisson_weights(rng, size, n)
        if long_runs:
            w = w.astype(np.float64)
            out[start:start + size] = np.stack([w[:, a:b] @ values[a:b] for a, b in zip(starts, ends)], axis=1)
        else:
            product = np.empty(w.shape, dtype=np.float64)
            out[start:start + size, :, 0] = np.add.reduceat(w, starts, axis=1, dtype=np.float64)
            for j in range(1, values.shape[1]):
                out[start:start + size, :, j] = np.add.reduceat(np.multiply(w, values[:, j], out=product), starts,
                                                                axis=1)
    return out


def grouped_means(columns: np.ndarray, groups: np.ndarray, n_groups: int, *, n_resamples: int,
                  seed: int, pairs: tuple = ()) -> tuple[np.ndarray, str]:
    """((resamples, subgroups, columns) Poisson-bootstrap means of each column within each subgroup, method);
    NaN where a subgroup has no weight in a resample (it is absent from that resample)."""
    present, sums, totals, method = poisson_sums(columns, groups, n_resamples=n_resamples, seed=seed, pairs=pairs)
    means = np.full((n_resamples, n_groups, sums.shape[2]), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        means[:, present] = sums / totals[:, :, None]
    return means, method


def ece_columns(y: np.ndarray, base_pred: np.ndarray, base_conf: np.ndarray, cand_pred: np.ndarray,
                cand_conf: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(columns, codes) of ece for poisson_sums: both models' (correct - confidence) per sample, and the code
    (subgroup x 15 + base bin) x 15 + candidate bin. ECE = sum over bins |sum of (correct - confidence) in
    the bin| / samples, so the weighted sums and counts per code are all a resample needs."""
    from gate.measure.quality import ECE_BINS, ece_bin

    m = len(ECE_BINS) - 1
    y = np.asarray(y).reshape(-1)
    base_conf, cand_conf = np.asarray(base_conf).reshape(-1), np.asarray(cand_conf).reshape(-1)
    gaps = np.stack([(np.asarray(base_pred).reshape(-1) == y) - base_conf.astype(np.float64),
                     (np.asarray(cand_pred).reshape(-1) == y) - cand_conf.astype(np.float64)], axis=1)
    group = np.zeros(y.size, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
    # binned as quality.ece bins them (the confidences in their own dtype)
    return gaps, (group * m + ece_bin(base_conf)) * m + ece_bin(cand_conf)


def ece_from_sums(codes: np.ndarray, sums: np.ndarray, totals: np.ndarray,
                  n_groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, base) ece per resample and subgroup, (resamples, subgroups), from poisson_sums of
    ece_columns (or any weights summed per code); NaN: a subgroup without weight."""
    from gate.measure.quality import ECE_BINS

    m = len(ECE_BINS) - 1
    in_group = codes // (m * m)
    size = _class_sums(totals, in_group, n_groups)
    out = []
    for column, bins in ((1, codes % m), (0, (codes // m) % m)):  # candidate, base
        per_bin = _class_sums(sums[:, :, column], in_group * m + bins, n_groups * m)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.abs(per_bin.reshape(len(sums), n_groups, m)).sum(axis=2) / size)
    return out[0], out[1]


def ece_distributions(y: np.ndarray, base_pred: np.ndarray, base_conf: np.ndarray, cand_pred: np.ndarray,
                      cand_conf: np.ndarray, *, n_resamples: int, seed: int, groups: np.ndarray | None = None,
                      n_groups: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """(candidate, base, method): Poisson-bootstrap distributions of ece from the same weights, (resamples,),
    or (resamples, subgroups) with `groups` (NaN: a subgroup without weight in that resample)."""
    columns, codes = ece_columns(y, base_pred, base_conf, cand_pred, cand_conf, groups)
    drawn = poisson_sums(columns, codes, n_resamples=n_resamples, seed=seed, pairs=((0, 1),))
    cand, base = ece_from_sums(drawn.codes, drawn.sums, drawn.totals, n_groups)
    return (cand[:, 0], base[:, 0], drawn.method) if groups is None else (cand, base, drawn.method)


def spread(values: np.ndarray) -> np.ndarray:
    """Largest minus smallest finite value along the last axis (NaN with fewer than two): a resample's gap
    between subgroups, as the index bootstrap took it over the subgroups present in that resample."""
    finite = np.isfinite(values)
    high = np.where(finite, values, -np.inf).max(axis=-1)
    low = np.where(finite, values, np.inf).min(axis=-1)
    return np.where(finite.sum(axis=-1) >= 2, high - low, np.nan)


# --------------------------------------------------------------------------
# roc_auc: DeLong with midranks
# --------------------------------------------------------------------------

def _placements(score: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray]:
    """(AUC, per-sample influence) of one score against a positive mask, one sort (Sun & Xu 2014).

    A positive's placement is the share of negatives below it (ties count half), a negative's the share of
    positives above it; AUC is the mean placement of either side. The influence of a sample on the AUC is
    (placement - AUC) / (size of its side): their sum is the first-order (Hoeffding) part of AUC - E AUC."""
    n = score.size
    m_pos = int(positive.sum())
    m_neg = n - m_pos
    # any order within a tie group gives the same placements (they are per group): the unstable sort is
    # several times faster than the stable one (SIMD sorting networks for floats)
    order = np.argsort(score)
    s = score[order]
    pos_sorted = positive[order]
    group_start = np.empty(n, dtype=bool)
    group_start[0] = True
    np.not_equal(s[1:], s[:-1], out=group_start[1:])
    del s  # (the arrays here are freed as soon as they are used: at 1M samples each is 8 MB, two threads)
    starts = np.flatnonzero(group_start)
    tied = starts.size < n
    # without ties every sample is its own group: the per-group sums are the samples themselves
    pos_in = np.add.reduceat(pos_sorted.astype(np.int64), starts) if tied else pos_sorted.astype(np.int64)
    neg_in = np.diff(np.r_[starts, n]) - pos_in if tied else 1 - pos_in
    del starts
    # per tie group: (negatives below + half the tied ones) / m_neg, and (positives above + half) / m_pos
    v_pos = (np.cumsum(neg_in) - neg_in).astype(np.float64)
    v_pos += 0.5 * neg_in
    v_pos /= m_neg
    v_neg = (m_pos - (np.cumsum(pos_in) - pos_in)).astype(np.float64)
    v_neg -= 0.5 * pos_in
    v_neg /= m_pos
    auc = float((v_pos * pos_in).sum() / m_pos)
    del pos_in, neg_in
    if tied:
        group = np.cumsum(group_start) - 1
        v_pos, v_neg = v_pos[group], v_neg[group]
        del group
    v_pos -= auc
    v_pos /= m_pos
    v_neg -= auc
    v_neg /= m_neg
    v_neg[pos_sorted] = v_pos[pos_sorted]  # each sample's influence, in score order
    del v_pos
    influence = np.empty(n, dtype=np.float64)
    influence[order] = v_neg
    return auc, influence


def auc_components(y: np.ndarray, probs: np.ndarray) -> tuple[float, np.ndarray | None]:
    """(AUC as quality.roc_auc defines it, per-sample influence on it or None when it is undefined).

    Binary (2 columns): the second column against label 1. More classes: the unweighted mean over classes
    of one-vs-rest AUCs of the renormalised probabilities; undefined when a class has no sample."""
    y = np.asarray(y).reshape(-1)
    probs = np.asarray(probs)
    k = probs.shape[1]
    present = np.unique(y)
    if len(present) < 2:
        return math.nan, None
    if k == 2:
        return _placements(probs[:, 1].astype(np.float64), y == present[-1] if present[-1] != 1 else y == 1)
    if len(present) < k:
        return math.nan, None
    # renormalised (float32 rows are a hair off 1), one class at a time: no float64 copy of every score, which
    # at 1M samples x 10 classes was 160 MB beside the scores themselves
    total = probs.astype(np.float64).sum(axis=1) if probs.size <= _RENORMALISE_AT_ONCE else \
        sum(probs[:, j].astype(np.float64) for j in range(k))
    one = lambda j: _placements(probs[:, j].astype(np.float64) / total, y == j)  # noqa: E731
    # numpy sorts and gathers without the GIL: the classes on two threads (summed in class order: same bits)
    placed = list(_threads().map(one, range(k))) if len(y) * k >= _THREADED_FROM else [one(j) for j in range(k)]
    aucs, influence = [auc for auc, _ in placed], np.zeros(len(y), dtype=np.float64)
    for _, inf in placed:
        influence += inf
    return float(np.mean(aucs)), influence / k


def clear_caches() -> None:
    """Forget every result kept across metrics of one run (the base's AUC components, the shared means, the
    shared cell draws): a benchmark's next round is then a fresh run."""
    for cache in (_BASE_CACHE, _SHARED_CACHE, _CELL_CACHE):
        cache.clear()


_THREADED_FROM = 200_000  # samples x classes: below this a thread costs more than it saves
_RENORMALISE_AT_ONCE = 2_000_000  # scores: above this the row sums are taken a class at a time
_POOL: list = []


def _threads():
    """Two worker threads, made once per process (DeLong's per-class sorts: 0.09 s -> 0.05 s per model on
    100k x 10). A fork copies the pool but not its threads: the child makes its own (_POOL cleared at fork)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="gate-sort"))
    return _POOL[0]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.clear)


def influence_covariance(y: np.ndarray, a: np.ndarray, b: np.ndarray, cls: np.ndarray | None = None) -> float:
    """Covariance of two statistics from their per-sample influences: within each true class the DeLong
    (m / (m - 1)) form, plus the spread between classes (class shares vary between data sets; for a binary
    AUC that part is zero and this is DeLong's covariance exactly). cls: y as indices 0..classes-1."""
    if cls is None:
        cls = np.unique(y, return_inverse=True)[1].reshape(-1)
    m = np.bincount(cls).astype(np.float64)
    mean_a = np.bincount(cls, weights=a) / m
    mean_b = np.bincount(cls, weights=b) / m
    within = np.bincount(cls, weights=(a - mean_a[cls]) * (b - mean_b[cls]))
    factor = np.where(m > 1, m / np.maximum(m - 1, 1), 0.0)
    n = float(len(y))
    between = (m * mean_a * mean_b).sum() * (n / (n - 1) if n > 1 else 0.0)
    return float((within * factor).sum() + between)


@dataclass(frozen=True)
class DeLong:
    base: float
    cand: float
    var_base: float
    var_cand: float
    cov: float

    @property
    def var_delta(self) -> float:
        return max(self.var_base + self.var_cand - 2.0 * self.cov, 0.0)


# the base's components, computed once for all candidates (identity of the arrays; references kept, so an
# id cannot be reused while cached)
_BASE_CACHE: list = []


def _base_components(y: np.ndarray, probs: np.ndarray) -> tuple[float, np.ndarray | None]:
    """auc_components, remembered for the last few (y, probs) arrays: the base's, asked by every candidate's
    roc_auc and by the base's own value, is computed once."""
    for i, (key_y, key_p, value) in enumerate(_BASE_CACHE):
        if key_y is y and key_p is probs:
            _BASE_CACHE.insert(0, _BASE_CACHE.pop(i))
            return value
    value = auc_components(y, probs)
    _BASE_CACHE[:] = [(y, probs, value)] + _BASE_CACHE[:2]
    return value


def cached_auc(y: np.ndarray, probs: np.ndarray) -> float:
    return _base_components(y, probs)[0]


def delong(y: np.ndarray, probs_base: np.ndarray, probs_cand: np.ndarray) -> DeLong | None:
    """Paired DeLong estimate of both AUCs and their covariance; None when the AUC is undefined."""
    auc_b, inf_b = _base_components(y, probs_base)
    auc_c, inf_c = auc_components(y, probs_cand)
    if inf_b is None or inf_c is None:
        return None
    # the sums in content order: a permutation of the samples gives the same bits
    order = row_order(np.stack([np.asarray(y, dtype=np.float64).reshape(-1), inf_b, inf_c], axis=1))
    y, inf_b, inf_c = np.asarray(y).reshape(-1)[order], inf_b[order], inf_c[order]
    cls = np.unique(y, return_inverse=True)[1].reshape(-1)
    return DeLong(base=auc_b, cand=auc_c, var_base=influence_covariance(y, inf_b, inf_b, cls),
                  var_cand=influence_covariance(y, inf_c, inf_c, cls), cov=influence_covariance(y, inf_b, inf_c, cls))


# A subgroup's AUC is drawn from DeLong's normal approximation only with at least this many samples of every
# class in it (both sides of every one-vs-rest AUC); with fewer, the gap's interval is drawn by index resampling.
DELONG_MIN_PER_CLASS = 20
DELONG_DRAWS = "delong-normal-draws"
# The paired difference of a subgroup's influences must be normal to within the index bootstrap's own Monte
# Carlo error at the levels a gap is judged at (up to 99%: 0.085 sd at a 2.5% end, 0.15 sd at a 0.5% end, from
# 1,000 resamples). Gaps are not judged in sequential looks, so the stricter |z| = 3 of the means is not needed;
# at it, well-behaved subgroups of a few hundred samples (skewness ~1) would all go back to index resampling.
_GAP_Z, _GAP_TOLERANCE = 2.576, 0.1


def grouped_delong_draws(y: np.ndarray, probs_base: np.ndarray, probs_cand: np.ndarray, codes: np.ndarray,
                         groups: list[int], *, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(candidate, base) draws, (resamples, len(groups)), of each subgroup's AUC: for the `scope: gap` of
    roc_auc, whose max - min has no DeLong interval of its own. Subgroups are disjoint sets of samples, so
    their estimates are independent; within one, base and candidate are paired (DeLong's covariance). Each
    subgroup's pair is drawn from that bivariate normal on the logit scale (delta method; an AUC near 1 is
    skewed on its own scale), and a resample's gap is the spread of its draws, as the index bootstrap took it
    over the subgroups' AUCs. None when a subgroup has fewer than DELONG_MIN_PER_CLASS samples of some class,
    or an AUC of exactly 0 or 1 (or an undefined one): the normal approximation is not vouched for there."""
    y = np.asarray(y).reshape(-1)
    k = probs_base.shape[1]
    rng = np.random.Generator(np.random.PCG64(seed))
    cand = np.empty((n_resamples, len(groups)), dtype=np.float64)
    base = np.empty_like(cand)
    for col, j in enumerate(groups):
        idx = np.flatnonzero(codes == j)
        sub_y = y[idx]
        present, counts = np.unique(sub_y, return_counts=True)
        if len(present) < 2 or (k > 2 and len(present) < k) or counts.min() < DELONG_MIN_PER_CLASS:
            return None
        auc_b, inf_b = auc_components(sub_y, probs_base[idx])
        auc_c, inf_c = auc_components(sub_y, probs_cand[idx])
        if inf_b is None or inf_c is None:
            return None
        order = row_order(np.stack([sub_y.astype(np.float64), inf_b, inf_c], axis=1))
        sub_y, inf_b, inf_c = sub_y[order], inf_b[order], inf_c[order]
        # a candidate that moves a handful of samples has a skewed paired difference: not for normal draws
        # (each model's own skew near an AUC of 1 is what the logit scale below is for)
        if cornish_fisher_gap((inf_c - inf_b)[:, None], z=_GAP_Z)[0] > _GAP_TOLERANCE:
            return None
        cls = np.unique(sub_y, return_inverse=True)[1].reshape(-1)
        aucs = np.array([auc_b, auc_c])
        if not np.all((aucs > 0.0) & (aucs < 1.0)):  # a perfect (or perfectly wrong) AUC has no spread to draw
            return None
        # on the logit scale (delta method): AUCs near 1 are skewed, and draws clipped at 1 understate the gap
        slope = aucs * (1.0 - aucs)
        cov = np.array([[influence_covariance(sub_y, inf_b, inf_b, cls), influence_covariance(sub_y, inf_b, inf_c, cls)],
                        [0.0, influence_covariance(sub_y, inf_c, inf_c, cls)]])
        cov[1, 0] = cov[0, 1]
        logits = np.log(aucs / (1.0 - aucs)) + rng.standard_normal((n_resamples, 2)) @ _root(cov / np.outer(slope, slope)).T
        draws = 1.0 / (1.0 + np.exp(-logits))
        base[:, col], cand[:, col] = draws[:, 0], draws[:, 1]
    return cand, base


_STD = NormalDist()


def normal_grid(mean: float, sd: float, levels, low: float = -math.inf, high: float = math.inf) -> list[float]:
    return [float(min(max(mean + sd * _STD.inv_cdf(q), low), high)) for q in levels]
