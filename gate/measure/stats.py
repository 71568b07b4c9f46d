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
]

_STD_NORMAL = NormalDist()

# Interval ends are located to this precision; far below anything a report prints.
_BISECT_TOL = 1e-10

# Below this the true difference sits on the bound: no finite sample decides it.
_GAP_EPS = 1e-9

# Keeps ceil() from turning a float that is an integer up to rounding noise
# (e.g. 1237.0000000000002) into the next integer.
_CEIL_SLACK = 1e-9


@dataclass(frozen=True, kw_only=True)
class Interval:
    low: float
    high: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        return {"low": self.low, "high": self.high, "method": self.method}


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


def samples_to_decide(*, discordant_rate: float, observed_diff: float, margin: float,
                      confidence: float, power: float = 0.8) -> int | None:
    """Samples needed for a paired non-inferiority rule to be decided (Connor 1987).

    discordant_rate: share of samples on which the two models disagree in
    correctness; observed_diff and margin are on the same scale and sign (e.g.
    the accuracy drop and the allowed drop). None when no amount of data
    decides it because the difference sits on the margin.
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
    return _ceil_int(root_n * root_n / (gap * gap))


def samples_to_decide_from_interval(*, n: int, estimate: float, half_width: float,
                                    bound: float, confidence: float,
                                    power: float = 0.8) -> int | None:
    """Samples needed when only an interval is known (bootstrap rules).

    Assumes the half-width shrinks as 1/sqrt(n), so the sample size at which
    the gap |bound - estimate| is cleared with the requested power is
    n * ((z_a + z_b) / z_a * half_width / gap)^2.
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
    return _ceil_int(n * ratio * ratio)


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


def percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """Percentile interval of a bootstrap distribution; NaN when most resamples failed."""
    _check_confidence(confidence)
    kept = values[~np.isnan(values)]
    if kept.size == 0 or (values.size - kept.size) * 2 > values.size:
        return Interval(low=math.nan, high=math.nan, method="bootstrap")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(kept, [alpha, 1.0 - alpha])
    return Interval(low=float(low), high=float(high), method="bootstrap")


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
