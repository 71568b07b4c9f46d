"""Statistics of timed rounds: latency percentiles, mean, throughput and the paired speedup, with intervals.

Chosen for a shared, noisy runner where a few calls take 10-100x longer than the rest and the load
drifts over seconds:
- rounds are cut into K <= 32 consecutive blocks ("batch means", the standard
  remedy for autocorrelated run times); each block gives one number and the
  interval is Student's t over the K block numbers;
- speedup is exp(mean over blocks of the median, within the block, of the
  paired log-ratio log(t_base / t_candidate)). A slowdown of the machine hits
  both calls of a pair and cancels in the ratio; a hiccup that hits one call
  moves only its block's median, not the estimate;
- percentiles come with the distribution-free order-statistic (binomial)
  interval, and are only claimed with MLPerf's minimum number of runs
  (gate/measure/percentiles.py); fewer runs give no interval and an
  `insufficient_runs` mark the judge turns into "inconclusive";
- every interval is at the level of the look it comes from (gate/measure/timing.py).

Student's t comes from scipy, imported when first needed.
"""

from __future__ import annotations

import math

import numpy as np

from gate.intervals import Interval
from gate.measure.percentiles import min_runs_for, quantile_interval
from gate.measure.registry import PERCENTILES
from gate.measure.stats import QUANTILE_LEVELS
from gate.measurements import MetricResult

MIN_ROUNDS_FOR_INTERVAL = 20  # 5 blocks of 4 pairs: fewer gives no honest interval
MAX_BLOCKS = 32
SPEED_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                 "throughput", "speedup")
NOISY_SPREAD = 0.25  # (p90 - p10) / p50 of one model's run times above this: reported as high variance


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (scipy.special.stdtrit, what scipy.stats.t.ppf calls, without the second it takes
    to import scipy.stats)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def _blocks(n: int) -> list[np.ndarray] | None:
    k = min(MAX_BLOCKS, n // 4)
    if n < MIN_ROUNDS_FOR_INTERVAL or k < 5:
        return None
    return np.array_split(np.arange(n), k)


def t_interval(estimate: float, block_values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(low, high, standard error) of Student's t interval over block values."""
    k = len(block_values)
    se = float(np.std(block_values, ddof=1) / math.sqrt(k))
    t = t_quantile(0.5 + confidence / 2.0, k - 1)
    return estimate - t * se, estimate + t * se, se


def _insufficient(name: str, n: int, needed: int, **values) -> MetricResult:
    return MetricResult(metric=name, n=n, **values,
                        evidence={"insufficient_runs": {"runs": n, "needed": needed}})


def speed_metrics(ms: np.ndarray, batches: tuple[int, ...] | list[int], j: int, *, confidence: float,
                  look: int = 1) -> dict[str, MetricResult]:
    """Every speed metric of model j against the base (row 0), its intervals at `confidence`
    (already the look's level, see look_confidence)."""
    n = ms.shape[1]
    base, cand = ms[0], ms[j]
    bb, bc = batches[0], batches[j]
    common = {"interval_confidence": confidence, "looks": look, "runs": n}
    out: dict[str, MetricResult] = {}
    alpha = (1.0 - confidence) / 2.0
    for name, q in PERCENTILES.items():
        vb, vc = float(np.quantile(base, q)), float(np.quantile(cand, q))
        # MLPerf's minimum, and enough runs for the largest one to bound the percentile from above at this
        # look's level (the delta's interval uses half the error per side): else its interval is unbounded
        needed = max(min_runs_for(q), math.ceil(math.log(alpha / 2.0) / math.log(q)))
        if n < needed:
            out[name] = _insufficient(name, n, needed, base=vb, candidate=vc, delta=vc - vb)
            continue
        c_iv = quantile_interval(cand, q, confidence)
        # the delta's interval joins the two one-model intervals, each at half the error per side
        c_half, b_half = quantile_interval(cand, q, 1.0 - alpha), quantile_interval(base, q, 1.0 - alpha)
        d_iv = Interval(low=c_half.low - b_half.high, high=c_half.high - b_half.low, method="order_statistic")
        out[name] = MetricResult(metric=name, n=n, base=vb, candidate=vc, delta=vc - vb, candidate_interval=c_iv,
                                 delta_interval=d_iv, evidence=dict(common, percentile=q, min_runs=needed,
                                                                    mlperf_min_runs=min_runs_for(q)))
    blocks = _blocks(n)
    mean_b, mean_c = float(base.mean()), float(cand.mean())
    thr_b, thr_c = 1000.0 * bb / mean_b, 1000.0 * bc / mean_c
    log_ratio = np.log(base / bb) - np.log(cand / bc)  # per-sample times: log(t_base / t_candidate)
    speedup = float(math.exp(np.median(log_ratio)))
    if blocks is None:
        out["latency_mean_ms"] = _insufficient("latency_mean_ms", n, MIN_ROUNDS_FOR_INTERVAL, base=mean_b,
                                               candidate=mean_c, delta=mean_c - mean_b)
        out["throughput"] = _insufficient("throughput", n, MIN_ROUNDS_FOR_INTERVAL, base=thr_b, candidate=thr_c,
                                          delta=thr_c - thr_b)
        out["speedup"] = _insufficient("speedup", n, MIN_ROUNDS_FOR_INTERVAL, candidate=speedup)
        return out
    k = len(blocks)
    block_mean_c = np.array([cand[b].mean() for b in blocks])
    block_mean_b = np.array([base[b].mean() for b in blocks])
    lo, hi, _ = t_interval(mean_c, block_mean_c, confidence)
    d_lo, d_hi, _ = t_interval(mean_c - mean_b, block_mean_c - block_mean_b, confidence)
    ev = dict(common, blocks=k)
    out["latency_mean_ms"] = MetricResult(
        metric="latency_mean_ms", n=n, base=mean_b, candidate=mean_c, delta=mean_c - mean_b,
        candidate_interval=Interval(low=max(lo, 0.0), high=hi, method="block_t"),
        delta_interval=Interval(low=d_lo, high=d_hi, method="block_t"), evidence=ev)
    thr_iv = Interval(low=1000.0 * bc / hi, high=1000.0 * bc / lo if lo > 0 else math.inf, method="block_t")
    block_thr = 1000.0 * bc / block_mean_c - 1000.0 * bb / block_mean_b
    t_lo, t_hi, _ = t_interval(thr_c - thr_b, block_thr, confidence)
    out["throughput"] = MetricResult(metric="throughput", n=n, base=thr_b, candidate=thr_c, delta=thr_c - thr_b,
                                     candidate_interval=thr_iv,
                                     delta_interval=Interval(low=t_lo, high=t_hi, method="block_t"), evidence=ev)
    medians = np.array([np.median(log_ratio[b]) for b in blocks])
    est = float(medians.mean())
    l_lo, l_hi, se = t_interval(est, medians, confidence)
    grid = [math.exp(est + se * t_quantile(level, k - 1)) for level in QUANTILE_LEVELS]
    out["speedup"] = MetricResult(
        metric="speedup", n=n, candidate=math.exp(est),
        candidate_interval=Interval(low=math.exp(l_lo), high=math.exp(l_hi), method="paired_block_t"),
        evidence=dict(ev, pairs=n, candidate_grid=grid,
                      block_log_ratio_medians=[round(float(x), 6) for x in medians]))
    return out


def summary(ms_row: np.ndarray, batch: int) -> dict:
    """One model's run times for reports: quantiles, spread, hiccups."""
    levels = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    qs = np.quantile(ms_row, levels)
    p10, p50, p90 = float(qs[2]), float(qs[4]), float(qs[6])
    mean = float(ms_row.mean())
    return {"batch": batch, "runs": int(len(ms_row)), "mean_ms": mean, "min_ms": float(ms_row.min()),
            "max_ms": float(ms_row.max()), "p50_ms": p50, "p90_ms": p90, "p95_ms": float(qs[7]),
            "p99_ms": float(qs[8]), "cv": float(ms_row.std() / mean) if mean > 0 else None,
            "spread": (p90 - p10) / p50 if p50 > 0 else None,
            "hiccups": int(np.count_nonzero(ms_row > 3 * p50)),
            "throughput": 1000.0 * batch / mean if mean > 0 else None,
            "quantiles_ms": {"levels": list(levels), "values": [float(v) for v in qs]}}


def variance_notes(name: str, s: dict) -> list[str]:
    notes = []
    if s["spread"] is not None and s["spread"] > NOISY_SPREAD:
        notes.append(f"{name}: run times vary by {s['spread']:.0%} between p10 and p90 (high variance: the machine "
                     "is noisy or the model is unstable; the paired speedup cancels what hits both models, the "
                     "percentiles do not)")
    if s["hiccups"] and s["hiccups"] >= max(1, s["runs"] // 100):
        notes.append(f"{name}: {s['hiccups']} of {s['runs']:,} calls took over 3x the median")
    return notes
