"""The normal limit of the Poisson bootstrap of per-sample means (fast.normal_limit_holds, fast.normal_limit).

Where the sample vouches for it (10,000 samples or more, every column's skewness and kurtosis terms under
0.05 sd), the means are drawn from N(mean, plug-in covariance / n) instead of 1,000 x n Poisson weights. The
claims checked here:
- where the criterion holds, the normal limit's interval ends are the bootstrap's up to the bootstrap's own
  Monte Carlo error;
- where it does not (a few large values among many zeros), the two differ by more than that, and the gate
  keeps the bootstrap;
- the normal-limit intervals cover the true paired difference at the nominal rate, on each side, for
  skewed populations that pass the criterion (simulation with known population means).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from gate.measure import fast
from gate.measure.stats import percentile_interval

Z975 = NormalDist().inv_cdf(0.975)


def _skewed_pair(rng: np.random.Generator, n: int, shape: float = 1.0):
    """Paired per-sample values like two models' log losses: the base's and the difference both
    gamma-distributed (skewness 2 / sqrt(shape)); the mean difference is shape x 0.01 - 0.005."""
    base = rng.gamma(shape, 0.3, size=n)
    return base, base + rng.gamma(shape, 0.01, size=n) - 0.005


def _draws(base, cand, *, resamples, seed):
    key = (object(),)  # a fresh key: the shared cache never answers
    return fast.shared_mean_distributions(key, {"log_loss": (cand, base)}, n_resamples=resamples,
                                          seed=seed)["log_loss"]


def test_the_criterion_holds_for_skewed_but_large_samples_and_not_below_its_floor():
    rng = np.random.default_rng(1)
    base, cand = _skewed_pair(rng, 20_000)
    columns = np.stack([base, cand - base], axis=1)
    assert fast.normal_limit_holds(columns, [(0, 1)])
    assert _draws(base, cand, resamples=200, seed=1).method == fast.NORMAL_LIMIT
    small = columns[:fast.NORMAL_FROM - 1]
    assert not fast.normal_limit_holds(small, [(0, 1)])
    assert _draws(small[:, 0], small[:, 0] + small[:, 1], resamples=200, seed=1).method == fast.POISSON


def test_where_it_holds_the_ends_are_the_bootstraps_within_its_monte_carlo_error():
    rng = np.random.default_rng(2)
    base, cand = _skewed_pair(rng, 20_000)
    columns = np.stack([base, cand - base], axis=1)
    columns = columns[np.lexsort(columns.T[::-1])]
    normal = fast.normal_limit(columns, n_resamples=20_000, seed=3)
    boot = fast.mean_bootstrap(columns, n_resamples=4_000, seed=4)
    for j in range(2):
        sd = boot[:, j].std()
        for q in (0.025, 0.975):
            gap = abs(np.quantile(normal[:, j], q) - np.quantile(boot[:, j], q)) / sd
            # Monte Carlo error of a 2.5% end from 4,000 resamples: ~0.04 sd
            assert gap < 0.12, f"column {j}, quantile {q}: {gap:.3f} sd"


def test_where_it_fails_the_two_differ_and_the_bootstrap_is_kept():
    """Many zeros and a few large values (a candidate that breaks badly on 0.03% of the samples): the
    bootstrap's distribution of the mean is visibly skewed; the normal limit would misplace its ends."""
    n = 10_000
    diff = np.zeros(n)
    diff[:3] = 100.0
    base = np.random.default_rng(5).gamma(1.0, 0.3, size=n)
    columns = np.stack([base, diff], axis=1)
    assert fast.cornish_fisher_gap(columns)[1] > fast.NORMAL_TOLERANCE
    assert not fast.normal_limit_holds(columns, [(0, 1)])
    assert _draws(base, base + diff, resamples=200, seed=1).method == fast.POISSON
    ordered = columns[np.lexsort(columns.T[::-1])]
    boot = fast.mean_bootstrap(ordered, n_resamples=4_000, seed=6)[:, 1]
    normal = fast.normal_limit(ordered, n_resamples=20_000, seed=7)[:, 1]
    low_gap = (np.quantile(normal, 0.025) - np.quantile(boot, 0.025)) / boot.std()
    assert low_gap < -0.15, f"the normal limit's lower end is only {low_gap:.3f} sd off the bootstrap's"


def test_an_identical_candidate_gives_an_exact_zero_difference():
    rng = np.random.default_rng(8)
    base, _ = _skewed_pair(rng, 12_000)
    draws = _draws(base, base.copy(), resamples=500, seed=2)
    assert draws.method == fast.NORMAL_LIMIT
    assert np.all(draws.cand - draws.base == 0.0)


def test_the_same_samples_in_another_order_give_the_same_bits():
    rng = np.random.default_rng(9)
    base, cand = _skewed_pair(rng, 15_000)
    perm = rng.permutation(base.size)
    a = _draws(base, cand, resamples=300, seed=5)
    b = _draws(base[perm], cand[perm], resamples=300, seed=5)
    assert a.method == b.method == fast.NORMAL_LIMIT
    assert np.array_equal(a.cand, b.cand) and np.array_equal(a.base, b.base)


@pytest.mark.parametrize("shape", [1.0, 0.5])  # skewness 2 and 2.8 per sample
def test_coverage_of_the_paired_difference_is_nominal_on_each_side(shape):
    """600 data sets of 10,000 samples from a population whose mean difference is known exactly
    (shape x 0.01 - 0.005): the 95% interval of the difference misses below and above about 2.5% of the
    time each. With 600 runs a side's rate has a standard error of 0.64 points: allowed 0 to 5.5%."""
    rng = np.random.default_rng(10 + int(shape * 4))
    true_delta = shape * 0.01 - 0.005
    low_miss = high_miss = normal = 0
    runs = 600
    for i in range(runs):
        base, cand = _skewed_pair(rng, fast.NORMAL_FROM, shape)
        draws = _draws(base, cand, resamples=1000, seed=i)
        normal += draws.method == fast.NORMAL_LIMIT
        iv = percentile_interval(draws.cand - draws.base, 0.95, draws.method)
        low_miss += iv.low > true_delta
        high_miss += iv.high < true_delta
    assert normal >= 0.9 * runs, f"the normal limit was used in {normal} of {runs} runs"
    assert low_miss / runs <= 0.055 and high_miss / runs <= 0.055, (low_miss, high_miss)
    assert (low_miss + high_miss) / runs <= 0.07


def test_a_measured_log_loss_names_its_method():
    """An end-to-end measurement: log_loss on 12,000 samples of a skewed but well-behaved pair is drawn from
    the normal limit, and its interval says so."""
    from gate.measure.compare import compare
    from gate.predictions import Predictions

    rng = np.random.default_rng(11)
    n, k = 12_000, 4
    y = rng.integers(0, k, size=n)

    def model(noise):
        logits = rng.normal(size=(n, k)) * noise
        logits[np.arange(n), y] += 1.5
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        true = p[np.arange(n), y]
        return Predictions(kind="probabilities", pred=p.argmax(axis=1), values=None, true_prob=true,
                           true_rank=(p > true[:, None]).sum(axis=1).astype(np.int32), probs=None, n_classes=k,
                           top_prob=p.max(axis=1), sum_sq_prob=(p * p).sum(axis=1))

    base, cand = model(1.0), model(1.1)
    m = compare("log_loss", base=base, cand=cand, y=y, agreement=None, task="classification", confidence=0.95,
                bootstrap=1000, seed=0, with_interval=True)
    assert m.delta_interval.method == fast.NORMAL_LIMIT
    assert m.delta_interval.low < m.delta < m.delta_interval.high
    assert m.relative_interval.method == f"{fast.NORMAL_LIMIT}-ratio"
    se = np.std(-np.log(cand.true_prob) + np.log(base.true_prob)) / math.sqrt(n)
    width = m.delta_interval.high - m.delta_interval.low
    assert abs(width / (2 * Z975 * se) - 1) < 0.08, width


@pytest.mark.parametrize("with_nan", [False, True])
def test_the_row_order_depends_on_the_rows_values_only(with_nan):
    """fast.row_order (one argsort of a projection, or a lexsort when a value is NaN): the same rows, shuffled,
    come out as the same sequence of rows, ties and repeated rows included."""
    rng = np.random.default_rng(12)
    rows = rng.integers(0, 4, size=(3_000, 3)).astype(np.float64)  # many exact repeats
    if with_nan:
        rows[::7, 1] = np.nan
    for _ in range(3):
        shuffled = rows[rng.permutation(len(rows))]
        a, b = rows[fast.row_order(rows)], shuffled[fast.row_order(shuffled)]
        assert np.array_equal(a, b, equal_nan=True)


# --------------------------------------------------------------------------
# sums per code (ece's bins, subgroups' means): normal codes drawn, the others weighted
# --------------------------------------------------------------------------

def _codes_case(rng, big=20_000, small=300):
    """Two large codes (normal) and a small one (weights): a column like ece's (correct - confidence)."""
    codes = np.r_[np.zeros(big, int), np.ones(big // 2, int), np.full(small, 2)]
    values = (rng.random(codes.size) < 0.8) - rng.uniform(0.5, 1.0, codes.size)
    return values[:, None], codes


def test_sums_of_a_large_code_are_normal_and_of_few_or_wild_rows_are_not():
    rng = np.random.default_rng(20)
    regular = np.c_[np.ones(5_000), rng.normal(size=5_000)]
    assert fast.sums_normal(regular)
    assert not fast.sums_normal(regular[:fast.SUMS_NORMAL_FROM - 1])
    wild = regular.copy()
    wild[:3, 1] = 500.0  # three rows carry most of the sum of squares
    assert not fast.sums_normal(wild)


def test_a_normal_code_matches_its_weights_and_a_small_code_keeps_them_exactly():
    rng = np.random.default_rng(21)
    values, codes = _codes_case(rng)
    present, sums, totals, method = fast.poisson_sums(values, codes, n_resamples=4_000, seed=3)
    assert list(present) == [0, 1, 2] and method == fast.PARTLY_NORMAL
    # the same sums from weights alone (every code small enough to stay on weights)
    ordered = np.lexsort([values[:, 0], codes])
    rows = np.c_[np.ones(codes.size), values[ordered]]
    starts = np.flatnonzero(np.r_[True, codes[ordered][1:] != codes[ordered][:-1]])
    weighted = fast._weighted_sums(rows, starts, np.random.Generator(np.random.PCG64(4)), 4_000)
    for code in (0, 1):
        for got, want in ((sums[:, code, 0], weighted[:, code, 1]), (totals[:, code], weighted[:, code, 0])):
            sd = want.std()
            assert abs(got.mean() - want.mean()) < 0.1 * sd and got.std() == pytest.approx(sd, rel=0.06)
            for q in (0.025, 0.975):
                assert abs(np.quantile(got, q) - np.quantile(want, q)) < 0.15 * sd
    # the small code: the first draws of the generator are its weights, as if it were alone
    small_rows = rows[starts[2]:]
    alone = fast._weighted_sums(small_rows, np.array([0]), np.random.Generator(np.random.PCG64(3)), 4_000)
    assert np.array_equal(sums[:, 2, 0], alone[:, 0, 1]) and np.array_equal(totals[:, 2], alone[:, 0, 0])


def test_sums_per_code_do_not_depend_on_the_order_of_the_samples():
    rng = np.random.default_rng(22)
    values, codes = _codes_case(rng)
    perm = rng.permutation(codes.size)
    a = fast.poisson_sums(values, codes, n_resamples=500, seed=5)
    b = fast.poisson_sums(values[perm], codes[perm], n_resamples=500, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_ece_from_mixed_sums_agrees_with_the_weights():
    """ece on 30,000 samples of a recalibrated candidate: its heavy bins drawn from the normal, its sparse bins
    weighted; the interval of the difference agrees with the all-weights one."""
    rng = np.random.default_rng(23)
    n = 30_000
    y = rng.integers(0, 2, n)
    conf_b = np.clip(rng.beta(8, 2, n), 0.5, 1.0)
    conf_c = np.clip(conf_b + rng.normal(0, 0.03, n), 0.5, 1.0)
    pred_b = np.where(rng.random(n) < conf_b, y, 1 - y)
    pred_c = pred_b.copy()  # the same answers, recalibrated: a difference without jumps (see the next test)
    columns, codes = fast.ece_columns(y, pred_b, conf_b, pred_c, conf_c)
    columns = np.asarray(columns, dtype=np.float64).reshape(n, -1)
    drawn = [fast.sums_normal(np.c_[np.ones(np.sum(codes == k)), columns[codes == k]], ((1, 2),))
             for k in np.unique(codes)]
    assert 3 <= sum(drawn) < len(drawn), "the case must mix normal and weighted bins"
    cand, base, method = fast.ece_distributions(y, pred_b, conf_b, pred_c, conf_c, n_resamples=4_000, seed=6)
    assert method == fast.PARTLY_NORMAL
    saved = fast.SUMS_NORMAL_FROM
    try:
        fast.SUMS_NORMAL_FROM = n + 1  # every bin on weights: the method before
        cand_w, base_w, method_w = fast.ece_distributions(y, pred_b, conf_b, pred_c, conf_c, n_resamples=4_000,
                                                          seed=7)
        assert method_w == fast.POISSON
    finally:
        fast.SUMS_NORMAL_FROM = saved
    delta, delta_w = cand - base, cand_w - base_w
    sd = delta_w.std()
    for q in (0.025, 0.975):
        assert abs(np.quantile(delta, q) - np.quantile(delta_w, q)) < 0.2 * sd, q
    assert delta.std() == pytest.approx(sd, rel=0.08)


def test_an_offset_does_not_hide_a_skewed_spread_from_the_sums_check():
    """Every value 1000 plus a rare spike: each raw Poisson sum looks normal (the offset dominates it), but
    the mean's error is the sum of the centred values, which is as skewed as the spikes: weights, not draws."""
    rng = np.random.default_rng(24)
    spikes = np.where(rng.random(20_000) < 0.001, 50.0, 0.0)
    rows = np.c_[np.ones(20_000), 1000.0 + spikes]
    assert np.all(fast._power_sum_gap(rows, 3.0) <= fast.NORMAL_TOLERANCE)  # the raw sums alone would pass
    assert not fast.sums_normal(rows)
    assert fast.sums_normal(np.c_[np.ones(20_000), 1000.0 + rng.normal(size=20_000)])


def test_rows_that_differ_below_the_projections_rounding_are_ordered_by_value():
    """Review 3: a column near 1e12 with exact ties beside one that differs by 1e-6 (squared errors in large
    units beside a small kl): distinct rows tie on the projection, so without the lexsort fallback a shuffle of
    the samples changed which row got which weight, and the draws."""
    rng = np.random.default_rng(3)
    n = 3_000  # under NORMAL_FROM: Poisson weights, where the order matters
    big = np.round(rng.uniform(0.5, 1.5, n), 2) * 1e12
    kl = np.round(rng.uniform(0, 1e-3, n), 6)

    def draws(p):
        out = fast.shared_mean_distributions((object(),), {"rmse": (big[p], big[p]), "kl_divergence": (kl[p], None)},
                                             n_resamples=300, seed=1)
        return out["kl_divergence"].cand

    first = draws(np.arange(n))
    for _ in range(3):
        assert np.array_equal(draws(rng.permutation(n)), first)


@pytest.mark.parametrize("offset", [0.0, 1e5, 1e8])
def test_a_normal_code_keeps_its_spread_under_a_large_common_offset(offset):
    """Errors of offset + N(0, 1) in one code of 5,000 rows: the resampled mean's spread is sd / sqrt(n),
    whatever the offset (factoring raw second moments lost it in rounding from about 1e5 on)."""
    rng = np.random.default_rng(26)
    n = 5_000
    values = offset + rng.standard_normal(n)
    codes = np.zeros(n, dtype=np.int64)
    drawn = fast.poisson_sums(values[:, None], codes, n_resamples=4_000, seed=8)
    assert drawn.method == fast.NORMAL_LIMIT
    means = drawn.sums[:, 0, 0] / drawn.totals[:, 0]
    assert np.std(means) == pytest.approx(np.std(values) / math.sqrt(n), rel=0.05)


def test_the_normal_limit_keeps_a_small_column_beside_large_ones():
    """A regression candidate's columns as mae, rmse and r2 stack them (targets near 3e5, errors near 3e4, the
    candidate 100 off the base): mae's paired difference (sd ~70) sits beside squared centred targets
    (variance ~1e20) and a repeated column. Its resampled mean keeps its own spread, sd / sqrt(n) (factoring the
    unscaled covariance gave 1.9x that: rounding of the largest variance)."""
    rng = np.random.default_rng(0)
    n = 12_000
    y = 3e5 + 1e5 * rng.standard_normal(n)
    base = (y + 3e4 * rng.standard_normal(n)).astype(np.float32)
    cand = (base + 100 * rng.standard_normal(n)).astype(np.float32)
    eb, ec = np.abs(base - y), np.abs(cand - y)
    cy = y - y.mean()
    columns = np.stack([eb, ec - eb, eb ** 2, ec ** 2 - eb ** 2, eb ** 2, cy, cy ** 2], axis=1)
    draws = fast.normal_limit(columns, n_resamples=4_000, seed=1)
    assert np.std(draws[:, 1]) == pytest.approx(np.std(ec - eb) / math.sqrt(n), rel=0.06)


def test_a_few_extra_mistakes_keep_ece_on_weights():
    """Review 4: 10,000 samples at confidence 0.9, the candidate wrong on 3 more of them. Each model's column
    alone looks normal, but the difference judged is a count of 3 jumps: the weights are kept, and the upper
    end is the bootstrap's (the normal draws put it 9% too low: a pass at a bound between the two)."""
    n = 10_000
    y = np.zeros(n, dtype=np.int64)
    conf = np.full(n, 0.9)
    pred_b = np.where(np.arange(n) % 10 == 0, 1, 0)  # 90% right, as calibrated
    pred_c = pred_b.copy()
    pred_c[1:4] = 1  # three more mistakes
    cand, base, method = fast.ece_distributions(y, pred_b, conf, pred_c, conf, n_resamples=2_000, seed=3)
    assert method == fast.POISSON


def test_a_gap_of_means_checks_the_candidates_difference_from_the_base():
    """Review 4: mae by subgroup, the candidate the base plus 1000 on 3 rows of one subgroup of 3,000. Each
    model's column passes the check alone; their difference (what the gap's delta reads) does not."""
    rng = np.random.default_rng(28)
    n = 3_000
    base = np.abs(600 + 100 * rng.standard_normal(n))
    cand = base.copy()
    cand[:3] += 1000.0
    rows = np.c_[np.ones(n), base, cand]
    assert fast.sums_normal(rows)  # alone: normal
    assert not fast.sums_normal(rows, ((1, 2),))
    drawn = fast.poisson_sums(np.c_[base, cand], np.zeros(n, dtype=np.int64), n_resamples=200, seed=1,
                              pairs=((0, 1),))
    assert drawn.method == fast.POISSON


@pytest.mark.parametrize("scale", [1e-170, 1.0, 1e150])
def test_the_sums_keep_their_spread_at_any_magnitude(scale):
    """Review 4: values near 1e-170 underflowed the power sums to 0, the code passed as normal with no spread
    (a zero-width interval: a pass). Scaled before squaring, the spread is the same at every magnitude."""
    rng = np.random.default_rng(29)
    n = 5_000
    values = scale * (1.0 + rng.standard_normal(n))
    drawn = fast.poisson_sums(values[:, None], np.zeros(n, dtype=np.int64), n_resamples=2_000, seed=2)
    means = drawn.sums[:, 0, 0] / drawn.totals[:, 0]
    assert np.std(means / scale) == pytest.approx(np.std(values / scale) / math.sqrt(n), rel=0.08)


def test_the_delong_pool_is_made_again_in_a_forked_child():
    """Review 4: a fork copies the two sorting threads' pool but not the threads; a child's DeLong waited
    forever. The child must finish (it gets its own pool)."""
    import multiprocessing

    rng = np.random.default_rng(30)
    y = rng.integers(0, 10, 30_000)
    probs = rng.dirichlet(np.ones(10), size=30_000)
    first = fast.auc_components(y, probs)[0]  # the parent's pool exists now
    assert fast._POOL
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_child_auc, (y, probs))
        assert result.get(timeout=60) == first


def _child_auc(y, probs):
    return fast.auc_components(y, probs)[0]


def test_r2s_interval_is_the_same_for_a_shuffled_file():
    """Review 5: r2's columns centred the target by its mean in file order, so a shuffled file moved r2's interval
    in the 13th digit; the mean is now taken over the sorted target."""
    from gate.measure.compare import compare
    from gate.predictions import Predictions

    rng = np.random.default_rng(4)
    n = 12_000
    y = rng.normal(3e3, 50, n)
    base = y + rng.normal(0, 5, n)
    cand = base + rng.normal(0, 1, n)

    def values(v):
        return Predictions(kind="values", pred=None, values=v[:, None], true_prob=None, true_rank=None, probs=None,
                           n_classes=None)

    def interval(p):
        fast.clear_caches()
        m = compare("r2", base=values(base[p]), cand=values(cand[p]), agreement=None, y=y[p], task="regression",
                    confidence=0.95, bootstrap=500, seed=0, with_interval=True)
        return m.delta_interval, m.candidate_interval, m.evidence["delta_grid"]

    first = interval(np.arange(n))
    for _ in range(3):
        assert interval(rng.permutation(n)) == first
