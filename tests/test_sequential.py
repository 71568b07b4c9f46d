"""Sequential looks (gate/measure/sequential.py): spending functions, boundaries, sample orders, decisions.

Reference values for the boundaries:
- O'Brien-Fleming-type Lan-DeMets spending, 5 equally spaced looks, one-sided alpha 0.025: gsDesign
  (sfLDOF, test.type = 1) gives upper bounds 4.8769, 3.3569, 2.6803, 2.2898, 2.0310;
- the same spending, looks at 0.25, 0.5, 0.75, 1, one-sided alpha 0.05: 3.74955, 2.53993, 2.01604,
  1.72014 (the README of PharmCat/SeqBounds.jl, a grid integration with step 0.05);
- independently of any published table: scipy's multivariate normal cdf (Genz's algorithm) of the
  looks' joint distribution, and a Monte Carlo of 10^6 Brownian paths.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from gate.judge import FAIL, INCONCLUSIVE, PASS, _decide
from gate.measure import sequential as sq
from gate.measure import stats


def _looks_cov(fractions) -> np.ndarray:
    """corr(Z_i, Z_j) = sqrt(t_i / t_j) for t_i <= t_j: Brownian motion in information time."""
    t = np.asarray(fractions)
    return np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))


def _crossing_by_mvn(p: sq.Plan, looks: int, abseps: float = 1e-7) -> float:
    """P(some Z_k >= c_k, k <= looks) under H0, by scipy's multivariate normal cdf."""
    c = np.array(p.boundaries[:looks])
    if looks == 1:
        return float(norm.sf(c[0]))
    cdf = multivariate_normal.cdf(c, mean=np.zeros(looks), cov=_looks_cov(p.fractions[:looks]), abseps=abseps,
                                  releps=0.0, maxpts=100_000 * looks, rng=np.random.default_rng(0))
    return 1.0 - float(cdf)


# --------------------------------------------------------------------------
# spending functions
# --------------------------------------------------------------------------

def test_obrien_fleming_spending_matches_its_formula():
    # one-sided form: 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)), alpha(1) = alpha
    for alpha in (0.025, 0.05, 0.005):
        z = norm.isf(alpha / 2)
        for t in (0.1, 0.2, 0.5, 0.9):
            assert sq.spend(t, alpha) == pytest.approx(2 * norm.sf(z / math.sqrt(t)), rel=1e-9)
        assert sq.spend(1.0, alpha) == alpha
        assert sq.spend(0.0, alpha) == 0.0
    # a known value: at half the samples, 0.025 one-sided spends 0.001525
    assert sq.spend(0.5, 0.025) == pytest.approx(0.0015253, rel=1e-4)
    # far in the tail it is still a positive, increasing number (not rounded to 0)
    assert 0.0 < sq.spend(0.01, 0.025) < sq.spend(0.02, 0.025) < 1e-50


def test_pocock_spending_matches_its_formula():
    for t in (0.1, 0.5, 1.0):
        assert sq.spend(t, 0.025, "pocock") == pytest.approx(0.025 * math.log(1 + (math.e - 1) * t), rel=1e-12)


def test_spending_increases_with_information():
    for spending in sq.SPENDING:
        values = [sq.spend(t, 0.025, spending) for t in np.linspace(0.01, 1.0, 100)]
        assert all(b > a for a, b in zip(values, values[1:]))
        # Pocock spends more early than O'Brien-Fleming: that is the whole difference
    assert sq.spend(0.2, 0.025, "pocock") > 10 * sq.spend(0.2, 0.025)


# --------------------------------------------------------------------------
# boundaries
# --------------------------------------------------------------------------

def test_boundaries_match_gsdesign_five_equal_looks():
    p = sq.plan((0.2, 0.4, 0.6, 0.8, 1.0), alpha=0.025)
    assert p.boundaries == pytest.approx((4.8769, 3.3569, 2.6803, 2.2898, 2.0310), abs=2e-4)


def test_boundaries_match_seqbounds_four_looks_at_alpha_005():
    p = sq.plan((0.25, 0.5, 0.75, 1.0), alpha=0.05)
    assert p.boundaries == pytest.approx((3.74955, 2.53993, 2.01604, 1.72014), abs=2e-4)


def test_each_look_spends_its_share_by_the_multivariate_normal():
    """Cumulative crossing probability at every look = alpha(t_k), to 1e-5; in total alpha to 1e-4."""
    p = sq.plan(alpha=0.025)
    for k in range(1, p.looks + 1):
        assert _crossing_by_mvn(p, k) == pytest.approx(p.spent[k - 1], abs=1e-5)
    assert _crossing_by_mvn(p, p.looks) == pytest.approx(0.025, abs=1e-4)


@pytest.mark.parametrize("fractions, spending", [(sq.DEFAULT_FRACTIONS, "pocock"),
                                                 (tuple(i / 10 for i in range(1, 11)), "obrien_fleming"),
                                                 ((0.3, 0.31, 1.0), "pocock")])
def test_total_alpha_by_the_multivariate_normal(fractions, spending):
    p = sq.plan(fractions, alpha=0.025, spending=spending)
    assert _crossing_by_mvn(p, p.looks, abseps=1e-5) == pytest.approx(0.025, abs=1e-4)


def test_total_alpha_by_a_million_brownian_paths():
    p = sq.plan()
    rng = np.random.Generator(np.random.PCG64(12))
    t = np.asarray(p.fractions)
    paths = 1_000_000
    z = np.cumsum(rng.standard_normal((paths, p.looks)) * np.sqrt(np.diff(t, prepend=0.0)), axis=1) / np.sqrt(t)
    crossed = (z >= np.asarray(p.boundaries)).any(axis=1).mean()
    se = math.sqrt(0.025 * 0.975 / paths)
    assert abs(crossed - 0.025) < 4 * se, f"Monte Carlo crossing {crossed:.5f} vs 0.025 (se {se:.5f})"


@pytest.mark.parametrize("spending", sq.SPENDING)
def test_boundaries_fall_and_nominal_levels_rise_from_look_to_look(spending):
    p = sq.plan(spending=spending)
    assert all(b < a for a, b in zip(p.boundaries, p.boundaries[1:]))
    assert all(b > a for a, b in zip(p.alphas, p.alphas[1:]))
    assert all(a < 0.025 for a in p.alphas)  # every look is stricter than the fixed-sample test
    assert p.spent[-1] == 0.025


def test_default_plan_levels():
    """The default looks: 10, 20, 40, 70, 100% with O'Brien-Fleming spending at 0.025 per side."""
    p = sq.plan()
    assert p.fractions == sq.DEFAULT_FRACTIONS and p.spending == "obrien_fleming"
    assert p.boundaries == pytest.approx((6.9914, 4.8769, 3.3570, 2.4445, 2.0005), abs=2e-4)
    # the last look is nearly the fixed-sample test: 2.0005 against 1.96
    assert p.confidence_at(4) == pytest.approx(0.9545, abs=1e-4)


def test_confidence_at_gives_the_boundary_back_through_the_interval_level():
    p = sq.plan()
    for k in range(p.looks):
        assert stats.z_two_sided(p.confidence_at(k)) == pytest.approx(p.boundaries[k], abs=1e-6)


def test_one_look_is_the_fixed_sample_test():
    p = sq.plan((1.0,), alpha=0.025)
    assert p.boundaries == pytest.approx((norm.isf(0.025),), abs=1e-9)
    assert p.confidence_at(0) == pytest.approx(0.95, abs=1e-12)


def test_a_look_too_strict_to_spend_anything_decides_nothing_but_keeps_a_valid_level():
    # O'Brien-Fleming at 1% of the samples with alpha 1e-4 spends ~1e-330: no finite boundary
    p = sq.plan((0.01, 0.02, 0.5, 1.0), alpha=1e-4)
    assert p.boundaries[0] == math.inf and p.alphas[0] == 0.0
    assert 0.0 < p.confidence_at(0) < 1.0
    assert _crossing_by_mvn(p, 4) == pytest.approx(1e-4, abs=1e-6)


def test_plan_to_dict_round_trips_its_numbers():
    d = sq.plan().to_dict()
    assert d["fractions"] == list(sq.DEFAULT_FRACTIONS) and d["spending"] == "obrien_fleming"
    assert len(d["alphas"]) == len(d["boundaries"]) == len(d["spent"]) == 5 and d["alpha"] == 0.025


# --------------------------------------------------------------------------
# input validation: every message names the value
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fractions, message", [
    ((0.2, 0.1, 1.0), "strictly increasing"),
    ((0.1, 0.1, 1.0), "strictly increasing"),
    ((0.1, 0.5), "must see all the samples"),
    ((0.0, 0.5, 1.0), "in (0, 1]"),
    ((-0.1, 1.0), "in (0, 1]"),
    ((0.5, 1.5), "in (0, 1]"),
    ((float("nan"), 1.0), "in (0, 1]"),
    (tuple(i / 11 for i in range(1, 12)), "at most 10 looks"),
    ((), "at least one look"),
    ((0.5, 0.505, 1.0), "at least 0.01 of the samples apart"),
    ((0.005, 1.0), "at least 0.01 of the samples apart"),
    (("ten percent", 1.0), "list of numbers"),
    (None, "list of numbers"),
])
def test_bad_fractions_are_refused_with_the_value(fractions, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        sq.plan(fractions)


@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.1, 1.0, float("nan"), "0.025"])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha .* must be in \(0, 0.5\), got"):
        sq.plan(alpha=alpha)


def test_unknown_spending_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="spending must be one of obrien_fleming, pocock, got 'haybittle'"):
        sq.plan(spending="haybittle")


# --------------------------------------------------------------------------
# which samples a look sees
# --------------------------------------------------------------------------

def test_look_order_is_a_seeded_permutation():
    a, b = sq.look_order(1000, seed=7), sq.look_order(1000, seed=7)
    assert np.array_equal(a, b)
    assert np.array_equal(np.sort(a), np.arange(1000))
    assert not np.array_equal(a, sq.look_order(1000, seed=8))
    # not the file's order: a file sorted by class must not give a look of one class
    assert not np.array_equal(a[:100], np.arange(100))


def test_looks_are_nested_random_subsets():
    p = sq.plan()
    order = sq.look_order(719, seed=0)
    sizes = sq.look_sizes(719, p)
    assert sizes == (72, 144, 288, 504, 719)
    subsets = [set(order[:s].tolist()) for s in sizes]
    assert all(a < b for a, b in zip(subsets, subsets[1:]))
    assert subsets[-1] == set(range(719))
    # a file sorted by class (first half class 0): the first look holds both classes in about equal shares
    first = order[:sizes[0]]
    assert 0.3 < np.mean(first < 360) < 0.7


def test_look_sizes_round_up_and_end_at_n():
    p = sq.plan()
    assert sq.look_sizes(10, p) == (1, 2, 4, 7, 10)
    assert sq.look_sizes(20000, p) == (2000, 4000, 8000, 14000, 20000)
    # 0.7 x 30 is 21.000000000000004 in floating point: still 21
    assert sq.look_sizes(30, p)[3] == 21


def test_too_few_samples_for_distinct_looks_is_refused_with_the_minimum():
    with pytest.raises(ValueError, match=r"5 samples are too few for looks at 10%, 20%, 40%, 70%, 100% .* at "
                                         r"least 10 samples"):
        sq.look_sizes(5, sq.plan())


@pytest.mark.parametrize("n", [0, -3, 2.5, "100"])
def test_bad_sample_counts_are_refused(n):
    with pytest.raises(ValueError, match="positive number of samples"):
        sq.look_sizes(n, sq.plan())
    with pytest.raises(ValueError, match="positive number of samples"):
        sq.look_order(n, seed=0)


# --------------------------------------------------------------------------
# deciding a rule look by look (with the judge's own decision of one interval)
# --------------------------------------------------------------------------

SIZES = (72, 144, 288, 504, 719)


def _max_drop(bound: float):
    """An upper-bound rule on the drop: pass when the interval is wholly at or below the bound."""
    return lambda low, high: _decide(low, high, bound, True)


def test_the_first_deciding_look_decides_and_later_looks_are_not_computed():
    computed = []

    def intervals():
        for k, iv in enumerate([(-0.01, 0.08), (0.03, 0.2), (0.05, 0.1), (0.0, 0.01), (0.0, 0.01)]):
            computed.append(k)
            yield iv

    d = sq.decide_at_looks(intervals(), SIZES, _max_drop(0.02))
    assert (d.status, d.look, d.samples, d.looks, d.decided) == (FAIL, 2, 144, 5, True)
    assert computed == [0, 1]
    assert d.to_dict() == {"status": FAIL, "look": 2, "samples": 144, "looks": 5}


def test_a_pass_at_the_last_look():
    ivs = [(-0.05, 0.08)] * 4 + [(-0.01, 0.015)]
    d = sq.decide_at_looks(ivs, SIZES, _max_drop(0.02))
    assert (d.status, d.look, d.samples) == (PASS, 5, 719)


def test_undecided_at_every_look_is_inconclusive_on_all_samples():
    d = sq.decide_at_looks([(-0.05, 0.08)] * 5, SIZES, _max_drop(0.02))
    assert (d.status, d.look, d.samples, d.decided) == (INCONCLUSIVE, 5, 719, False)
    assert sq.UNDECIDED == INCONCLUSIVE


def test_a_look_without_an_interval_does_not_decide():
    # None: a look this rule may not use (a bootstrap rule whose resamples do not reach the look's tail)
    d = sq.decide_at_looks([None, None, (0.0, 0.01), None, None], SIZES, _max_drop(0.02))
    assert (d.status, d.look, d.samples) == (PASS, 3, 288)
    d = sq.decide_at_looks([None] * 5, SIZES, _max_drop(0.02))
    assert (d.status, d.look) == (INCONCLUSIVE, 5)


def test_a_nan_interval_is_not_a_decision():
    d = sq.decide_at_looks([(math.nan, math.nan)] * 4 + [(0.0, 0.01)], SIZES, _max_drop(0.02))
    assert (d.status, d.look) == (PASS, 5)


def test_lower_bound_rules_decide_the_same_way():
    at_least = lambda low, high: _decide(low, high, 0.9, False)  # noqa: E731  candidate accuracy >= 0.9
    d = sq.decide_at_looks([(0.85, 0.99), (0.91, 0.97)], SIZES[:2], at_least)
    assert (d.status, d.look) == (PASS, 2)


def test_stopping_before_the_last_look_undecided_is_refused():
    with pytest.raises(ValueError, match="undecided after 2 of 5 looks"):
        sq.decide_at_looks([(-0.05, 0.08)] * 2, SIZES, _max_drop(0.02))
    with pytest.raises(ValueError, match="more intervals than the 5 looks"):
        sq.decide_at_looks([(-0.05, 0.08)] * 6, SIZES, _max_drop(0.02))
    with pytest.raises(ValueError, match="at least one look"):
        sq.decide_at_looks([], (), _max_drop(0.02))


def test_bootstrap_rules_skip_the_looks_their_resamples_cannot_reach():
    p = sq.plan()
    # 1000 resamples: 0.0, 0.001 and 0.39 draws lie beyond the first three looks' tails
    assert [p.resolved_by(k, 1000) for k in range(5)] == [False, False, False, True, True]
    assert [p.resolved_by(k, 100_000) for k in range(5)] == [False, False, True, True, True]


def test_plan_to_dict_is_json_even_with_a_look_that_decides_nothing():
    d = sq.plan((0.01, 0.02, 0.5, 1.0), alpha=1e-4).to_dict()
    assert d["boundaries"][0] is None
    json.dumps(d, allow_nan=False)
