"""Tests for gate.measure.stats: reference values, brute-force checks and simulations."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from gate.measure import stats as st
from gate.measure.stats import (
    Interval,
    paired_bootstrap_interval,
    paired_proportion_diff_interval,
    samples_to_decide,
    samples_to_decide_from_interval,
    wilson_interval,
    z_two_sided,
)

# --------------------------------------------------------------------------
# z and Interval
# --------------------------------------------------------------------------


def test_z_two_sided_reference_values() -> None:
    assert z_two_sided(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_two_sided(0.90) == pytest.approx(1.644854, abs=1e-6)
    assert z_two_sided(0.99) == pytest.approx(2.575829, abs=1e-6)
    for conf in (0.5, 0.8, 0.95, 0.999):
        assert z_two_sided(conf) == pytest.approx(sps.norm.ppf(0.5 + conf / 2), rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_z_two_sided_rejects_bad_confidence(bad: float) -> None:
    with pytest.raises(ValueError):
        z_two_sided(bad)


def test_interval_is_frozen_kw_only_and_serialises() -> None:
    iv = Interval(low=-0.1, high=0.2, method="tango")
    assert iv.to_dict() == {"low": -0.1, "high": 0.2, "method": "tango"}
    with pytest.raises(FrozenInstanceError):
        iv.low = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Interval(-0.1, 0.2, "tango")  # type: ignore[misc]


def test_module_does_not_import_scipy() -> None:
    # Start-up time: stats.py must stay numpy + stdlib only (plus the Interval type it re-exports).
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(st))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module if node.module.startswith("gate") else node.module.split(".")[0])
    assert "scipy" not in imported
    assert imported <= {"__future__", "math", "collections", "dataclasses", "statistics", "numpy", "gate.intervals"}


# --------------------------------------------------------------------------
# Tango interval
# --------------------------------------------------------------------------


def _loglik(x: float, b: int, c: int, n: int, delta: float) -> float:
    m = n - b - c
    total = 0.0
    # 0 * log(0) = 0: zero counts contribute nothing even at the boundary.
    for count, prob in ((b, x), (c, x + delta), (m, 1.0 - 2.0 * x - delta)):
        if count:
            if prob <= 0.0:
                return -math.inf
            total += count * math.log(prob)
    return total


def _brute_force_mle(b: int, c: int, n: int, delta: float) -> float:
    lo = max(0.0, -delta)
    hi = (1.0 - delta) / 2.0
    # Dense grid to get the right basin, then a bounded refinement around it.
    grid = np.linspace(lo, hi, 2001)
    vals = np.array([_loglik(float(x), b, c, n, delta) for x in grid])
    i = int(np.argmax(vals))
    a, z = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(lambda x: -_loglik(x, b, c, n, delta),
                                   bounds=(a, z), method="bounded",
                                   options={"xatol": 1e-12})
    best = float(res.x) if -res.fun >= vals[i] else float(grid[i])
    return best


TABLES = [
    (16, 6, 161), (6, 16, 161), (3, 0, 50), (0, 3, 50), (0, 0, 30), (10, 10, 20),
    (20, 0, 20), (0, 20, 20), (5, 5, 100), (40, 20, 160), (1, 0, 1), (7, 2, 9),
    (25, 40, 1000),
]


@pytest.mark.parametrize("b,c,n", TABLES)
def test_restricted_mle_matches_brute_force(b: int, c: int, n: int) -> None:
    for delta in np.linspace(-0.98, 0.98, 25):
        delta = float(delta)
        lo, hi = max(0.0, -delta), (1.0 - delta) / 2.0
        x = st._tango_restricted_mle(b, c, n, delta)
        assert lo - 1e-15 <= x <= hi + 1e-15
        x_bf = _brute_force_mle(b, c, n, delta)
        ll, ll_bf = _loglik(x, b, c, n, delta), _loglik(x_bf, b, c, n, delta)
        # Ours must be at least as good as the numeric optimum, and at the same place.
        assert ll >= ll_bf - 1e-9 * max(1.0, abs(ll_bf)), (b, c, n, delta)
        assert x == pytest.approx(x_bf, abs=1e-5), (b, c, n, delta)


@pytest.mark.parametrize("b,c,n", TABLES)
def test_score_statistic_is_decreasing(b: int, c: int, n: int) -> None:
    deltas = np.linspace(-0.999, 0.999, 400)
    zs = np.array([st._tango_z(b, c, n, float(d)) for d in deltas])
    assert np.all(np.diff(zs) <= 1e-12)


@pytest.mark.parametrize("b,c,n", TABLES)
def test_tango_ends_solve_the_score_equation(b: int, c: int, n: int) -> None:
    conf = 0.95
    z = z_two_sided(conf)
    iv = paired_proportion_diff_interval(b, c, n, conf)
    d_hat = (c - b) / n
    assert iv.method == "tango"
    assert -1.0 <= iv.low <= d_hat <= iv.high <= 1.0
    if iv.low > -1.0:
        assert st._tango_z(b, c, n, iv.low) == pytest.approx(z, abs=1e-6)
    if iv.high < 1.0:
        assert st._tango_z(b, c, n, iv.high) == pytest.approx(-z, abs=1e-6)
    # Just inside the ends the score test does not reject.
    assert abs(st._tango_z(b, c, n, iv.low + 1e-6)) <= z
    assert abs(st._tango_z(b, c, n, iv.high - 1e-6)) <= z


def test_tango_published_example_cavo_2012() -> None:
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables"
    # (2017), ch. 8: Cavo et al. (2012), table [[59, 6], [16, 80]], N = 161,
    # estimate (6 - 16)/161 = -0.0621, Tango 95% CI -0.1240 to -0.0054.
    # Their n12 = 6 is our c and n21 = 16 our b.
    iv = paired_proportion_diff_interval(16, 6, 161, 0.95)
    assert iv.low == pytest.approx(-0.1240, abs=5e-5)
    assert iv.high == pytest.approx(-0.0054, abs=5e-5)


def test_tango_no_discordant_pairs_has_closed_form() -> None:
    # With b = c = 0 the score equation reduces to n u / (1 - u) = z^2.
    for n in (10, 100, 5000):
        z = z_two_sided(0.95)
        u = z * z / (n + z * z)
        iv = paired_proportion_diff_interval(0, 0, n, 0.95)
        assert iv.low == pytest.approx(-u, abs=1e-9)
        assert iv.high == pytest.approx(u, abs=1e-9)


def test_tango_all_discordant_one_way_touches_the_edge() -> None:
    iv = paired_proportion_diff_interval(50, 0, 50, 0.95)
    assert iv.low == -1.0
    assert -1.0 < iv.high < -0.8
    iv = paired_proportion_diff_interval(0, 50, 50, 0.95)
    assert iv.high == 1.0
    assert 0.8 < iv.low < 1.0


@pytest.mark.parametrize("b,c,n", TABLES)
def test_tango_swap_mirrors(b: int, c: int, n: int) -> None:
    a = paired_proportion_diff_interval(b, c, n, 0.9)
    m = paired_proportion_diff_interval(c, b, n, 0.9)
    assert m.low == pytest.approx(-a.high, abs=1e-9)
    assert m.high == pytest.approx(-a.low, abs=1e-9)


def test_tango_wider_with_confidence_and_narrower_with_n() -> None:
    i90 = paired_proportion_diff_interval(12, 20, 500, 0.90)
    i95 = paired_proportion_diff_interval(12, 20, 500, 0.95)
    assert i95.low < i90.low and i95.high > i90.high
    big = paired_proportion_diff_interval(48, 80, 2000, 0.95)
    assert big.high - big.low < 0.6 * (i95.high - i95.low)


@pytest.mark.parametrize("b,c,n", [(0, 0, 0), (-1, 0, 10), (0, -1, 10), (6, 5, 10), (1, 1, -3)])
def test_tango_rejects_bad_counts(b: int, c: int, n: int) -> None:
    with pytest.raises(ValueError):
        paired_proportion_diff_interval(b, c, n, 0.95)


def test_tango_coverage_by_simulation() -> None:
    rng = np.random.default_rng(20240601)
    n, reps, conf = 200, 2000, 0.95
    # base right & cand wrong, base wrong & cand right, concordant
    probs = np.array([0.08, 0.05, 0.87])
    true_d = probs[1] - probs[0]
    tables = rng.multinomial(n, probs, size=reps)
    hits = 0
    for b, c, _ in tables:
        iv = paired_proportion_diff_interval(int(b), int(c), n, conf)
        hits += iv.low <= true_d <= iv.high
    coverage = hits / reps
    assert 0.93 <= coverage <= 0.97, coverage


def test_tango_narrower_than_independent_wald() -> None:
    # Typical compression outcome: 85% base accuracy, a few percent of samples flip.
    z = z_two_sided(0.95)
    for n, base_acc, b, c in [(1000, 0.85, 20, 25), (5000, 0.92, 60, 40), (300, 0.7, 9, 6)]:
        cand_acc = base_acc + (c - b) / n
        wald_half = z * math.sqrt(base_acc * (1 - base_acc) / n + cand_acc * (1 - cand_acc) / n)
        iv = paired_proportion_diff_interval(b, c, n, 0.95)
        assert iv.high - iv.low < 0.75 * (2 * wald_half), (n, b, c)


# --------------------------------------------------------------------------
# Wilson
# --------------------------------------------------------------------------


def test_wilson_published_values() -> None:
    # Newcombe (1998), Stat Med 17:857-872, Table I, method 3 (Wilson score).
    for k, n, lo, hi in [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                         (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]:
        iv = wilson_interval(k, n, 0.95)
        assert iv.method == "wilson"
        assert iv.low == pytest.approx(lo, abs=5e-5)
        assert iv.high == pytest.approx(hi, abs=5e-5)


def test_wilson_hand_computation() -> None:
    # Ends are the roots of (p_hat - p)^2 = z^2 p (1 - p) / n.
    k, n, conf = 7, 40, 0.9
    z = z_two_sided(conf)
    p_hat = k / n
    coeffs = [1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat]
    lo, hi = sorted(np.roots(coeffs).real)
    iv = wilson_interval(k, n, conf)
    assert iv.low == pytest.approx(lo, abs=1e-12)
    assert iv.high == pytest.approx(hi, abs=1e-12)


def test_wilson_matches_scipy() -> None:
    for k, n in [(0, 1), (1, 1), (0, 10), (10, 10), (3, 17), (500, 1000), (999, 1000), (12, 5000)]:
        for conf in (0.8, 0.95, 0.99):
            ref = sps.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
            iv = wilson_interval(k, n, conf)
            assert iv.low == pytest.approx(ref.low, abs=1e-12)
            assert iv.high == pytest.approx(ref.high, abs=1e-12)


def test_wilson_extremes_are_exact() -> None:
    assert wilson_interval(0, 37, 0.95).low == 0.0
    assert wilson_interval(37, 37, 0.95).high == 1.0


@pytest.mark.parametrize("k,n", [(0, 0), (-1, 5), (6, 5)])
def test_wilson_rejects_bad_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n, 0.95)


# --------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------


def _correlated_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n)
    cand = base + rng.normal(0.02, 0.05, n)  # near-copy, as after light compression
    return base, cand


def test_bootstrap_is_deterministic() -> None:
    base, cand = _correlated_scores(300, 1)

    def stat(idx: np.ndarray) -> float:
        return float(cand[idx].mean() - base[idx].mean())

    a = paired_bootstrap_interval(stat, 300, confidence=0.95, n_resamples=300, seed=7)
    b = paired_bootstrap_interval(stat, 300, confidence=0.95, n_resamples=300, seed=7)
    c = paired_bootstrap_interval(stat, 300, confidence=0.95, n_resamples=300, seed=8)
    assert a == b
    assert a.method == "bootstrap"
    assert (a.low, a.high) != (c.low, c.high)


def test_bootstrap_passes_valid_index_resamples() -> None:
    seen: list[np.ndarray] = []

    def stat(idx: np.ndarray) -> float:
        seen.append(idx.copy())
        return 0.0

    paired_bootstrap_interval(stat, 25, confidence=0.9, n_resamples=50, seed=3)
    assert len(seen) == 50
    for idx in seen:
        assert idx.shape == (25,)
        assert np.issubdtype(idx.dtype, np.integer)
        assert idx.min() >= 0 and idx.max() < 25
    # With replacement: some resample must repeat an index.
    assert any(np.unique(idx).size < 25 for idx in seen)


def test_bootstrap_covers_true_value_in_simulation() -> None:
    rng = np.random.default_rng(99)
    n, reps, true_diff = 80, 150, 0.3
    hits = 0
    for rep in range(reps):
        base = rng.normal(0.0, 1.0, n)
        cand = base + rng.normal(true_diff, 0.5, n)

        def stat(idx: np.ndarray, base: np.ndarray = base, cand: np.ndarray = cand) -> float:
            return float(cand[idx].mean() - base[idx].mean())

        iv = paired_bootstrap_interval(stat, n, confidence=0.9, n_resamples=300, seed=rep)
        hits += iv.low <= true_diff <= iv.high
    coverage = hits / reps
    assert 0.82 <= coverage <= 0.97, coverage


def test_paired_bootstrap_much_narrower_than_unpaired() -> None:
    n = 400
    base, cand = _correlated_scores(n, 5)

    def paired(idx: np.ndarray) -> float:
        return float(cand[idx].mean() - base[idx].mean())

    other = np.random.Generator(np.random.PCG64(123))

    def unpaired(idx: np.ndarray) -> float:
        # Base resampled independently of the candidate: the pairing is lost.
        return float(cand[idx].mean() - base[other.integers(0, n, size=n)].mean())

    p = paired_bootstrap_interval(paired, n, confidence=0.95, n_resamples=400, seed=0)
    u = paired_bootstrap_interval(unpaired, n, confidence=0.95, n_resamples=400, seed=0)
    assert (p.high - p.low) < 0.2 * (u.high - u.low)
    true_shift = float(np.mean(cand - base))
    assert p.low <= true_shift <= p.high


def test_bootstrap_drops_nan_resamples() -> None:
    values = np.random.default_rng(2).normal(size=200)

    def stat(idx: np.ndarray) -> float:
        # NaN on roughly a third of resamples (index 0 absent), like AUC with one class.
        return float(values[idx].mean()) if 0 in idx else math.nan

    iv = paired_bootstrap_interval(stat, 200, confidence=0.9, n_resamples=300, seed=0)
    assert math.isfinite(iv.low) and math.isfinite(iv.high)
    assert iv.low < values.mean() < iv.high


def test_bootstrap_mostly_nan_gives_nan_interval() -> None:
    def stat(idx: np.ndarray) -> float:
        # NaN unless index 0 is absent: about 63% NaN.
        return math.nan if 0 in idx else 1.0

    iv = paired_bootstrap_interval(stat, 200, confidence=0.9, n_resamples=300, seed=0)
    assert math.isnan(iv.low) and math.isnan(iv.high)
    assert iv.method == "bootstrap"


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap_interval(lambda idx: 0.0, 0, confidence=0.9)
    with pytest.raises(ValueError):
        paired_bootstrap_interval(lambda idx: 0.0, 10, confidence=0.9, n_resamples=0)
    with pytest.raises(ValueError):
        paired_bootstrap_interval(lambda idx: 0.0, 10, confidence=1.0)


# --------------------------------------------------------------------------
# Sample-size advice
# --------------------------------------------------------------------------


@pytest.mark.parametrize("psi,conf,expected,tol", [
    (0.02, 0.90, 1237, 2), (0.05, 0.90, 3092, 3),
    (0.02, 0.95, 1570, 3), (0.05, 0.95, 3925, 4),
])
def test_samples_to_decide_known_answers(psi: float, conf: float, expected: int, tol: int) -> None:
    got = samples_to_decide(discordant_rate=psi, observed_diff=0.0, margin=0.01, confidence=conf)
    assert got is not None
    assert abs(got - expected) <= tol


def test_samples_to_decide_formula_with_nonzero_diff() -> None:
    psi, d, margin, conf, power = 0.04, 0.003, 0.01, 0.95, 0.9
    z_a = sps.norm.ppf(1 - (1 - conf) / 2)
    z_b = sps.norm.ppf(power)
    expect = math.ceil((z_a * math.sqrt(psi) + z_b * math.sqrt(psi - d * d)) ** 2 / (margin - d) ** 2)
    got = samples_to_decide(discordant_rate=psi, observed_diff=d, margin=margin,
                            confidence=conf, power=power)
    assert got == expect


def test_samples_to_decide_edge_cases() -> None:
    # On the bound: no sample size decides it.
    assert samples_to_decide(discordant_rate=0.05, observed_diff=0.01, margin=0.01,
                             confidence=0.95) is None
    assert samples_to_decide(discordant_rate=math.nan, observed_diff=0.0, margin=0.01,
                             confidence=0.95) is None
    # psi < d^2 is clamped, not an error: only the z_a term remains.
    got = samples_to_decide(discordant_rate=0.0001, observed_diff=0.02, margin=0.05,
                            confidence=0.95)
    z_a = z_two_sided(0.95)
    assert got == math.ceil(z_a * z_a * 0.0001 / 0.03 ** 2)
    # Closer to the margin needs more data; more flips need more data.
    far = samples_to_decide(discordant_rate=0.05, observed_diff=0.0, margin=0.02, confidence=0.95)
    near = samples_to_decide(discordant_rate=0.05, observed_diff=0.015, margin=0.02, confidence=0.95)
    assert far is not None and near is not None and near > far
    with pytest.raises(ValueError):
        samples_to_decide(discordant_rate=1.5, observed_diff=0.0, margin=0.01, confidence=0.95)
    with pytest.raises(ValueError):
        samples_to_decide(discordant_rate=0.1, observed_diff=0.0, margin=0.01, confidence=0.95,
                          power=1.0)


def test_samples_to_decide_agrees_with_tango_at_the_advised_n() -> None:
    # At the advised n, a table with the assumed rates puts the Tango bound near the margin
    # (it is planned for power 0.8, so the expected bound clears it with room to spare).
    psi, margin, conf = 0.04, 0.01, 0.95
    n = samples_to_decide(discordant_rate=psi, observed_diff=0.0, margin=margin,
                          confidence=conf, power=0.5)
    assert n is not None
    flips = round(psi * n / 2)
    iv = paired_proportion_diff_interval(flips, flips, n, conf)
    assert -iv.low == pytest.approx(margin, rel=0.05)


def test_samples_to_decide_from_interval_formula_and_scaling() -> None:
    conf, power = 0.95, 0.8
    z_a = z_two_sided(conf)
    z_b = sps.norm.ppf(power)
    got = samples_to_decide_from_interval(n=1000, estimate=-0.004, half_width=0.01,
                                          bound=-0.01, confidence=conf, power=power)
    assert got == math.ceil(1000 * ((z_a + z_b) / z_a * 0.01 / 0.006) ** 2)
    # Half-width ~ 1/sqrt(n): the same process seen at n or at 4n (half-width halved)
    # must give the same advice.
    a = samples_to_decide_from_interval(n=1000, estimate=0.0, half_width=0.02, bound=0.03,
                                        confidence=conf)
    b = samples_to_decide_from_interval(n=4000, estimate=0.0, half_width=0.01, bound=0.03,
                                        confidence=conf)
    assert a is not None and b is not None
    assert abs(a - b) <= 1
    # Halving the gap at fixed n and half-width needs 4x the samples.
    c = samples_to_decide_from_interval(n=1000, estimate=0.0, half_width=0.02, bound=0.015,
                                        confidence=conf)
    assert c is not None and abs(c - 4 * a) <= 4


def test_samples_to_decide_from_interval_undecidable() -> None:
    assert samples_to_decide_from_interval(n=500, estimate=0.01, half_width=0.02, bound=0.01,
                                           confidence=0.95) is None
    for bad in ({"estimate": math.nan}, {"half_width": math.nan}, {"bound": math.nan}):
        kwargs = {"n": 500, "estimate": 0.0, "half_width": 0.02, "bound": 0.01, **bad}
        assert samples_to_decide_from_interval(confidence=0.95, **kwargs) is None


# --------------------------------------------------------------------------
# Relative change: paired ratio intervals
# --------------------------------------------------------------------------


def test_bootstrap_relative_change_is_the_percentile_interval_of_the_log_ratio() -> None:
    rng = np.random.default_rng(4)
    base = rng.lognormal(0.0, 0.3, 2000) + 0.5
    cand = base * rng.lognormal(0.05, 0.1, 2000)
    rel = st.relative_change_from_bootstrap(cand, base, base_value=1.0, confidence=0.95)
    log_ends = np.quantile(np.log(cand / base), [0.025, 0.975])
    assert rel.interval.method == "bootstrap-ratio"
    assert [rel.interval.low, rel.interval.high] == pytest.approx(list(np.expm1(log_ends)), abs=1e-3)
    assert rel.grid == pytest.approx(list(np.quantile(cand / base - 1, st.QUANTILE_LEVELS)), abs=1e-12)


def test_relative_change_of_the_reported_log_loss_never_goes_below_minus_one() -> None:
    # The reported shape: "relative increase of log_loss is -0.5907 (95% CI -1.1813 to -0.2325)".
    rng = np.random.default_rng(5)
    base = np.concatenate([rng.exponential(0.05, 95), rng.exponential(3.0, 5)])  # a few confident mistakes
    cand = base * rng.uniform(0.0, 0.8, 100)
    idx = rng.integers(0, 100, size=(1000, 100))
    rel = st.relative_change_from_bootstrap(cand[idx].mean(1), base[idx].mean(1), base_value=float(base.mean()),
                                            confidence=0.95)
    assert -1.0 <= rel.interval.low <= cand.mean() / base.mean() - 1 <= rel.interval.high
    assert min(rel.grid) >= -1.0


def test_bootstrap_relative_change_handles_zero_and_signed_bases() -> None:
    # a resample whose base is 0: an infinite change (or none when the candidate is 0 too)
    base = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    cand = np.array([0.5, 1.0, 1.1, 0.9, 1.0])
    rel = st.relative_change_from_bootstrap(cand, base, base_value=0.8, confidence=0.5)
    assert rel.grid[-1] == math.inf and rel.interval.low >= -1.0
    # a signed metric (r2) whose base keeps its sign: (cand - base) / |base| per resample
    base = np.array([0.5, 0.6, 0.55, 0.52])
    cand = np.array([-0.1, 0.2, 0.3, 0.1])
    rel = st.relative_change_from_bootstrap(cand, base, base_value=0.55, confidence=0.5)
    assert rel.interval.method == "bootstrap-relative" and min(rel.grid) < -1.0
    # a base not distinguishable from 0: refused, with a reason that names the fix
    rel = st.relative_change_from_bootstrap(np.array([0.1, 0.2]), np.array([-0.05, 0.04]), base_value=0.01,
                                            confidence=0.95)
    assert rel.interval is None and "max_drop" in rel.unavailable
    assert st.relative_change_from_bootstrap(cand, base, base_value=0.0, confidence=0.95).interval is None


def test_paired_proportion_relative_change_basics() -> None:
    # a function of the table alone: the same counts give the same interval
    a = st.paired_proportion_relative_change(30, 10, 1000, 880, confidence=0.95)
    assert a == st.paired_proportion_relative_change(30, 10, 1000, 880, confidence=0.95)
    assert a.interval.method == "jeffreys-ratio"
    assert a.interval.low < (10 - 30) / 900 < a.interval.high < 0
    # no discordant pairs: never a zero-width interval (a plain multinomial bootstrap gives [0, 0])
    z = st.paired_proportion_relative_change(0, 0, 50, 40, confidence=0.95)
    assert z.interval.low < 0 < z.interval.high
    assert z.interval.high - z.interval.low > 0.02
    # width comparable to Tango's delta interval over the base
    tango = paired_proportion_diff_interval(30, 10, 1000, 0.95)
    assert a.interval.high - a.interval.low == pytest.approx((tango.high - tango.low) / 0.9, rel=0.15)
    assert st.paired_proportion_relative_change(5, 0, 10, 0, confidence=0.95).interval.high >= -1.0
    assert st.paired_proportion_relative_change(0, 3, 10, 3, confidence=0.95).unavailable  # base 0
    with pytest.raises(ValueError):
        st.paired_proportion_relative_change(5, 6, 10, 2, confidence=0.95)  # k < c


# --------------------------------------------------------------------------
# Sample advice is always for more samples than were measured
# --------------------------------------------------------------------------


def test_reported_lopsided_bootstrap_advice_is_more_than_measured() -> None:
    # "about 278 samples would decide it (measured on 285)": a lopsided bootstrap interval whose mean
    # half-width is shorter than the gap while its upper end is past the bound.
    n, observed, low, high, bound = 285, 0.0, 0.0, 0.06, 0.05
    old = samples_to_decide_from_interval(n=n, estimate=observed, half_width=(high - low) / 2, bound=bound,
                                          confidence=0.95)
    assert old is not None and old <= n  # the bug: a mean half-width below the gap
    new = samples_to_decide_from_interval(n=n, estimate=observed, half_width=high - observed, bound=bound,
                                          confidence=0.95)
    assert new is not None and new > n


def test_reported_few_discordant_pairs_advice_is_more_than_measured() -> None:
    # "about 16 (measured on 73)": Connor's large-sample formula with one discordant pair; Tango's
    # interval of the drop still straddles the bound.
    b, c, n, margin = 1, 0, 73, 0.06
    iv = paired_proportion_diff_interval(b, c, n, 0.95)
    drop, near = (b - c) / n, -iv.low - (b - c) / n
    assert -iv.high < margin < -iv.low  # straddles
    old = samples_to_decide(discordant_rate=(b + c) / n, observed_diff=drop, margin=margin, confidence=0.95)
    assert old is not None and old <= n
    new = samples_to_decide(discordant_rate=(b + c) / n, observed_diff=drop, margin=margin, confidence=0.95,
                            n=n, half_width=near)
    assert new is not None and new > n


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(n=hs.integers(1, 10**7), estimate=hs.floats(-10, 10), half_width=hs.floats(1e-6, 10),
       where=hs.floats(-0.999, 0.999), power=hs.floats(0.05, 0.99), conf=hs.floats(0.5, 0.999))
def test_straddling_advice_is_none_or_more_than_measured(n, estimate, half_width, where, power, conf) -> None:
    bound = estimate + where * half_width  # strictly inside the interval: it straddles
    got = samples_to_decide_from_interval(n=n, estimate=estimate, half_width=half_width, bound=bound,
                                          confidence=conf, power=power)
    assert got is None or got > n
    psi = min(1.0, abs(where) + 1e-3)
    got = samples_to_decide(discordant_rate=psi, observed_diff=estimate, margin=bound, confidence=conf,
                            power=power, n=n, half_width=half_width)
    assert got is None or got > n


@settings(max_examples=200, deadline=None)
@given(n=hs.integers(2, 10**6), observed=hs.floats(-1, 1), below=hs.floats(0, 1), above=hs.floats(0, 1),
       where=hs.floats(0, 1), paired=hs.booleans(), tests=hs.integers(1, 50))
def test_judge_advice_for_an_undecided_rule_is_never_what_was_measured(n, observed, below, above, where, paired,
                                                                        tests) -> None:
    from gate.judge import _samples
    from gate.measure.registry import get_metric

    low, high = observed - below, observed + above
    margin = low + where * (high - low)
    spec = get_metric("accuracy" if paired else "f1_macro")
    m = st_metric(n, observed)
    got = _samples(spec, m, observed=observed, low=low, high=high, margin=margin, confidence=0.95,
                   relative=False, scale=1.0, tests=tests)
    assert got is None or got > n


def st_metric(n: int, observed: float):
    from gate.measurements import MetricResult

    return MetricResult(metric="accuracy", n=n, base=0.9, candidate=0.9 - observed, delta=-observed,
                        delta_interval=Interval(low=-0.1, high=0.1, method="tango"), discordant_rate=0.05)


def test_judge_never_prints_a_relative_change_below_minus_100_percent() -> None:
    from gate.judge import evaluate
    from gate.measurements import MetricResult
    from gate.policy import Rule

    rule = Rule(index=1, line=1, metric="log_loss", bound_kind="max_relative_increase", bound=0.1, severity="fail")
    # a results file from before relative_interval: the delta over |base|, held at -100%
    old = MetricResult(metric="log_loss", n=300, base=1.0, candidate=0.4093, delta=-0.5907,
                       delta_interval=Interval(low=-1.1813, high=-0.2325, method="bootstrap"),
                       candidate_interval=Interval(low=0.2, high=0.7, method="bootstrap"))
    result = evaluate(rule, old, confidence=0.95, inconclusive="fail")
    assert result.status == "pass" and result.interval == [-1.0, -0.2325]
    assert "-1.18" not in result.reason and "CI -1.0000 to" in result.reason
    # a new result judges on its paired ratio interval, and reads p-values from its grid
    new = MetricResult(metric="log_loss", n=300, base=1.0, candidate=0.4093, delta=-0.5907,
                       delta_interval=Interval(low=-1.1813, high=-0.2325, method="bootstrap"),
                       relative_interval=Interval(low=-0.7, high=-0.4, method="bootstrap-ratio"))
    result = evaluate(rule, new, confidence=0.95, inconclusive="fail")
    assert result.interval == [-0.7, -0.4] and result.status == "pass"
    # a signed base not distinguishable from 0: an error that says why, never a pass
    r2 = Rule(index=1, line=1, metric="r2", bound_kind="max_relative_drop", bound=0.1, severity="fail")
    shaky = MetricResult(metric="r2", n=50, base=0.01, candidate=0.0, delta=-0.01,
                         delta_interval=Interval(low=-0.05, high=0.03, method="bootstrap"),
                         evidence={"relative_unavailable": "its base value is not distinguishable from 0"})
    result = evaluate(r2, shaky, confidence=0.95, inconclusive="fail")
    assert result.status == "error" and "distinguishable from 0" in result.reason
