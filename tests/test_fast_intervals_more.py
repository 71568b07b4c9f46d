"""rmse, r2, ece, the gap between subgroups and the fairness metrics from sufficient statistics
(gate/measure/fast.py), against the index bootstrap they replace (tests/test_fast_intervals.py holds the
first three methods; this file the rest, in the same layers):
- each resample is the metric of a weighted copy of the data (integer weights = an index set with repeats:
  the sufficient statistics reproduce quality.py's functions and groups.py's gap and fairness statistics);
- the interval ends agree with the old index bootstrap on the same data, within Monte Carlo error;
- coverage by simulation (fixed seeds: every run gives the same figures).

Poisson methods are simulated many data sets at once: each data set is a subgroup of one call, and every
sample has its own independent weight, so a subgroup's resampled values are those of a separate call on
that data set alone (in law). The cell method is run per data set.

Coverage of the 95% interval of the paired difference (seeded figures of this file, then offline runs of
the same tests with other seeds and more data sets in brackets; SE = the simulation's standard error):
- rmse / r2, Poisson moments, n = 400, 300 resamples, 600 data sets (SE 0.89): 94.33% / 95.33%
  [4,800 (SE 0.31): 94.58% / 94.40%]. At n = 200 both methods under-cover alike: Poisson 93.99% / 94.04%
  (8,000 data sets, 400 resamples), the index bootstrap 93.6% / 94.2% (4,000): the percentile bootstrap's
  small-sample error, not the weights'.
- ece, Poisson bin sums, n = 300, 300 resamples, 600 data sets (SE 0.89): 94.17% [4,800 (SE 0.31):
  95.56%; 8,000 with 400 resamples: 95.26%].
- cells by subgroup, n = 1,500 in two subgroups, 300 resamples, 400 data sets (SE 1.09): accuracy gap
  93.75%, demographic_parity_difference 92.50%, equalized_odds_difference 93.75% [4,000 (SE 0.34): 94.95% /
  94.35% / 95.15%]. The cell table is the index bootstrap in distribution, so these are the old method's
  too. A gap is a max - min: its bootstrap is regular only where the subgroups' values (and, for equalized
  odds, the TPR and FPR gaps) are apart by several standard errors, as here; with TPR and FPR gaps 2.4
  standard errors apart equalized odds over-covered (96.5% on 4,000), both methods alike.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_fast_intervals import CONF, _preds, _se

from gate.measure import fast, quality
from gate.measure.compare import compare, sample_order, _unordered
from gate.measure.groups import (Grouping, _fairness_distributions, _fairness_stat, _gap_distributions, _gap_stat,
                                 fairness_from_counts)
from gate.measure.registry import get_metric
from gate.measure.stats import paired_bootstrap, percentile_interval
from gate.predictions import Agreement, Predictions

NO_AGREEMENT = Agreement(kl=None, cosine=None, max_abs=None)


def _values(v) -> Predictions:
    v = np.asarray(v, dtype=np.float64)
    return Predictions(kind="values", pred=None, values=v.reshape(len(v), -1), true_prob=None, true_rank=None,
                       probs=None, n_classes=None)


def _grouping(codes) -> Grouping:
    codes = np.asarray(codes)
    return Grouping(name="g", columns=("g",), codes=codes, keys=tuple(str(j) for j in range(codes.max() + 1)))


def _regression(rng, n, outputs=1):
    y = rng.gamma(2.0, 1.5, (n, outputs))  # skewed targets
    base = y + rng.normal(0, 0.5, (n, outputs))
    cand = y + 1.1 * (base - y) + rng.normal(0, 0.2, (n, outputs))
    return y, base, cand


def _classification(rng, n, k=3):
    y = rng.integers(0, k, n)
    logits = 1.5 * (rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y])
    soft = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    return y, _preds(None, soft(logits), y), _preds(None, soft(logits + rng.normal(0, 0.6, (n, k))), y)


def _binary(rng, n):
    y = rng.integers(0, 2, n)
    pb = np.where(rng.random(n) < 0.8, y, 1 - y)
    return y, _preds(pb), _preds(np.where(rng.random(n) < 0.1, 1 - pb, pb))


# --------------------------------------------------------------------------
# each resample is the metric of a weighted copy of the data
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n_codes", [3, 300])  # few long runs of rows: matrix products; many short: reduceat
def test_poisson_sums_are_the_weighted_sums_per_code_in_content_order(n_codes):
    """One block of weights (50 x 300) drawn for the rows in (code, content) order, as documented; the
    same sums for any order of the samples."""
    rng = np.random.default_rng(n_codes)
    n, r = 300, 50
    values, codes = rng.normal(size=(n, 2)), rng.integers(0, n_codes, n)
    present, sums, totals, method = fast.poisson_sums(values, codes, n_resamples=r, seed=7)
    assert method == fast.POISSON  # 300 samples: every code weighted
    order = np.lexsort([*values.T[::-1], codes])
    w = fast.poisson_weights(np.random.Generator(np.random.PCG64(7)), r, n).astype(np.float64)
    weights = np.empty_like(w)
    weights[:, order] = w  # each sample's weight
    assert list(present) == list(np.unique(codes))
    for s, code in enumerate(present):
        member = codes == code
        assert np.allclose(totals[:, s], weights[:, member].sum(axis=1), rtol=0, atol=1e-9)
        assert np.allclose(sums[:, s], weights[:, member] @ values[member], rtol=1e-12, atol=1e-12)
    perm = rng.permutation(n)
    again = fast.poisson_sums(values[perm], codes[perm], n_resamples=r, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(again, (present, sums, totals, method)))


def _weighted_copies(rng, n, resamples=4):
    """Integer weights and the index sets with repeats they stand for."""
    w = rng.integers(0, 4, (resamples, n))
    return w, [np.repeat(np.arange(n), row) for row in w]


def test_moments_give_rmse_and_r2_of_each_weighted_copy():
    rng = np.random.default_rng(2)
    n = 60
    y, b, c = _regression(rng, n, outputs=2)
    w, copies = _weighted_copies(rng, n)
    for name in ("rmse", "r2", "mae"):
        for values, target in ((b, y), (c, y), (c, y[:, 0])):  # two outputs; two outputs of one target
            p = _values(values)
            columns = quality.moment_columns(name, p, target)
            got = quality.from_moments(name, (w @ columns) / w.sum(axis=1, keepdims=True))
            for value, idx in zip(got, copies):
                assert value == pytest.approx(get_metric(name).fn(p, target, idx), rel=1e-10, abs=1e-12), name


def test_bin_sums_give_ece_of_each_weighted_copy_in_each_subgroup():
    rng = np.random.default_rng(3)
    n = 200
    y, base, cand = _classification(rng, n)
    groups = rng.integers(0, 3, n)
    columns, codes = fast.ece_columns(y, base.pred, base.top_prob, cand.pred, cand.top_prob, groups)
    w, copies = _weighted_copies(rng, n)
    present = np.unique(codes)
    sums = np.stack([w[:, codes == code] @ columns[codes == code] for code in present], axis=1)
    totals = np.stack([w[:, codes == code].sum(axis=1) for code in present], axis=1).astype(np.float64)
    ece_c, ece_b = fast.ece_from_sums(present, sums, totals, n_groups=3)
    for r, idx in enumerate(copies):
        for g in range(3):
            members = idx[groups[idx] == g]
            assert ece_c[r, g] == pytest.approx(quality.ece(cand, y, members), abs=1e-12)
            assert ece_b[r, g] == pytest.approx(quality.ece(base, y, members), abs=1e-12)


def test_counts_give_the_fairness_differences_and_gaps_of_each_weighted_copy():
    """Per-subgroup counts of a weighted copy give groups.py's fairness statistics (fairlearn's definitions)
    and, through fast.spread, the gap statistic of the index bootstrap."""
    rng = np.random.default_rng(4)
    n = 300
    y, base, cand = _binary(rng, n)
    groups = rng.choice(3, n, p=[0.5, 0.4, 0.1])
    grouping = _grouping(groups)
    w, copies = _weighted_copies(rng, n)

    def counts(mask):  # (resamples, 3 subgroups, classes 0 and 1) weighted counts
        return np.stack([np.stack([(w * (mask & (groups == g) & (y == j))).sum(axis=1)
                                   for j in (0, 1)], axis=1) for g in range(3)], axis=1).astype(np.float64)

    def predicted(p):
        return np.stack([np.stack([(w * ((groups == g) & (p.pred == j))).sum(axis=1) for j in (0, 1)], axis=1)
                         for g in range(3)], axis=1).astype(np.float64)

    c = fast.CellCounts(labels=np.array([0, 1]), support=counts(np.ones(n, dtype=bool)),
                        tp_base=counts(base.pred == y), predicted_base=predicted(base),
                        tp_cand=counts(cand.pred == y), predicted_cand=predicted(cand))
    for name in ("demographic_parity_difference", "equalized_odds_difference"):
        got_c, got_b = fairness_from_counts(name, c)
        for r, idx in enumerate(copies):
            assert got_c[r] == pytest.approx(_fairness_stat(name, cand, y, grouping)(idx), abs=1e-12)
            assert got_b[r] == pytest.approx(_fairness_stat(name, base, y, grouping)(idx), abs=1e-12)
    accuracy = fast.spread(c.tp_cand.sum(axis=-1) / c.support.sum(axis=-1))
    for r, idx in enumerate(copies):
        assert accuracy[r] == pytest.approx(_gap_stat(quality.accuracy, cand, y, grouping, [0, 1, 2])(idx))


def test_cells_split_by_one_subgroup_are_the_cells():
    rng = np.random.default_rng(5)
    y, base, cand = _binary(rng, 400)
    whole = fast.cell_bootstrap(y, base.pred, cand.pred, n_resamples=200, seed=1)
    split = fast.cell_bootstrap(y, base.pred, cand.pred, n_resamples=200, seed=1, groups=np.zeros(400, dtype=int))
    assert all(np.array_equal(getattr(whole, f), getattr(split, f)[:, 0]) for f in ("support", "tp_cand",
                                                                                      "predicted_base"))
    groups = rng.integers(0, 4, 400)
    c = fast.cell_bootstrap(y, base.pred, cand.pred, n_resamples=2000, seed=2, groups=groups, n_groups=4)
    assert np.all(c.support.sum(axis=(1, 2)) == 400)
    expected = np.stack([np.bincount(y[groups == g], minlength=2) for g in range(4)])
    # each count is Binomial(400, share): its mean over 2,000 resamples is within 4 standard errors
    assert np.all(np.abs(c.support.mean(axis=0) - expected) <= 4 * np.sqrt(expected / 2000) + 1e-9)


# --------------------------------------------------------------------------
# the same intervals as the index bootstrap on the same data
# --------------------------------------------------------------------------

OLD, NEW = 1000, 4000


def _assert_agree(old: np.ndarray, new: np.ndarray):
    """The 95% ends of 1,000 index resamples and 4,000 new ones: Monte Carlo errors of about 0.085 and 0.042
    sd per end (0.095 sd for their difference); the tolerance is 0.45 sd, about 4.7 errors. Spreads: 2.5%
    error combined, tolerance 10%."""
    sd = float(np.nanstd(old))
    o, w = percentile_interval(old, CONF), percentile_interval(new, CONF)
    assert abs(o.low - w.low) <= 0.45 * sd and abs(o.high - w.high) <= 0.45 * sd, (o, w, sd)
    assert float(np.nanstd(new)) == pytest.approx(sd, rel=0.10)


def _old_delta(cand_stat, base_stat, n, order):
    return paired_bootstrap(lambda idx: cand_stat(order[idx]) - base_stat(order[idx]), n, n_resamples=OLD, seed=9)


def test_rmse_r2_and_ece_agree_with_the_index_bootstrap():
    rng = np.random.default_rng(11)
    n = 600
    y, b, c = _regression(rng, n)
    y = y[:, 0]
    yc, base_c, cand_c = _classification(rng, n)
    cases = [("rmse", "regression", y, _values(b), _values(c)), ("r2", "regression", y, _values(b), _values(c)),
             ("ece", "classification", yc, base_c, cand_c)]
    for name, task, yy, base, cand in cases:
        m = compare(name, base=base, cand=cand, agreement=NO_AGREEMENT, y=yy, task=task, confidence=CONF,
                    bootstrap=NEW, seed=1, with_interval=True)
        assert m.delta_interval.method == "bootstrap" and len(m.evidence["delta_grid"]) == 25
        fn, spec = get_metric(name).fn, get_metric(name)
        order = sample_order(base, cand, yy, None, *_unordered(spec, base, cand))
        old = _old_delta(lambda idx: fn(cand, yy, idx), lambda idx: fn(base, yy, idx), n, order)
        # the new distribution, read back from the judge's grid (its 2.5% and 97.5% levels)
        grid = m.evidence["delta_grid"]
        assert (grid[6], grid[-7]) == pytest.approx((m.delta_interval.low, m.delta_interval.high))
        sd = float(np.std(old))
        o = percentile_interval(old, CONF)
        assert abs(o.low - m.delta_interval.low) <= 0.45 * sd and abs(o.high - m.delta_interval.high) <= 0.45 * sd, \
            (name, o, m.delta_interval, sd)


@pytest.mark.parametrize("name", ["accuracy", "f1_macro", "log_loss", "ece", "rmse"])
def test_gaps_agree_with_the_index_bootstrap(name):
    rng = np.random.default_rng(12)
    n = 500
    if name == "rmse":
        y, b, c = _regression(rng, n)
        y, base, cand = y[:, 0], _values(b), _values(c)
    else:
        y, base, cand = _classification(rng, n)
    groups = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    grouping, eligible = _grouping(groups), [0, 1, 2]
    new_c, new_b, _ = _gap_distributions(name, base, cand, y, grouping, eligible, bootstrap=NEW, seed=3)
    fn = get_metric(name).fn
    order = np.arange(n)  # the data are exchangeable: any fixed order is a valid index bootstrap
    old = _old_delta(_gap_stat(fn, cand, y, grouping, eligible), _gap_stat(fn, base, y, grouping, eligible), n, order)
    _assert_agree(old, new_c - new_b)


@pytest.mark.parametrize("name", ["demographic_parity_difference", "equalized_odds_difference"])
def test_fairness_agrees_with_the_index_bootstrap(name):
    rng = np.random.default_rng(13)
    n = 600
    y, base, cand = _binary(rng, n)
    grouping = _grouping(rng.choice(3, n, p=[0.5, 0.35, 0.15]))
    new_c, new_b = _fairness_distributions(name, base, cand, y, grouping, bootstrap=NEW, seed=3)
    old = _old_delta(_fairness_stat(name, cand, y, grouping), _fairness_stat(name, base, y, grouping), n,
                     np.arange(n))
    _assert_agree(old, new_c - new_b)


def test_permuting_the_samples_changes_no_bit():
    rng = np.random.default_rng(15)
    n = 300
    y, base, cand = _classification(rng, n)
    yr, b, c = _regression(rng, n)
    yb, bin_b, bin_c = _binary(rng, n)
    groups = rng.integers(0, 3, n)

    def measured(order):
        fast._SHARED_CACHE.clear()
        kw = dict(agreement=NO_AGREEMENT, confidence=CONF, bootstrap=200, seed=1, with_interval=True)
        out = [compare("ece", base=base.take(order), cand=cand.take(order), y=y[order], task="classification", **kw)]
        out += [compare(name, base=_values(b[order]), cand=_values(c[order]), y=yr[order, 0], task="regression", **kw)
                for name in ("rmse", "r2")]
        g = _grouping(groups[order])
        out += [_gap_distributions(name, base.take(order), cand.take(order), y[order], g, [0, 1, 2], bootstrap=200,
                                   seed=1) for name in ("accuracy", "f1_macro", "log_loss", "ece")]
        out += [_fairness_distributions(name, bin_b.take(order), bin_c.take(order), yb[order], g, bootstrap=200,
                                        seed=1) for name in ("demographic_parity_difference",
                                                             "equalized_odds_difference")]
        return out

    first, again = measured(np.arange(n)), measured(rng.permutation(n))
    for a, b in zip(first[:3], again[:3]):  # (the observed values are sums in file order: equal to rounding)
        assert (a.delta_interval, a.candidate_interval, a.relative_interval, a.evidence) == (
            b.delta_interval, b.candidate_interval, b.relative_interval, b.evidence)
        assert math.isfinite(a.delta_interval.low)
    for a, b in zip(first[3:], again[3:]):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_gap_of_roc_auc_on_subgroups_too_small_for_delong_resamples_the_indices():
    """Fewer than fast.DELONG_MIN_PER_CLASS samples of a class in an eligible subgroup: no normal draws."""
    rng = np.random.default_rng(14)
    y, base, cand = _classification(rng, 90)
    assert _gap_distributions("roc_auc", base, cand, y, _grouping(rng.integers(0, 2, 90)), [0, 1], bootstrap=10,
                              seed=0) is None


def test_a_gap_of_roc_auc_agrees_with_the_index_bootstrap():
    """Each subgroup's (base, candidate) AUC drawn from DeLong's paired normal, subgroups independent: the
    delta of the max - min gap matches the index bootstrap's (same tolerance as the other gaps)."""
    rng = np.random.default_rng(16)
    n = 900
    y, base, cand = _classification(rng, n)
    grouping, eligible = _grouping(rng.choice(3, n, p=[0.5, 0.3, 0.2])), [0, 1, 2]
    new_c, new_b, method = _gap_distributions("roc_auc", base, cand, y, grouping, eligible, bootstrap=NEW, seed=3)
    assert method == fast.DELONG_DRAWS
    fn = get_metric("roc_auc").fn
    old = _old_delta(_gap_stat(fn, cand, y, grouping, eligible), _gap_stat(fn, base, y, grouping, eligible), n,
                     np.arange(n))
    _assert_agree(old, new_c - new_b)


def test_a_roc_auc_gap_is_measured_with_its_method_named():
    """Through measure_groupings, as a policy's `scope: gap` rule asks: the interval says how it was drawn, and
    the observed gap is the spread of the subgroups' AUCs."""
    from gate.measure.groups import measure_groupings

    rng = np.random.default_rng(17)
    n = 1_200
    y, base, cand = _classification(rng, n)
    grouping = _grouping(rng.choice(3, n, p=[0.4, 0.35, 0.25]))
    (result,) = measure_groupings([grouping], base=base, cand=cand, agreement=NO_AGREEMENT, y=y,
                                  task="classification", each={}, gaps={"roc_auc": 100}, fairness=set(),
                                  confidence=CONF, bootstrap=1000, seed=0)
    gap = result.gaps["roc_auc"]
    assert gap.delta_interval.method == fast.DELONG_DRAWS
    fn = get_metric("roc_auc").fn
    aucs = [fn(cand, y, grouping.members(j)) for j in range(3)]
    assert gap.candidate == pytest.approx(max(aucs) - min(aucs))
    assert gap.delta_interval.low < gap.delta < gap.delta_interval.high


# --------------------------------------------------------------------------
# coverage by simulation
# --------------------------------------------------------------------------

def _covered(deltas: np.ndarray, truth: float) -> np.ndarray:
    """Per data set (columns), whether the 95% percentile interval of its resamples (rows) holds the truth."""
    low, high = np.quantile(deltas, [0.025, 0.975], axis=0)
    return (low <= truth) & (truth <= high)


def _assert_coverage(coverage: float, sims: int):
    # within 1 point of nominal, up to 2 simulation standard errors (seeded figures in the module docstring)
    assert abs(coverage - CONF) <= 0.01 + 2 * _se(CONF, sims), coverage


_SIMS_POISSON = 600


def test_rmse_and_r2_cover_the_true_difference():
    """Normal targets N(3, 2^2), base error N(0, 0.5^2), candidate error 1.1 x base + N(0, 0.2^2):
    rmse 0.5 -> sqrt(0.3425), r2 1 - 0.25/4 -> 1 - 0.3425/4."""
    n, sims = 400, _SIMS_POISSON
    rng = np.random.default_rng(21)
    y = rng.normal(3.0, 2.0, n * sims)
    e = rng.normal(0.0, 0.5, n * sims)
    base, cand = _values(y + e), _values(y + 1.1 * e + rng.normal(0.0, 0.2, n * sims))
    columns_b, columns_c = quality.moment_columns("r2", base, y), quality.moment_columns("r2", cand, y)
    means, _ = fast.grouped_means(np.concatenate([columns_b, columns_c], axis=1), np.repeat(np.arange(sims), n),
                                  sims, n_resamples=300, seed=5)
    truth = {"rmse": math.sqrt(0.3425) - 0.5, "r2": (0.25 - 0.3425) / 4.0}
    for name, columns in (("rmse", [0]), ("r2", [0, 1, 2])):  # rmse reads the squared errors of r2's columns
        deltas = quality.from_moments(name, means[..., [3 + j for j in columns]]) - quality.from_moments(
            name, means[..., columns])
        _assert_coverage(float(_covered(deltas, truth[name]).mean()), sims)


def test_ece_covers_the_true_difference():
    """Confidences near the centres of three bins (+-0.025, the candidate's a further +-0.005: the same bin);
    the base right with probability confidence - 0.12, the candidate its answer flipped 10% of the time:
    ECE 0.12 and 0.2 x E confidence - 0.004 = 0.149333 (every bin off in the same direction)."""
    n, sims = 300, _SIMS_POISSON
    rng = np.random.default_rng(22)
    centres = (np.array([9, 11, 13]) + 0.5) / 15
    conf_b = rng.choice(centres, n * sims) + rng.uniform(-0.025, 0.025, n * sims)
    conf_c = conf_b + rng.uniform(-0.005, 0.005, n * sims)
    right_b = rng.random(n * sims) < conf_b - 0.12
    right_c = right_b ^ (rng.random(n * sims) < 0.1)
    y = np.zeros(n * sims, dtype=np.int64)
    cand, base, _ = fast.ece_distributions(y, (~right_b).astype(np.int64), conf_b, (~right_c).astype(np.int64),
                                           conf_c, n_resamples=300, seed=6, groups=np.repeat(np.arange(sims), n),
                                           n_groups=sims)
    truth = 0.2 * centres.mean() - 0.004 - 0.12
    _assert_coverage(float(_covered(cand - base, truth).mean()), sims)


def _subgroup_population():
    """p[g, y, base, candidate] of binary predictions in two subgroups (shares 0.6, 0.4): positives 0.7 / 0.3,
    the base's TPR 0.85 / 0.75 and FPR 0.05 / 0.35, the candidate the base's prediction flipped 10% / 15%
    of the time."""
    p = np.zeros((2, 2, 2, 2))
    for g, (share, pos, tpr, fpr, flip) in enumerate(((0.6, 0.7, 0.85, 0.05, 0.10), (0.4, 0.3, 0.75, 0.35, 0.15))):
        for t, p_t in ((1, pos), (0, 1 - pos)):
            rate = tpr if t else fpr
            for b, p_b in ((1, rate), (0, 1 - rate)):
                p[g, t, b, b] = share * p_t * p_b * (1 - flip)
                p[g, t, b, 1 - b] = share * p_t * p_b * flip
    return p


def _population_differences(p):
    """Accuracy gap, parity difference and equalized-odds difference of the candidate minus the base's."""
    out = {}
    for model, axis in (("base", 3), ("cand", 2)):
        q = p.sum(axis=axis)  # [g, y, prediction]
        size = q.sum(axis=(1, 2))
        acc = (q[:, 0, 0] + q[:, 1, 1]) / size
        sel = q[:, :, 1].sum(axis=1) / size
        tpr, fpr = q[:, 1, 1] / q[:, 1].sum(axis=1), q[:, 0, 1] / q[:, 0].sum(axis=1)
        spread = lambda v: v.max() - v.min()  # noqa: E731
        out[model] = np.array([spread(acc), spread(sel), max(spread(tpr), spread(fpr))])
    return out["cand"] - out["base"]


_SIMS_CELLS = 400


def test_subgroup_cells_cover_the_true_differences():
    p = _subgroup_population()
    truth = _population_differences(p)
    flat, n = p.reshape(-1), 1500
    rng = np.random.default_rng(23)
    hits = np.zeros(3)
    for i in range(_SIMS_CELLS):
        cells = np.repeat(np.arange(16), rng.multinomial(n, flat))
        g, y, b, c = cells // 8, (cells // 4) % 2, (cells // 2) % 2, cells % 2
        counts = fast.cell_bootstrap(y, b, c, n_resamples=300, seed=i, groups=g, n_groups=2)
        gap = [fast.spread(tp.sum(axis=-1) / counts.support.sum(axis=-1)) for tp in (counts.tp_cand, counts.tp_base)]
        deltas = [gap[0] - gap[1]] + [np.subtract(*fairness_from_counts(name, counts)) for name in
                                      ("demographic_parity_difference", "equalized_odds_difference")]
        hits += [bool(_covered(d[:, None], t)[0]) for d, t in zip(deltas, truth)]
    for coverage in hits / _SIMS_CELLS:
        _assert_coverage(coverage, _SIMS_CELLS)


def test_a_roc_auc_gap_near_an_auc_of_1_keeps_its_upper_end():
    """Two subgroups of 20 positives and 20 negatives, binormal AUCs 0.990 and 0.802 (true gap 0.188): the
    draws are made on the logit scale, so the 97.5% end of the gap still covers the truth about 97.5% of the
    time (draws clipped at 1 on the AUC scale covered it 93% of the time, the index bootstrap 96%)."""
    from statistics import NormalDist

    phi = NormalDist().cdf
    per, reps = 20, 1500
    truth = phi(3.3 / 2 ** 0.5) - phi(1.2 / 2 ** 0.5)
    rng = np.random.default_rng(31)
    codes = np.repeat([0, 1], 2 * per)
    y = np.tile(np.r_[np.ones(per), np.zeros(per)].astype(np.int64), 2)
    covered = drawn = 0
    for r in range(reps):
        s = np.r_[rng.normal(3.3, 1, per), rng.normal(0, 1, per), rng.normal(1.2, 1, per), rng.normal(0, 1, per)]
        p = 1 / (1 + np.exp(-s))
        out = fast.grouped_delong_draws(y, np.stack([1 - p, p], axis=1), np.stack([1 - p, p], axis=1), codes, [0, 1],
                                        n_resamples=1000, seed=r)
        if out is None:  # an AUC of exactly 1: left to index resampling
            continue
        drawn += 1
        covered += truth <= np.quantile(fast.spread(out[0]), 0.975)
    assert drawn >= 0.6 * reps  # the others have an AUC of exactly 1 in a subgroup
    assert covered / drawn >= 0.955, covered / drawn


def test_a_roc_auc_gap_where_the_candidate_moves_a_few_samples_resamples_the_indices():
    """Review 4: two subgroups of 300 positives and 300 negatives; the candidate sends B's 3 highest-scored
    positives to the bottom. The paired difference of influences is then a few large values: skewed, so no
    normal draws (they put the upper end of the gap about 0.2 sd too low)."""
    rng = np.random.default_rng(32)
    per = 300
    codes = np.repeat([0, 1], 2 * per)
    y = np.tile(np.r_[np.ones(per), np.zeros(per)].astype(np.int64), 2)
    s = np.r_[rng.normal(1.5, 1, per), rng.normal(0, 1, per), rng.normal(1.2, 1, per), rng.normal(0, 1, per)]
    moved = s.copy()
    top = 2 * per + np.argsort(s[2 * per:3 * per])[-3:]
    moved[top] = -10.0
    probs = lambda v: np.stack([1 - 1 / (1 + np.exp(-v)), 1 / (1 + np.exp(-v))], axis=1)  # noqa: E731
    assert fast.grouped_delong_draws(y, probs(s), probs(moved), codes, [0, 1], n_resamples=100, seed=0) is None
    noisy = s + rng.normal(0, 0.3, s.size)  # every sample moved a little: drawn
    assert fast.grouped_delong_draws(y, probs(s), probs(noisy), codes, [0, 1], n_resamples=100, seed=0) is not None
