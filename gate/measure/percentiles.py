"""Percentiles of run times: the distribution-free order-statistic interval and MLPerf's minimum number of
runs for claiming a percentile at all (`min_runs_for`: 64 for p90, 662 for p99).

The binomial distribution comes from scipy, imported when first needed: `gate --help` never pays for it.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from gate.intervals import Interval

PERCENTILE_CONFIDENCE = 0.99  # MLPerf's confidence for its minimum query counts
EXACT_UP_TO = 5000  # runs; above, the binomial is replaced by its normal approximation


def min_runs_for(q: float, confidence: float = PERCENTILE_CONFIDENCE) -> int:
    """MLPerf's early-stopping minimum for claiming the q-th percentile (d = 0, c = 0.99): the fewest runs
    n for which a system that just misses the percentile would show at most one run above it with
    probability <= 1 - c, i.e. P(Binomial(n, 1 - q) <= 1) <= 1 - c. 64 runs for p90, 662 for p99."""
    n = 2
    while q ** n + n * (1.0 - q) * q ** (n - 1) > 1.0 - confidence:
        n += 1
    return n


def binom_cdf(n: int, p: float) -> np.ndarray:
    """cdf[k] = P(Binomial(n, p) <= k) = I_{1-p}(n - k, k + 1) for k = 0..n: the regularized incomplete beta
    function of scipy.special, as scipy.stats.binom.cdf computes it, without the second or two it takes to
    import scipy.stats."""
    from scipy.special import betainc

    k = np.arange(n)
    return np.append(np.minimum(betainc(n - k, k + 1, 1.0 - p), 1.0), 1.0)


def quantile_interval(values: np.ndarray, q: float, confidence: float) -> Interval:
    """Distribution-free interval of the q-quantile from order statistics: [x_(l), x_(u)] with
    P(l <= B < u) >= confidence for B ~ Binomial(n, q), the number of runs below the quantile.
    A side the runs cannot bound is 0 (below) or infinite (above)."""
    x = np.sort(values)
    n = len(x)
    alpha = (1.0 - confidence) / 2.0
    if n <= EXACT_UP_TO:
        cdf = binom_cdf(n, q)
        low_rank = int(np.searchsorted(cdf, alpha, side="right"))  # largest l with P(B <= l - 1) <= alpha
        high_rank = int(np.searchsorted(cdf, 1.0 - alpha, side="left")) + 1  # smallest u with P(B >= u) <= alpha
    else:  # normal approximation of the binomial: exact enough this far from the ends
        z = NormalDist().inv_cdf(1.0 - alpha)
        half = z * math.sqrt(n * q * (1.0 - q))
        low_rank, high_rank = math.floor(n * q - half), math.ceil(n * q + half) + 1
    low = float(x[low_rank - 1]) if low_rank >= 1 else 0.0
    high = float(x[high_rank - 1]) if high_rank <= n else math.inf
    return Interval(low=low, high=high, method="order_statistic")
