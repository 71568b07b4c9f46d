"""Task metrics as pure functions of per-sample vectors over an index set.

Each is named by its record in gate/measure/registry.py (the only table of
metrics); this module holds the arithmetic, nothing about direction or use.

Confusion-matrix metrics are computed with numpy rather than by calling
scikit-learn once per bootstrap resample: a thousand resamples of 100,000
samples would take minutes through sklearn and well under a second here.
tests/test_quality.py holds every one of them to scikit-learn's value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gate.measure.registry import get_metric, top_k_of
from gate.predictions import Predictions

Idx = np.ndarray | None
MetricFn = Callable[[Predictions, np.ndarray, Idx], float]

# samples per chunk where a whole-length integer temporary (codes, bins) would otherwise be made: 0.5 MB at a
# time instead of 8 bytes per sample (8 MB at 1M samples). Counts are sums of integers, so chunking them
# changes no bit; float sums per bin add sample after sample in data order either way (see bin_sums).
CHUNK = 1 << 16


def _take(a: np.ndarray, idx: Idx) -> np.ndarray:
    return a if idx is None else a[idx]


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """k x k counts, rows = true class, columns = predicted class. Labels and predictions may be narrow integers
    (gate/predictions.py: index_dtype): the code label * k + prediction is formed in int64, a chunk of samples
    at a time when the table is small."""
    if k * k > CHUNK:
        counts = np.bincount(np.asarray(y, dtype=np.int64) * k + pred, minlength=k * k)
    else:
        counts = np.zeros(k * k, dtype=np.int64)
        for lo in range(0, len(y), CHUNK):
            counts += np.bincount(np.asarray(y[lo:lo + CHUNK], dtype=np.int64) * k + pred[lo:lo + CHUNK],
                                  minlength=k * k)
    return counts.reshape(k, k).astype(np.float64)


_WIDEST_TABLE = 8192  # classes of a table indexed by class number: 8192^2 cells are 512 MB of counts


def _cm(p: Predictions, y: np.ndarray, idx: Idx) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrix and the class label of each of its rows."""
    yy, pp = _take(y, idx), _take(p.pred, idx)
    k = int(max(yy.max(initial=0), pp.max(initial=0))) + 1
    if yy.min(initial=0) < 0 or pp.min(initial=0) < 0 or k > _WIDEST_TABLE:
        # labels that are not class indices, or so many classes that a k x k table of every index up to the
        # largest would take gigabytes: map both onto one index space of the classes present
        classes, inverse = np.unique(np.concatenate([yy, pp]), return_inverse=True)
        yy, pp = inverse[: len(yy)], inverse[len(yy):]
        return confusion(yy, pp, len(classes)), classes
    return confusion(yy, pp, k), np.arange(k)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    # scikit-learn's convention: a class counts when it is in y_true or y_pred;
    # an undefined ratio (0/0) is 0
    present = (support + predicted) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return precision, recall, f1, support, present


def accuracy(p, y, idx=None) -> float:
    return float(np.mean(_take(p.pred, idx) == _take(y, idx)))


def balanced_accuracy(p, y, idx=None) -> float:
    _, recall, _, support, _ = _per_class(_cm(p, y, idx)[0])
    return float(recall[support > 0].mean())


def _macro(which: int):
    # Averages over classes. Over all samples they follow scikit-learn (every class in y_true or y_pred);
    # inside a slice (a subgroup, a true class) they average over the slice's true classes only (`classes`,
    # the record's in_slice), so `recall_macro per: class` is each class's own recall, not diluted by
    # classes the slice lacks.
    def fn(p, y, idx=None, classes: np.ndarray | None = None) -> float:
        cm, labels = _cm(p, y, idx)
        parts = _per_class(cm)
        counted = parts[4] if classes is None else parts[4] & np.isin(labels, classes)
        return float(parts[which][counted].mean()) if counted.any() else float("nan")
    return fn


precision_macro, recall_macro, f1_macro = _macro(0), _macro(1), _macro(2)


def f1_weighted(p, y, idx=None) -> float:
    _, _, f1, support, _ = _per_class(_cm(p, y, idx)[0])
    total = support.sum()
    return float((f1 * support).sum() / total) if total else float("nan")


def _neg_log(true_prob: np.ndarray) -> np.ndarray:
    """-log(clip(p, 1e-15, 1)) per sample in float64, in one new array (clip, log and sign taken in place). A
    probability stored in float32 below 1e-45 reads as 0: clipped to 1e-15 as its float64 value would be."""
    out = np.array(true_prob, dtype=np.float64)
    np.clip(out, 1e-15, 1.0, out=out)
    np.log(out, out=out)
    return np.negative(out, out=out)


def log_loss(p, y, idx=None) -> float:
    return float(_neg_log(_take(p.true_prob, idx)).mean())


def roc_auc(p, y, idx=None) -> float:
    """Binary: the positive class's score; more classes: one-vs-rest, unweighted mean over classes (NaN
    when a class has no sample). Mann-Whitney with midranks (gate/measure/fast.py), scikit-learn's
    roc_auc_score to rounding, without its import time."""
    from gate.measure.fast import auc_components, cached_auc

    if idx is None:  # over all samples: the base's value is asked once per candidate and once on its own
        return cached_auc(y, p.probs)
    return auc_components(_take(y, idx), _take(p.probs, idx))[0]


def top_k_hits(p: Predictions, k: int) -> np.ndarray:
    return p.true_rank < k


def top_k_accuracy(p, y, idx=None, *, k: int) -> float:
    return float(np.mean(_take(top_k_hits(p, k), idx)))


ECE_BINS = np.linspace(0.0, 1.0, 16)  # 15 equal-width bins of the confidence


def ece_bin(conf: np.ndarray) -> np.ndarray:
    """The bin 0..14 of every confidence: (m-1)/15 < confidence <= m/15 is bin m-1 (ece and the reliability
    diagram bin alike)."""
    # side="left": a confidence on an edge m/15 falls in bin m (the upper edge is inside), 0 in the first bin
    return np.clip(np.searchsorted(ECE_BINS, conf, side="left") - 1, 0, len(ECE_BINS) - 2)


def bin_sums(bins: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
    """np.bincount(bins, weights=weights, minlength=m), bit for bit, without its whole-length copy of the bins:
    np.add.at adds the weights sample after sample into the same float64 sums, as bincount does."""
    out = np.zeros(m)
    for lo in range(0, len(bins), CHUNK):
        np.add.at(out, bins[lo:lo + CHUNK], np.asarray(weights[lo:lo + CHUNK], dtype=np.float64))
    return out


def binned_confidence(conf: np.ndarray, pred: np.ndarray, y: np.ndarray) -> tuple:
    """(samples, sum of the confidences, right answers) in each of ece's bins, a chunk of samples at a time:
    (int64, float64, float64) arrays of len(ECE_BINS) - 1, the very numbers of np.bincount over ece_bin(conf)
    (the right answers as bincount sums their 1.0 weights: exact counts)."""
    m = len(ECE_BINS) - 1
    bins = np.empty(len(conf), dtype=np.int8)  # bins 0..14: one byte per sample, not an int64
    count, right = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    for lo in range(0, len(conf), CHUNK):
        part = ece_bin(conf[lo:lo + CHUNK])
        bins[lo:lo + CHUNK] = part
        count += np.bincount(part, minlength=m)
        right += np.bincount(part[pred[lo:lo + CHUNK] == y[lo:lo + CHUNK]], minlength=m)
    return count, bin_sums(bins, conf, m), right.astype(np.float64)


def ece(p, y, idx=None) -> float:
    """Expected calibration error, top-label (Guo et al. 2017): the bins (m-1)/15 < confidence <= m/15,
    each |accuracy - mean confidence| weighted by its share of the samples."""
    conf = _take(p.top_prob, idx)
    if not conf.size:
        return float("nan")
    _, conf_sum, right = binned_confidence(conf, _take(p.pred, idx), _take(y, idx))
    return float(np.abs(right - conf_sum).sum() / conf.size)


def _brier(sum_sq_prob: np.ndarray, true_prob: np.ndarray) -> np.ndarray:
    """max(sum_k p_k^2 - 2 p_y + 1, 0) per sample in float64, in one new array (each step in place)."""
    out = np.multiply(true_prob, 2.0, dtype=np.float64)
    np.subtract(sum_sq_prob, out, out=out)
    np.add(out, 1.0, out=out)
    return np.maximum(out, 0.0, out=out)


def brier_score(p, y, idx=None) -> float:
    """Mean over samples of sum_k (p_k - [k = y])^2 = sum_k p_k^2 - 2 p_y + 1 (0 to 2)."""
    per_sample = _brier(_take(p.sum_sq_prob, idx), _take(p.true_prob, idx))
    return float(per_sample.mean()) if per_sample.size else float("nan")


def _abs_err(p, y, idx):
    return np.abs(_take(p.values, idx) - _take(y, idx).reshape(len(_take(y, idx)), -1))


def mae(p, y, idx=None) -> float:
    return float(_abs_err(p, y, idx).mean())


def rmse(p, y, idx=None) -> float:
    # uniform average over outputs, as scikit-learn's root_mean_squared_error
    return float(np.sqrt((_abs_err(p, y, idx) ** 2).mean(axis=0)).mean())


def r2(p, y, idx=None) -> float:
    yy = _take(y, idx).reshape(len(_take(y, idx)), -1).astype(np.float64)
    resid = ((_take(p.values, idx) - yy) ** 2).sum(axis=0)
    total = ((yy - yy.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_output = np.where(total > 0, 1 - resid / np.where(total > 0, total, 1), np.nan)
    return float(np.mean(per_output))


def per_sample(name: str, p: Predictions, y: np.ndarray) -> np.ndarray | None:
    """The per-sample vector whose mean is the metric (records with resample MEAN), or None."""
    if name == "log_loss":
        return _neg_log(p.true_prob)
    if name == "brier_score":
        return _brier(p.sum_sq_prob, p.true_prob)
    if name == "mae":
        return _abs_err(p, y, None).mean(axis=1)
    return None


def moment_columns(name: str, p: Predictions, y: np.ndarray) -> np.ndarray | None:
    """(n, c) per-sample columns whose means give the metric through from_moments (records with resample
    MEAN or MOMENTS), or None: what a weighted (resampled) copy of the data needs of each sample."""
    if name == "rmse":
        return _abs_err(p, y, None) ** 2
    if name == "r2":
        squared = _abs_err(p, y, None) ** 2
        yy = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        # the variance as mean(c^2) - mean(c)^2 of a centred c: no cancellation; one target for every output
        # broadcasts as in r2
        # the target's mean over its sorted values: the same bits in any order of the samples, so r2's interval is
        # the same for a shuffled file (its resamples are drawn in content order)
        centred = np.broadcast_to(yy - np.sort(yy, axis=0).mean(axis=0), squared.shape)
        return np.concatenate([squared, centred, centred ** 2], axis=1)
    values = per_sample(name, p, y)
    return None if values is None else values.reshape(-1, 1)


# a weighted variance below this share of the weighted second moment is rounding: one target value
_CONSTANT = 1e-7


def from_moments(name: str, means: np.ndarray) -> np.ndarray:
    """The metric from (weighted) means of its moment_columns, the columns on the last axis."""
    if name == "rmse":
        return np.sqrt(np.maximum(means, 0.0)).mean(axis=-1)
    if name == "r2":
        d = means.shape[-1] // 3
        squared, first, second = means[..., :d], means[..., d:2 * d], means[..., 2 * d:]
        variance = second - first ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            per_output = np.where(variance > _CONSTANT * second, 1.0 - squared / variance, np.nan)
        return per_output.mean(axis=-1)
    return means[..., 0]


def proportion_hits(name: str, p: Predictions, y: np.ndarray) -> np.ndarray:
    """Per-sample hits of a share-of-samples metric (accuracy, top_K_accuracy)."""
    k = top_k_of(name)
    return top_k_hits(p, k) if k else p.pred == y


def function_for(name: str, classes: np.ndarray | None = None) -> MetricFn | None:
    """The metric's function from its record (registry.MetricSpec.function); `classes`: a slice's true classes."""
    spec = get_metric(name)
    return spec.function(classes) if spec is not None else None
