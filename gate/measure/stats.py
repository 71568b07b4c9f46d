"""Confidence intervals and sample-size advice for comparing a candidate model to its base.

Everything here is a pure function of its arguments (and of an explicit seed for
the bootstrap), so a verdict can be reproduced bit for bit from a report.

scipy is deliberately not imported: the gate is a command-line tool and scipy
adds a noticeable start-up cost for the one normal quantile we need, which
``statistics.NormalDist`` provides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from gate.intervals import Interval  # re-exported: the type lives with the result types

__all__ = [
    "Interval",
    "z_two_sided",
    "paired_proportion_diff_interval",
    "wilson_interval",
    "paired_bootstrap_interval",
    "samples_to_decide",
    "samples_to_decide_from_interval",
    "tango_p_below", "tango_p_above", "wilson_p_above", "wilson_p_below",
    "paired_bootstrap", "percentile_interval", "quantile_grid", "grid_p_above", "grid_p_below",
    "holm_rejections", "QUANTILE_LEVELS",
    "RelativeChange", "relative_change_from_bootstrap", "paired_proportion_relative_change",
]

_STD_NORMAL = NormalDist()

# Interval ends are located to this precision; far below anything a report prints.
_BISECT_TOL = 1e-10

# Below this the true difference sits on the bound: no finite sample decides it.
_GAP_EPS = 1e-9

# Keeps ceil() from turning a float that is an integer up to rounding noise
# (e.g. 1237.0000000000002) into the next integer.
_CEIL_SLACK = 1e-9


def _check_confidence(confidence: float) -> None:
    # `not (0 < x < 1)` also rejects NaN.
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def z_two_sided(confidence: float) -> float:
    """Normal quantile z with P(|Z| <= z) = confidence."""
    _check_confidence(confidence)
    return _STD_NORMAL.inv_cdf(0.5 + confidence / 2.0)


def _ceil_int(x: float) -> int:
    return max(1, math.ceil(x - _CEIL_SLACK))


# --------------------------------------------------------------------------
# Tango (1998) score interval for a difference of paired proportions
# --------------------------------------------------------------------------

def _tango_restricted_mle(b: int, c: int, n: int, delta: float) -> float:
    """MLE of x = P(base right, candidate wrong) under H0: D = delta.

    With P(base wrong, candidate right) = x + delta, setting the derivative of
    b log x + c log(x + delta) + m log(1 - 2x - delta) to zero and clearing the
    denominators gives 2n x^2 + B x + C = 0 with
        B = (2n + b - c) delta - (b + c),   C = -b delta (1 - delta).
    Inside the feasible range the derivative has the sign of -(2n x^2 + B x + C),
    and the log-likelihood is concave there, so the maximiser is the larger root
    (the polynomial is negative at the lower end whenever the maximum is
    interior); when the maximum sits on the boundary the larger root falls
    outside and clipping puts it on the right end.
    """
    a2 = 2.0 * n
    bq = (2.0 * n + b - c) * delta - (b + c)
    cq = -b * delta * (1.0 - delta)
    # Negative only through rounding when the maximum is on the boundary.
    disc = max(bq * bq - 4.0 * a2 * cq, 0.0)
    x = (-bq + math.sqrt(disc)) / (2.0 * a2)
    lo = max(0.0, -delta)
    hi = (1.0 - delta) / 2.0
    return min(max(x, lo), hi)


def _tango_z(b: int, c: int, n: int, delta: float) -> float:
    """Score statistic (D_hat - delta) / SE restricted to H0; decreasing in delta."""
    diff = (c - b) / n - delta
    if diff == 0.0:
        # Also covers 0/0 at a boundary where the variance vanishes: the
        # observed difference is trivially consistent with itself.
        return 0.0
    x = _tango_restricted_mle(b, c, n, delta)
    var = (2.0 * x + delta - delta * delta) / n
    if var <= 0.0:
        return math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def _bisect_edge(f: Callable[[float], float], target: float,
                 inside: float, outside: float) -> float:
    """Locate where f crosses target between `inside` (f <= target) and `outside`.

    Returns the outside end of the final bracket, so rounding can only widen
    the interval, never narrow it.
    """
    for _ in range(200):
        if abs(inside - outside) <= _BISECT_TOL:
            break
        mid = 0.5 * (inside + outside)
        if f(mid) <= target:
            inside = mid
        else:
            outside = mid
    return outside


def paired_proportion_diff_interval(b: int, c: int, n: int, confidence: float) -> Interval:
    """Tango's score interval for D = (c - b)/n, candidate minus base accuracy.

    b: samples the base gets right and the candidate wrong; c: the reverse.
    Only discordant pairs carry information about D, which is why this is much
    tighter than comparing two accuracies as if they were independent.
    """
    _check_confidence(confidence)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need b >= 0, c >= 0 and b + c <= n, got b={b}, c={c}, n={n}")
    b, c, n = int(b), int(c), int(n)
    z = z_two_sided(confidence)
    d_hat = (c - b) / n

    def zf(delta: float) -> float:
        return _tango_z(b, c, n, delta)

    # Z(d_hat) = 0, so d_hat is always inside. Z decreases in delta, so the
    # lower end is where Z rises to +z and the upper end where it falls to -z.
    if zf(-1.0) <= z:
        low = -1.0
    else:
        low = _bisect_edge(zf, z, inside=d_hat, outside=-1.0)
    if zf(1.0) >= -z:
        high = 1.0
    else:
        high = _bisect_edge(lambda d: -zf(d), z, inside=d_hat, outside=1.0)
    return Interval(low=max(low, -1.0), high=min(high, 1.0), method="tango")


# --------------------------------------------------------------------------
# Wilson score interval for one proportion
# --------------------------------------------------------------------------

def wilson_interval(k: int, n: int, confidence: float) -> Interval:
    """Wilson score interval for a binomial proportion k/n."""
    _check_confidence(confidence)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    if not (0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = z_two_sided(confidence)
    p = k / n
    z2n = z * z / n
    denom = 1.0 + z2n
    centre = (p + z2n / 2.0) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    # At k = 0 or k = n the exact end is 0 or 1; the formula only gets there
    # up to rounding, and a bound of 1e-17 instead of 0 would read as a claim.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(low=low, high=high, method="wilson")


# --------------------------------------------------------------------------
# Paired percentile bootstrap
# --------------------------------------------------------------------------

def paired_bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, *,
                              confidence: float, n_resamples: int = 1000,
                              seed: int = 0) -> Interval:
    """Percentile bootstrap interval for stat over resamples of range(n).

    stat must evaluate both models on the same index array; sharing the
    resample is what cancels the per-sample difficulty both models have in
    common. Resamples where stat is NaN (e.g. AUC with one class present) are
    dropped; if more than half are, the interval is NaN rather than an
    estimate built from an unrepresentative minority.
    """
    _check_confidence(confidence)
    if n_resamples <= 0:
        raise ValueError(f"n_resamples must be positive, got {n_resamples!r}")
    return percentile_interval(paired_bootstrap(stat, n, n_resamples=n_resamples, seed=seed), confidence)


# --------------------------------------------------------------------------
# Sample-size advice
# --------------------------------------------------------------------------

def _check_power(power: float) -> None:
    if not (0.0 < power < 1.0):
        raise ValueError(f"power must be strictly between 0 and 1, got {power!r}")


def _beyond_measured(need: int, *, n: int | None, gap: float, half_width: float | None) -> int:
    """Advice for an undecided rule is never a sample count already measured.

    The power formulas are large-sample approximations: with few discordant pairs,
    or an interval that is lopsided about its estimate, they can ask for fewer
    samples than the interval that just failed to decide was built on ("about 278
    samples would decide it (measured on 285)"). Then the advice falls back to the
    n at which the current interval's half-width on the bound's side, shrinking as
    1/sqrt(n), would just clear the bound: n (half_width / gap)^2, which is > n
    whenever the interval straddles the bound (half_width > gap).
    An interval that already clears the bound (undecided only after a multiplicity
    correction) keeps the formula's count: that case is the caller's to handle.
    """
    if n is None or need > n:
        return need
    if half_width is not None and half_width >= gap:
        return max(_ceil_int(n * (half_width / gap) ** 2), n + 1)
    return need


def samples_to_decide(*, discordant_rate: float, observed_diff: float, margin: float,
                      confidence: float, power: float = 0.8, n: int | None = None,
                      half_width: float | None = None) -> int | None:
    """Samples needed for a paired non-inferiority rule to be decided (Connor 1987).

    discordant_rate: share of samples on which the two models disagree in
    correctness; observed_diff and margin are on the same scale and sign (e.g.
    the accuracy drop and the allowed drop). None when no amount of data
    decides it because the difference sits on the margin.
    n (samples measured) and half_width (the interval's reach from observed_diff
    towards the margin): when given and the interval straddles the margin, the
    answer is always more than n (see _beyond_measured).
    """
    _check_confidence(confidence)
    _check_power(power)
    psi, d = discordant_rate, observed_diff
    if not all(math.isfinite(v) for v in (psi, d, margin)):
        return None
    if not (0.0 <= psi <= 1.0):
        raise ValueError(f"discordant_rate must be in [0, 1], got {psi!r}")
    gap = margin - d
    if abs(gap) <= _GAP_EPS:
        return None
    # Each side of the two-sided interval is judged on its own, so each is a
    # one-sided test at (1 - confidence) / 2: that is z_two_sided, not z one-sided.
    z_a = z_two_sided(confidence)
    z_b = _STD_NORMAL.inv_cdf(power)
    # The observed rates need not be a consistent table (psi < d^2 is
    # impossible for true rates); clamp rather than take a root of a negative.
    spread_alt = max(psi - d * d, 0.0)
    root_n = z_a * math.sqrt(psi) + z_b * math.sqrt(spread_alt)
    need = _ceil_int(root_n * root_n / (gap * gap))
    if n is not None and n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    return _beyond_measured(need, n=n, gap=abs(gap), half_width=half_width)


def samples_to_decide_from_interval(*, n: int, estimate: float, half_width: float,
                                    bound: float, confidence: float,
                                    power: float = 0.8) -> int | None:
    """Samples needed when only an interval is known (bootstrap rules).

    Assumes the half-width shrinks as 1/sqrt(n), so the sample size at which
    the gap |bound - estimate| is cleared with the requested power is
    n * ((z_a + z_b) / z_a * half_width / gap)^2.
    half_width is best the interval's reach from the estimate towards the bound
    (bootstrap intervals are lopsided). When the interval straddles the bound
    (half_width > gap) the answer is always more than n; None when the estimate
    sits on the bound, where no sample size decides it.
    """
    _check_confidence(confidence)
    _check_power(power)
    if not all(math.isfinite(v) for v in (estimate, half_width, bound)):
        return None
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    if half_width < 0:
        raise ValueError(f"half_width must be >= 0, got {half_width!r}")
    gap = abs(bound - estimate)
    if gap <= _GAP_EPS:
        return None
    z_a = z_two_sided(confidence)
    z_b = _STD_NORMAL.inv_cdf(power)
    ratio = (z_a + z_b) / z_a * half_width / gap
    return _beyond_measured(_ceil_int(n * ratio * ratio), n=n, gap=gap, half_width=half_width)


# --------------------------------------------------------------------------
# One-sided p-values, for multiplicity corrections over many subgroups
# --------------------------------------------------------------------------
# Each p-value is the test the matching interval inverts, so "p < (1-c)/2" is
# exactly "the two-sided interval at confidence c lies wholly beyond delta0".

def tango_p_below(b: int, c: int, n: int, delta0: float) -> float:
    """p-value of H0: D >= delta0 against D < delta0 (the candidate is worse than delta0)."""
    return _STD_NORMAL.cdf(max(min(_tango_z(b, c, n, delta0), 40.0), -40.0))


def tango_p_above(b: int, c: int, n: int, delta0: float) -> float:
    """p-value of H0: D <= delta0 against D > delta0."""
    return 1.0 - tango_p_below(b, c, n, delta0)


def wilson_p_above(k: int, n: int, p0: float) -> float:
    """p-value of H0: p <= p0 against p > p0 (the score test Wilson's interval inverts)."""
    if p0 <= 0.0:
        return 0.0 if k > 0 else 1.0
    if p0 >= 1.0:
        return 1.0
    z = (k / n - p0) / math.sqrt(p0 * (1.0 - p0) / n)
    return 1.0 - _STD_NORMAL.cdf(z)


def wilson_p_below(k: int, n: int, p0: float) -> float:
    """p-value of H0: p >= p0 against p < p0."""
    if p0 >= 1.0:
        return 0.0 if k < n else 1.0
    if p0 <= 0.0:
        return 1.0
    z = (k / n - p0) / math.sqrt(p0 * (1.0 - p0) / n)
    return _STD_NORMAL.cdf(z)


# Quantile levels kept of a bootstrap distribution: enough to read a p-value
# down to 1/2000 and any interval a policy asks for, in 29 numbers.
QUANTILE_LEVELS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.0125, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5,
                   0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.9875, 0.99, 0.995, 0.9975, 0.999, 0.9995)


def paired_bootstrap(stat: Callable[[np.ndarray], float], n: int, *, n_resamples: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """The bootstrap distribution of stat (NaN resamples kept as NaN)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n!r}")
    rng = np.random.Generator(np.random.PCG64(seed))
    values = np.empty(n_resamples, dtype=np.float64)
    for i in range(n_resamples):
        values[i] = float(stat(rng.integers(0, n, size=n)))
    return values


def percentile_interval(values: np.ndarray, confidence: float, method: str = "bootstrap") -> Interval:
    """Percentile interval of a bootstrap distribution; NaN when most resamples failed."""
    _check_confidence(confidence)
    kept = values[~np.isnan(values)]
    if kept.size == 0 or (values.size - kept.size) * 2 > values.size:
        return Interval(low=math.nan, high=math.nan, method=method)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(kept, [alpha, 1.0 - alpha])
    return Interval(low=float(low), high=float(high), method=method)


def quantile_grid(values: np.ndarray) -> list[float] | None:
    kept = values[~np.isnan(values)]
    if kept.size == 0 or (values.size - kept.size) * 2 > values.size:
        return None
    return [float(q) for q in np.quantile(kept, QUANTILE_LEVELS)]


def grid_p_above(grid: list[float], bound: float) -> float:
    """p-value of H0: X <= bound against X > bound: the bootstrap mass at or below the bound."""
    if bound < grid[0]:
        return 0.0
    if bound >= grid[-1]:
        return 1.0
    return float(np.interp(bound, grid, QUANTILE_LEVELS))


def grid_p_below(grid: list[float], bound: float) -> float:
    """p-value of H0: X >= bound against X < bound."""
    if bound > grid[-1]:
        return 0.0
    if bound <= grid[0]:
        return 1.0
    return 1.0 - float(np.interp(bound, grid, QUANTILE_LEVELS))


# --------------------------------------------------------------------------
# Relative change (candidate / base - 1) with the base's own uncertainty
# --------------------------------------------------------------------------
# Dividing the delta interval by |base| treats the base as exact: it under-covers,
# and for a non-negative metric it can put the relative change below -100%, which
# no candidate can reach. Both methods below resample the base with the candidate,
# so the ratio of every draw is a ratio of two values of the metric, and its
# percentile interval stays inside [-1, inf) whenever the metric is non-negative.

# Stands in for +inf in np.quantile, whose interpolation turns inf - inf into NaN.
_HUGE = 1e300


@dataclass(frozen=True, kw_only=True)
class RelativeChange:
    """The relative change candidate/base - 1: its interval and quantile grid, or why it has none."""
    interval: Interval | None = None
    grid: list[float] | None = None
    unavailable: str | None = None


def _quantiles(values: np.ndarray, levels) -> np.ndarray | None:
    """np.quantile's default (linear) quantiles, tolerating +inf draws (a base of 0 in a
    resample); None when most draws are NaN. One sort for all levels: np.quantile
    partitions once per level, ten times slower for a 25-level grid."""
    kept = values[~np.isnan(values)]
    if kept.size == 0 or (values.size - kept.size) * 2 > values.size:
        return None
    ordered = np.sort(np.minimum(kept, _HUGE))
    q = np.interp(np.asarray(levels, dtype=np.float64) * (ordered.size - 1), np.arange(ordered.size), ordered)
    # interpolating towards an infinite draw is infinite, however small the weight
    return np.where(q >= _HUGE * 1e-100, math.inf, q)


def _relative_from_draws(rel: np.ndarray, confidence: float, method: str) -> RelativeChange:
    alpha = (1.0 - confidence) / 2.0
    ends = _quantiles(rel, [alpha, 1.0 - alpha])
    if ends is None:
        return RelativeChange(interval=Interval(low=math.nan, high=math.nan, method=method))
    grid = _quantiles(rel, QUANTILE_LEVELS)
    return RelativeChange(interval=Interval(low=float(ends[0]), high=float(ends[1]), method=method),
                          grid=[float(q) for q in grid])


def relative_change_from_bootstrap(cand_dist: np.ndarray, base_dist: np.ndarray, *, base_value: float,
                                   confidence: float, method: str = "bootstrap") -> RelativeChange:
    """Paired bootstrap of the relative change: one ratio per resample, percentile interval.

    cand_dist and base_dist must come from the same resamples (paired_bootstrap with
    one seed). The percentile interval of cand/base - 1 is the exponentiated
    percentile interval of log(cand/base), minus 1 (percentiles commute with a
    monotone map); taking the ratio itself also keeps resamples whose candidate
    value is 0 (log 0 = -inf).

    A non-negative metric gives ratios >= 0, so every end is >= -1. A metric that
    can be negative (r2) has no ratio: there each resample gives
    (cand - base) / |base|, which is the ratio form whenever base > 0, and is
    refused when the base's resamples do not keep one sign (the base is not
    distinguishable from 0, so "a fraction of the base" has no scale).
    """
    _check_confidence(confidence)
    draws_from = method
    method = f"{draws_from}-ratio"
    if base_value is None or not math.isfinite(base_value) or base_value == 0:
        return RelativeChange(unavailable="the base is 0 or not finite")
    cand_dist = np.asarray(cand_dist, dtype=np.float64)
    base_dist = np.asarray(base_dist, dtype=np.float64)
    both = ~(np.isnan(cand_dist) | np.isnan(base_dist))
    b, c = base_dist[both], cand_dist[both]
    rel = np.full(cand_dist.shape, math.nan)
    if base_value > 0 and np.all(b >= 0) and np.all(c >= 0):
        # a non-negative metric: a resample whose base is 0 is an infinite change,
        # or none at all when its candidate is 0 too
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(b > 0, c / np.where(b > 0, b, 1.0), np.where(c > 0, math.inf, 1.0))
        rel[both] = ratio - 1.0
        return _relative_from_draws(rel, confidence, method)
    if np.any(np.sign(b) != math.copysign(1.0, base_value)):
        return RelativeChange(unavailable=(
            "its base value is not distinguishable from 0 (its resamples take both signs), so a change "
            "relative to it has no scale; use an absolute bound (max_drop or max_increase) instead"))
    rel[both] = (c - b) / np.abs(b)
    return _relative_from_draws(rel, confidence, f"{draws_from}-relative")


# Posterior draws for the paired-proportion ratio (about 2 ms): the 0.0005 quantile of
# the grid rests on 8 draws; a 2.5% end has a Monte Carlo error of about 2% of the
# posterior's standard deviation (sqrt(0.025 * 0.975 / 16000) / 0.058), below what
# a report's 4 digits show for any table of 1,000 samples or more.
POSTERIOR_DRAWS = _POSTERIOR_DRAWS = 16000  # relative changes of paired proportions


def paired_proportion_relative_change(b: int, c: int, n: int, k: int, *, confidence: float,
                                      seed: int | None = None, draws: int = _POSTERIOR_DRAWS) -> RelativeChange:
    """Relative change of a paired proportion, cand_acc / base_acc - 1, from the 2x2 table alone.

    b: base right only, c: candidate right only, k: candidate right (so k - c are
    right for both). Method: draws from the Jeffreys posterior of the table,
    Dirichlet(counts + 1/2), and the percentile interval of (p21 - p12) / (p11 + p12).
    Why this one:
    - it needs only the counts, so it is cheap and any stored table can be re-judged;
    - every draw is a ratio of two proportions, so no end can pass -100%;
    - it never collapses to a point: a plain multinomial bootstrap of a table with
      no discordant pairs (b = c = 0) gives the zero-width interval [0, 0] and would
      pass any relative bound on 50 samples; the Jeffreys prior keeps a width
      comparable to Tango's score interval there;
    - Jeffreys intervals for proportions have near-nominal frequentist coverage (Brown,
      Cai & DasGupta 2001), and simulation of this ratio agrees
      (tests/test_stats_simulation.py).
    A Fieller-type interval with the unrestricted variance also collapses at b = c = 0,
    and the score interval with the restricted MLE (Nam & Blackwelder 2002) needs a
    nested root search with many boundary cases for zero cells.
    The both-wrong cell cancels from the ratio of Dirichlet components, so it is not drawn.
    The draws are seeded by the table itself unless a seed is given, so the interval is a
    function of the counts alone (like Tango's) and the judge can re-derive the same
    quantile grid from the stored counts.
    """
    _check_confidence(confidence)
    b, c, n, k = int(b), int(c), int(n), int(k)
    a = k - c
    if n <= 0 or b < 0 or c < 0 or a < 0 or a + b + c > n:
        raise ValueError(f"need a consistent paired table, got b={b}, c={c}, n={n}, k={k}")
    if a + b == 0:
        return RelativeChange(unavailable="the base is 0")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([b, c, n, k]) if seed is None else seed))
    g = rng.standard_gamma(np.array([a, b, c], dtype=np.float64) + 0.5, size=(draws, 3))
    rel = (g[:, 2] - g[:, 1]) / (g[:, 0] + g[:, 1])
    return _relative_from_draws(rel, confidence, "jeffreys-ratio")


def holm_rejections(p_values: list[float], alpha: float, method: str = "holm") -> list[bool]:
    """Which hypotheses to reject with the family-wise error rate held at alpha."""
    m = len(p_values)
    if method == "none":
        return [p < alpha for p in p_values]
    if method == "bonferroni":
        return [p < alpha / m for p in p_values]
    order = sorted(range(m), key=lambda i: p_values[i])
    reject = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] < alpha / (m - rank):
            reject[i] = True
        else:
            break  # Holm stops at the first hypothesis it keeps
    return reject
