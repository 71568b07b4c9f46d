"""Intervals from sufficient statistics (gate/measure/fast.py) against the index bootstrap they replace.

Three methods: multinomial resampling of the joint (label, base, candidate) table for confusion-matrix
metrics, DeLong for roc_auc, a Poisson weight bootstrap for per-sample means. Each is held to
- the metric's own value (the counts reproduce quality.py's functions exactly),
- the old index bootstrap on the same data (interval ends within a few Monte Carlo errors),
- coverage by simulation (fixed seeds, so every run gives the same figures; tolerances 3-4 simulation
  standard errors, stated with each test),
- permutation invariance (the same bits for any order of the samples).

Coverage of the 95% interval of the paired difference (seeded figures of this file; offline runs with
other seeds and sizes in brackets; SE = the simulation's standard error):
- cells, 3 classes, n = 3,000, 1,000 resamples, 2,000 data sets (SE 0.49): f1_macro 95.35%,
  balanced_accuracy 95.70% [5,000 data sets each (SE 0.31): n = 800 94.64% / 94.68%, n = 3,000 95.02% /
  94.96%]. The cell bootstrap is the index bootstrap in distribution, so these are the old method's too.
- DeLong, binormal scores, n = 400, 3,000 data sets (SE 0.40): binary 94.67%, 3 classes one-vs-rest
  95.00% [8,000 each (SE 0.24): n = 150 95.66% / 95.36%, n = 400 94.81% / 95.35%; n = 2,000 binary
  95.37% on 6,000 and 94.07% on 3,000 (pooled 94.93%), 3 classes 94.90% on 3,000].
- Poisson weights, log-loss-like skewed losses, n = 500, 1,000 resamples, 2,500 data sets (SE 0.44):
  94.84% [5,000 (SE 0.31): n = 500 94.74%, n = 200 94.06%: the percentile bootstrap of a skewed mean
  under-covers at small n, as the index bootstrap does (tests/test_stats_simulation.py)].
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from gate.measure import fast, quality
from gate.measure.compare import _seed, canonical_order, compare
from gate.measure.registry import get_metric
from gate.measure.stats import paired_bootstrap, percentile_interval
from gate.predictions import Agreement, Predictions

CONF = 0.95
CELL_METRICS = ("balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")


def _se(p: float, sims: int) -> float:
    return math.sqrt(p * (1 - p) / sims)


def _preds(pred, probs=None, y=None) -> Predictions:
    if probs is None:
        return Predictions(kind="labels", pred=np.asarray(pred), values=None, true_prob=None, true_rank=None,
                           probs=None, n_classes=None)
    probs = np.asarray(probs, dtype=np.float64)
    true_prob = probs[np.arange(len(y)), y]
    return Predictions(kind="probabilities", pred=probs.argmax(axis=1), values=None, true_prob=true_prob,
                       true_rank=(probs > true_prob[:, None]).sum(axis=1), probs=probs.astype(np.float32),
                       n_classes=probs.shape[1], top_prob=probs.max(axis=1), sum_sq_prob=(probs ** 2).sum(axis=1))


def _classification(rng, n, k, acc_b=0.8, flip=0.1):
    y = rng.integers(0, k, n)
    pb = np.where(rng.random(n) < acc_b, y, rng.integers(0, k, n))
    pc = np.where(rng.random(n) < flip, rng.integers(0, k, n), pb)
    return y, pb, pc


# --------------------------------------------------------------------------
# confusion-matrix metrics: the joint table
# --------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 7])
def test_counts_reproduce_every_confusion_metric(k):
    rng = np.random.default_rng(k)
    y, pb, _ = _classification(rng, 300, k)
    if k == 7:
        pb[pb == 6] = 5  # a class never predicted
    labels, tp, support, predicted = fast.observed_counts(y, pb)
    for name in CELL_METRICS:
        assert fast.from_counts(name, tp, support, predicted, labels)[0] == pytest.approx(
            get_metric(name).fn(_preds(pb), y), abs=1e-12), name
    # inside a slice, over the slice's classes; labels that are not class indices
    classes = np.array([0, 1])
    for name in ("f1_macro", "precision_macro", "recall_macro"):
        assert fast.from_counts(name, tp, support, predicted, labels, classes)[0] == pytest.approx(
            get_metric(name).function(classes)(_preds(pb), y), abs=1e-12)
    labels, tp, support, predicted = fast.observed_counts(y - 3, pb - 3)
    assert fast.from_counts("f1_macro", tp, support, predicted, labels)[0] == pytest.approx(
        quality.f1_macro(_preds(pb - 3), y - 3), abs=1e-12)


@pytest.mark.parametrize("shift", [0, -3, 70_000])
def test_the_joint_cells_are_counted_as_sorting_would_count_them(shift):
    """Class indices (0..k-1, below 65,536) are counted by bincount; other labels (negative, large) sorted. Both
    give np.unique's cells and counts, in content order."""
    rng = np.random.default_rng(3)
    y, pb, pc = (v + shift for v in _classification(rng, 5_000, 6))
    labels, cells, counts = fast.joint_cells(y, pb, pc)
    all_labels, inverse = np.unique(np.r_[y, pb, pc], return_inverse=True)
    n, k = len(y), len(all_labels)
    codes, want = np.unique((inverse[:n] * k + inverse[n:2 * n]) * k + inverse[2 * n:], return_counts=True)
    assert np.array_equal(labels, all_labels) and np.array_equal(counts, want)
    assert all(np.array_equal(a, b) for a, b in zip(cells, ((codes // (k * k)) % k, (codes // k) % k, codes % k)))


def test_each_resample_is_the_metric_of_its_counts():
    """A multinomial draw of the cells is a resample of the samples: rebuilding the samples from the drawn
    counts and calling the metric gives the same value."""
    rng = np.random.default_rng(1)
    y, pb, pc = _classification(rng, 200, 4)
    labels, (cy, cb, cc), counts = fast.joint_cells(y, pb, pc)
    draws = np.random.default_rng(2).multinomial(200, counts / 200, size=5)
    for row in draws:
        yy, bb, ccand = (np.repeat(labels[a], row) for a in (cy, cb, cc))
        _, tp, support, predicted = fast.observed_counts(yy, ccand)
        for name in CELL_METRICS:
            assert fast.from_counts(name, tp, support, predicted, labels)[0] == pytest.approx(
                get_metric(name).fn(_preds(ccand), yy), abs=1e-12)


def _old_bootstrap(fn, base, cand, y, n, resamples, seed):
    order = canonical_order(n, y, base.pred, cand.pred)
    c = paired_bootstrap(lambda idx: fn(cand, y, order[idx]), n, n_resamples=resamples, seed=seed)
    b = paired_bootstrap(lambda idx: fn(base, y, order[idx]), n, n_resamples=resamples, seed=seed)
    return c, b


@pytest.mark.parametrize("name", ["f1_macro", "balanced_accuracy"])
def test_cell_bootstrap_agrees_with_the_index_bootstrap(name):
    """Same data, 4,000 resamples each: the ends of both 95% intervals differ only by Monte Carlo error
    (about 0.06 sd per end for each method; the tolerance is 0.4 sd, about 5 errors of the difference)."""
    rng = np.random.default_rng(5)
    n = 600
    y, pb, pc = _classification(rng, n, 4)
    base, cand, fn = _preds(pb), _preds(pc), get_metric(name).fn
    old_c, old_b = _old_bootstrap(fn, base, cand, y, n, 4000, 11)
    new_c, new_b = fast.cell_distributions(name, y, pb, pc, n_resamples=4000, seed=12)
    for old, new in ((old_c - old_b, new_c - new_b), (old_c, new_c)):
        sd = float(np.std(old))
        o, w = percentile_interval(old, CONF), percentile_interval(new, CONF)
        assert abs(o.low - w.low) <= 0.4 * sd and abs(o.high - w.high) <= 0.4 * sd, (o, w, sd)
        assert float(np.std(new)) == pytest.approx(sd, rel=0.08)


# the population: cell probabilities of (y, base, candidate) over 3 classes
def _population(k=3):
    rng = np.random.default_rng(2024)
    p = np.zeros((k, k, k))
    for t in range(k):
        for b in range(k):
            for c in range(k):
                p[t, b, c] = (6.0 if b == t else 1.0) * (5.0 if c == b else 1.0 + (c == t)) * rng.uniform(0.5, 1.5)
    return p / p.sum()


def _metric_of_probabilities(name, p):
    k = p.shape[0]
    tp_b = np.array([p[t, t, :].sum() for t in range(k)])[None]
    tp_c = np.array([p[t, :, t].sum() for t in range(k)])[None]
    support = p.sum(axis=(1, 2))[None]
    labels = np.arange(k)
    return (fast.from_counts(name, tp_c, support, p.sum(axis=(0, 1))[None], labels)[0]
            - fast.from_counts(name, tp_b, support, p.sum(axis=(0, 2))[None], labels)[0])


# 2,000 data sets: the standard error of a 95% coverage is 0.49 points
_SIMS_CELLS = 2000


def test_cell_bootstrap_covers_the_true_difference():
    """f1_macro and balanced_accuracy from the same resamples of each simulated data set (3 classes, 3,000
    samples; the cost does not grow with n, only with the 27 cells)."""
    p = _population()
    names = ("f1_macro", "balanced_accuracy")
    truth = {name: _metric_of_probabilities(name, p) for name in names}
    k, n = p.shape[0], 3000
    flat = p.reshape(-1)
    rng = np.random.default_rng(77)
    hits = dict.fromkeys(names, 0)
    for i in range(_SIMS_CELLS):
        cells = np.repeat(np.arange(flat.size), rng.multinomial(n, flat))
        y, pb, pc = cells // (k * k), (cells // k) % k, cells % k
        c = fast.cell_bootstrap(y, pb, pc, n_resamples=1000, seed=i)
        for name in names:
            delta = (fast.from_counts(name, c.tp_cand, c.support, c.predicted_cand, c.labels)
                     - fast.from_counts(name, c.tp_base, c.support, c.predicted_base, c.labels))
            iv = percentile_interval(delta, CONF)
            hits[name] += iv.low <= truth[name] <= iv.high
    coverage = {name: h / _SIMS_CELLS for name, h in hits.items()}
    # 1.5 points = 3 standard errors (seeded figures in the module docstring)
    assert all(abs(v - CONF) <= 0.015 for v in coverage.values()), coverage


# --------------------------------------------------------------------------
# roc_auc: DeLong
# --------------------------------------------------------------------------

def test_auc_matches_sklearn_with_ties_binary_and_multiclass():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    auc, inf = fast.auc_components(y, np.stack([1 - s, s], axis=1))
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert inf.sum() == pytest.approx(0.0, abs=1e-12)
    y3 = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3)) + np.eye(3)[y3]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    auc3, _ = fast.auc_components(y3, probs)
    assert auc3 == pytest.approx(roc_auc_score(y3, probs, multi_class="ovr", average="macro"), abs=1e-12)


def _delong_reference(y, sb, sc):
    """DeLong's paired variance by its textbook formula (O(m n) kernel matrices)."""
    pos, neg = y == 1, y == 0
    out = []
    for s in (sb, sc):
        kern = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        out.append((kern.mean(axis=1), kern.mean(axis=0)))
    v10, v01 = np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
    s10, s01 = np.cov(v10), np.cov(v01)
    return s10 / pos.sum() + s01 / neg.sum()


def test_delong_variance_is_the_textbook_formula():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    sb = np.round(rng.normal(size=300) + 1.2 * y, 2)
    sc = np.round(sb + rng.normal(0, 0.5, 300), 2)
    d = fast.delong(y, np.stack([1 - sb, sb], 1), np.stack([1 - sc, sc], 1))
    s = _delong_reference(y, sb, sc)
    assert (d.var_base, d.var_cand, d.cov) == pytest.approx((s[0, 0], s[1, 1], s[0, 1]), rel=1e-9)


def _binormal(rng, n, mu=1.2, tau=0.6, k=2):
    """Scores whose AUCs are known: base = mu [y = j] + e, candidate = base + N(0, tau^2) per column."""
    y = rng.integers(0, k, n)
    base = mu * np.eye(k)[y] + rng.normal(size=(n, k))
    cand = base + rng.normal(0, tau, (n, k))
    if k == 2:
        base[:, 0] = cand[:, 0] = 0.0
        return y, base, cand
    soft = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    return y, soft(base), soft(cand)


def _as_probs(scores):  # binary: the second column is the score the AUC reads
    return scores


def test_delong_agrees_with_the_index_bootstrap():
    """3 classes, 600 samples, 2,000 bootstrap resamples of the old method: the ends agree within 0.4 sd."""
    rng = np.random.default_rng(8)
    y, pb, pc = _binormal(rng, 600, k=3)
    base, cand = _preds(None, pb, y), _preds(None, pc, y)
    m = compare("roc_auc", base=base, cand=cand, agreement=Agreement(kl=None, cosine=None, max_abs=None), y=y,
                task="classification", confidence=CONF, bootstrap=1000, seed=0, with_interval=True)
    idx_rng = np.random.default_rng(9)
    old = []
    for _ in range(2000):
        idx = idx_rng.integers(0, 600, 600)
        old.append(quality.roc_auc(cand, y, idx) - quality.roc_auc(base, y, idx))
    old = np.array(old)
    o, sd = percentile_interval(old, CONF), float(np.std(old))
    assert m.delta_interval.method == "delong"
    assert abs(o.low - m.delta_interval.low) <= 0.4 * sd and abs(o.high - m.delta_interval.high) <= 0.4 * sd
    assert (m.delta_interval.high - m.delta_interval.low) / 3.92 == pytest.approx(sd, rel=0.1)


# 3,000 data sets each: the standard error of a 95% coverage is 0.40 points
_SIMS_AUC = 3000


def _auc_truth(k, mu=1.2, tau=0.6):
    if k == 2:
        phi = NormalDist().cdf
        return phi(mu / math.sqrt(2 * (1 + tau * tau))) - phi(mu / math.sqrt(2))
    y, pb, pc = _binormal(np.random.default_rng(99), 1_000_000, mu, tau, k)
    return fast.auc_components(y, pc)[0] - fast.auc_components(y, pb)[0]


@pytest.mark.parametrize("k", [2, 3])
def test_delong_covers_the_true_difference(k):
    truth = _auc_truth(k)  # 3 classes: from a million samples (its error is below 2e-4, paired)
    rng = np.random.default_rng(500 + k)
    z = NormalDist().inv_cdf(0.975)
    hits = 0
    for _ in range(_SIMS_AUC):
        y, pb, pc = _binormal(rng, 400, k=k)
        d = fast.delong(y, pb, pc)
        half = z * math.sqrt(d.var_delta)
        hits += abs(d.cand - d.base - truth) <= half
    coverage = hits / _SIMS_AUC
    # 1.2 points = 3 standard errors (seeded figures in the module docstring)
    assert abs(coverage - CONF) <= 0.012, coverage


# --------------------------------------------------------------------------
# per-sample means: Poisson weights
# --------------------------------------------------------------------------

def test_poisson_weights_are_poisson_one():
    w = fast.poisson_weights(np.random.default_rng(0), 200, 5000).astype(np.float64)
    assert w.mean() == pytest.approx(1.0, abs=0.003) and w.var() == pytest.approx(1.0, abs=0.006)
    assert np.mean(w == 0) == pytest.approx(math.exp(-1), abs=0.002)


def _log_losses(rng, n, shift=-0.1):
    z = rng.normal(2.5, 2.0, n)
    zc = z + rng.normal(shift, 0.4, n)
    return np.logaddexp(0.0, -z), np.logaddexp(0.0, -zc)


def test_mean_bootstrap_agrees_with_the_index_bootstrap():
    rng = np.random.default_rng(21)
    b, c = _log_losses(rng, 800)
    idx = np.random.default_rng(22).integers(0, 800, (4000, 800))
    old_c, old_b = c[idx].mean(axis=1), b[idx].mean(axis=1)
    new_c, new_b = fast.paired_mean_distributions(b, c, n_resamples=4000, seed=23)
    for old, new in ((old_c - old_b, new_c - new_b), (old_c, new_c)):
        sd = float(np.std(old))
        o, w = percentile_interval(old, CONF), percentile_interval(new, CONF)
        assert abs(o.low - w.low) <= 0.4 * sd and abs(o.high - w.high) <= 0.4 * sd, (o, w, sd)
        assert float(np.std(new)) == pytest.approx(sd, rel=0.08)


# 2,500 data sets: the standard error of a 95% coverage is 0.44 points
_SIMS_MEAN = 2500


def test_mean_bootstrap_covers_the_true_difference():
    big_b, big_c = _log_losses(np.random.default_rng(7), 2_000_000)
    truth = float(big_c.mean() - big_b.mean())
    rng = np.random.default_rng(31)
    hits = 0
    for i in range(_SIMS_MEAN):
        b, c = _log_losses(rng, 500)
        new_c, new_b = fast.paired_mean_distributions(b, c, n_resamples=1000, seed=i)
        iv = percentile_interval(new_c - new_b, CONF)
        hits += iv.low <= truth <= iv.high
    coverage = hits / _SIMS_MEAN
    # 1.5 points = 3.4 standard errors (seeded figure in the module docstring)
    assert abs(coverage - CONF) <= 0.015, coverage


# --------------------------------------------------------------------------
# through compare(): permutation invariance, slices, the base computed once
# --------------------------------------------------------------------------

def _case(n=700, k=3, seed=41):
    rng = np.random.default_rng(seed)
    y, pb, pc = _binormal(rng, n, k=k)
    base, cand = _preds(None, pb, y), _preds(None, pc, y)
    kl = np.abs(rng.normal(0, 0.01, n))
    return y, base, cand, Agreement(kl=kl, cosine=1 - kl, max_abs=kl)


_FAST = ("balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "roc_auc", "log_loss",
         "brier_score", "kl_divergence", "cosine_similarity")


def _measure(name, y, base, cand, agreement, classes=None):
    return compare(name, base=base, cand=cand, agreement=agreement, y=y, task="classification", confidence=CONF,
                   bootstrap=500, seed=3, with_interval=True, classes=classes)


@pytest.mark.parametrize("name", _FAST)
def test_permuting_the_samples_changes_no_bit(name):
    y, base, cand, agreement = _case()
    perm = np.random.default_rng(1).permutation(len(y))
    a = _measure(name, y, base, cand, agreement)
    b = _measure(name, y[perm], base.take(perm), cand.take(perm),
                 Agreement(kl=agreement.kl[perm], cosine=agreement.cosine[perm], max_abs=agreement.max_abs[perm]))
    assert a.delta_interval == b.delta_interval and a.candidate_interval == b.candidate_interval
    assert a.relative_interval == b.relative_interval and a.evidence == b.evidence
    assert a.candidate_interval is not None and math.isfinite(a.candidate_interval.low)


def test_methods_are_named_and_grids_follow_the_intervals():
    y, base, cand, agreement = _case()
    auc = _measure("roc_auc", y, base, cand, agreement)
    assert auc.delta_interval.method == "delong" and auc.relative_interval.method == "delong"
    grid = auc.evidence["delta_grid"]
    assert grid[6] == pytest.approx(auc.delta_interval.low) and grid[-7] == pytest.approx(auc.delta_interval.high)
    assert auc.base == pytest.approx(quality.roc_auc(base, y)) and auc.candidate == pytest.approx(
        quality.roc_auc(cand, y))
    f1 = _measure("f1_macro", y, base, cand, agreement)
    assert f1.delta_interval.method == "bootstrap" and f1.evidence["delta_grid"][6] == pytest.approx(
        f1.delta_interval.low)


def test_slice_classes_are_used_inside_a_slice():
    y, base, cand, agreement = _case()
    inside = np.flatnonzero(y != 2)
    sub_y = y[inside]
    m = _measure("recall_macro", sub_y, base.take(inside), cand.take(inside), agreement,
                 classes=np.unique(sub_y))
    assert m.candidate == pytest.approx(quality.recall_macro(cand.take(inside), sub_y, classes=np.array([0, 1])))
    assert m.candidate_interval.low <= m.candidate <= m.candidate_interval.high


def test_undefined_auc_is_not_a_number_never_a_pass():
    y, base, cand, agreement = _case()
    inside = np.flatnonzero(y != 2)  # 3-class scores, a class missing: one-vs-rest AUC undefined
    m = _measure("roc_auc", y[inside], base.take(inside), cand.take(inside), agreement)
    assert m.candidate is None and math.isnan(m.delta_interval.low)


def test_the_seed_is_per_metric():
    y, base, cand, agreement = _case()
    assert _seed(3, "f1_macro") != _seed(3, "balanced_accuracy")
    a = _measure("log_loss", y, base, cand, agreement)
    assert a == _measure("log_loss", y, base, cand, agreement)


def test_shared_weights_give_every_mean_the_same_interval_whatever_else_is_asked():
    """log_loss, brier_score, kl_divergence and cosine_similarity share one matrix of weights per candidate:
    a metric's interval is the same asked alone (empty cache) or after the others, and the same as a
    separate Poisson bootstrap in law (its own column of the same product)."""
    y, base, cand, agreement = _case()
    fast._SHARED_CACHE.clear()
    alone = _measure("log_loss", y, base, cand, agreement)
    for name in ("kl_divergence", "cosine_similarity", "brier_score"):
        _measure(name, y, base, cand, agreement)
    fast._SHARED_CACHE.clear()
    _measure("kl_divergence", y, base, cand, agreement)
    after = _measure("log_loss", y, base, cand, agreement)
    assert alone == after


def test_confusion_matrix_metrics_share_one_draw_of_the_cell_table_whatever_else_is_asked():
    """f1_macro and balanced_accuracy read the same resamples of a candidate's (label, base, candidate) table,
    drawn once; an interval is the same asked alone (empty cache) or after the other."""
    y, base, cand, agreement = _case()
    fast._CELL_CACHE.clear()
    alone = _measure("f1_macro", y, base, cand, agreement)
    drawn = fast._CELL_CACHE[0][1]
    _measure("balanced_accuracy", y, base, cand, agreement)
    assert fast._CELL_CACHE[0][1] is drawn  # not drawn again
    fast._CELL_CACHE.clear()
    _measure("balanced_accuracy", y, base, cand, agreement)
    assert _measure("f1_macro", y, base, cand, agreement) == alone


def test_the_base_auc_is_computed_once_for_all_candidates():
    y, base, cand, agreement = _case()
    _, _, other, _ = _case(seed=42)
    fast._BASE_CACHE.clear()
    first = _measure("roc_auc", y, base, cand, agreement)
    cached = next(v for yy, p, v in fast._BASE_CACHE if p is base.probs)
    _measure("roc_auc", y, base, other, agreement)
    assert next(v for yy, p, v in fast._BASE_CACHE if p is base.probs) is cached
    fast._BASE_CACHE.clear()
    assert _measure("roc_auc", y, base, cand, agreement) == first
