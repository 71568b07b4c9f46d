"""Latency, throughput and speedup: base and candidates timed in one process, interleaved.

How a run goes (`time_interleaved`):
- every model gets `warmup` untimed calls first, interleaved like the timed ones;
- then rounds: each round calls every model once on the same input batch, the
  base and every candidate, in an order that changes from round to round, so
  every model takes every position and follows every other one equally often
  on average (`_orders`);
- the first look comes when both `min_runs` rounds and `min_time_s` are done;
  when a caller gives a `decide` function (the judge, asked whether every speed
  rule is decided), an undecided result is measured again: the rounds double
  before the next look, until `max_time_s`, which caps the whole timed loop.

Statistics (`speed_metrics`), chosen for a shared, noisy runner where a few
calls take 10-100x longer than the rest and the load drifts over seconds:
- rounds are cut into K <= 32 consecutive blocks ("batch means", the standard
  remedy for autocorrelated run times); each block gives one number and the
  interval is Student's t over the K block numbers;
- speedup is exp(mean over blocks of the median, within the block, of the
  paired log-ratio log(t_base / t_candidate)). A slowdown of the machine hits
  both calls of a pair and cancels in the ratio; a hiccup that hits one call
  moves only its block's median, not the estimate;
- percentiles come with the distribution-free order-statistic (binomial)
  interval, and are only claimed with MLPerf's minimum number of runs
  (`min_runs_for`: 64 for p90, 662 for p99); fewer runs give no interval and an
  `insufficient_runs` mark the judge turns into "inconclusive";
- each look spends part of the error rate (alpha-spending, look k uses
  alpha / 2^k) when re-measurement is possible, so measuring a borderline case
  again cannot turn noise into a failure more often than the confidence level
  says: the intervals are wider, and `interval_confidence` says how wide.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np

from gate.errors import GateInputError
from gate.measure.registry import PERCENTILES
from gate.measure.stats import QUANTILE_LEVELS, Interval
from gate.measurements import MetricResult

MIN_ROUNDS_FOR_INTERVAL = 20  # 5 blocks of 4 pairs: fewer gives no honest interval
MAX_BLOCKS = 32
PERCENTILE_CONFIDENCE = 0.99  # MLPerf's confidence for its minimum query counts
SPEED_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                 "throughput", "speedup")
NOISY_SPREAD = 0.25  # (p90 - p10) / p50 of one model's run times above this: reported as high variance


@dataclass(frozen=True, kw_only=True)
class SpeedSettings:
    batch_size: int = 1
    threads: int = 1
    warmup: int = 20
    min_runs: int = 100
    min_time_s: float = 1.0
    max_time_s: float = 10.0
    provider: str = "CPUExecutionProvider"
    target: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def settings_for(latency: dict, target: str | None = None) -> SpeedSettings:
    """The policy's latency block (and a named target's overrides) over the defaults."""
    values = {k: v for k, v in (latency or {}).items() if k != "targets" and v is not None}
    if target is not None:
        targets = (latency or {}).get("targets") or {}
        values.update({k: v for k, v in targets[target].items() if v is not None})
        values["target"] = target
    names = {f for f in SpeedSettings.__dataclass_fields__}
    out = SpeedSettings(**{k: v for k, v in values.items() if k in names})
    ints = {k: int(getattr(out, k)) for k in ("batch_size", "threads", "warmup", "min_runs")}
    floats = {k: float(getattr(out, k)) for k in ("min_time_s", "max_time_s")}
    return SpeedSettings(**{**asdict(out), **ints, **floats})


# ---- the machine ----------------------------------------------------------------------------

def usable_cpus() -> tuple[int, str]:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v1 or v2)."""
    try:
        count = len(os.sched_getaffinity(0))
        why = f"{count} CPU(s) in the affinity mask"
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
        why = f"{count} CPU(s)"
    quota = _cgroup_quota()
    if quota is not None and quota < count:
        count = max(1, math.floor(quota))
        why += f", capped by a cgroup CPU quota of {quota:g}"
    return count, why


def _cgroup_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
        try:
            quota = int(Path(root, "cpu.cfs_quota_us").read_text())
            period = int(Path(root, "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def threads_to_use(requested: int) -> tuple[int, str | None]:
    usable, why = usable_cpus()
    if requested > usable:
        return usable, (f"threads: {requested} asked, but this process may use {usable} ({why}); measured with "
                        f"{usable}: more threads than cores doubles the noise and measures the scheduler")
    return requested, None


def open_session(path: Path, settings: SpeedSettings, threads: int, *, profile_prefix: str | None = None):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if settings.provider not in available:
        where = f"latency.targets.{settings.target}.provider" if settings.target else "latency.provider"
        raise GateInputError(f"asks for the execution provider {settings.provider}, which this onnxruntime does "
                             f"not have (it has {', '.join(available)})", path=where,
                             fix="install the onnxruntime build for that provider on this machine, or measure "
                                 "this target on the device it names")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads > 1:
        # idle pool threads spinning between calls would steal the core the other model runs on
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers = [settings.provider] + (["CPUExecutionProvider"] if settings.provider != "CPUExecutionProvider" else [])
    return ort.InferenceSession(str(path), options, providers=providers)


def feeds_for(runner, batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """The first `batch_size` samples of the bound data as a feed (the model's own size when its batch
    axis is fixed); rows repeat when the data has fewer samples."""
    # the runner's binding has resolved and checked every input against the data
    fixed = runner._batch  # noqa: SLF001 - the runner's checked binding, read-only
    batch = fixed or batch_size
    feeds = {}
    for name, array in runner._feeds.items():  # noqa: SLF001
        rows = array[:batch]
        if len(rows) < batch:
            rows = np.concatenate([rows] * math.ceil(batch / max(len(rows), 1)))[:batch]
        feeds[name] = np.ascontiguousarray(rows.astype(runner._dtypes[name], copy=False))  # noqa: SLF001
    return feeds, batch


# ---- the timed loop ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Timing:
    names: tuple[str, ...]
    batches: tuple[int, ...]
    ms: np.ndarray  # [models, rounds], milliseconds per call
    looks: tuple[dict, ...]  # {rounds, elapsed_s, interval_confidence, settled}
    elapsed_s: float
    stopped: str  # "min_reached", "settled" or "max_time"
    sequential: bool

    @property
    def rounds(self) -> int:
        return int(self.ms.shape[1])


def look_confidence(confidence: float, look: int, sequential: bool) -> float:
    """Two-sided level of the intervals at look k: alpha-spending alpha_k = alpha / 2^k when the run may
    look again (the sum over looks stays within alpha), the plain level when it looks once."""
    alpha = (1.0 - confidence) / 2.0
    a_k = alpha / (2 ** look) if sequential else alpha
    return 1.0 - 2.0 * a_k


def time_interleaved(runs: list[Callable[[], object]], names: list[str], batches: list[int],
                     settings: SpeedSettings, *, confidence: float,
                     decide: Callable[[np.ndarray, float, int], bool] | None = None,
                     clock: Callable[[], int] = time.perf_counter_ns) -> Timing:
    """Time every callable in rounds (see the module docstring). decide(ms, interval_confidence, look)
    returns True when the numbers so far settle every rule; it is only asked when re-measuring is possible."""
    m = len(runs)
    orders = _orders(m)
    for w in range(settings.warmup):
        for i in orders[w % len(orders)]:
            runs[i]()
    sequential = decide is not None and settings.max_time_s > settings.min_time_s
    times: list[list[int]] = [[] for _ in range(m)]
    looks: list[dict] = []
    next_look = max(settings.min_runs, 1)
    stopped = "max_time"
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one call would be charged to that model alone
    start = clock()
    max_ns, min_ns = settings.max_time_s * 1e9, settings.min_time_s * 1e9
    rounds = 0
    try:
        while True:
            for i in orders[rounds % len(orders)]:
                t0 = clock()
                runs[i]()
                times[i].append(clock() - t0)
            rounds += 1
            elapsed = clock() - start
            if elapsed >= max_ns:
                stopped = "max_time"
                break
            if rounds >= next_look and elapsed >= min_ns:
                look = len(looks) + 1
                level = look_confidence(confidence, look, sequential)
                if not sequential:
                    looks.append({"rounds": rounds, "elapsed_s": elapsed / 1e9, "interval_confidence": level,
                                  "settled": None})
                    stopped = "min_reached"
                    break
                gc.enable()
                settled = bool(decide(_as_ms(times), level, look))
                gc.disable()
                looks.append({"rounds": rounds, "elapsed_s": elapsed / 1e9, "interval_confidence": level,
                              "settled": settled})
                if settled:
                    stopped = "settled"
                    break
                next_look = 2 * rounds
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed_s = (clock() - start) / 1e9
    if stopped == "max_time":
        look = len(looks) + 1
        looks.append({"rounds": rounds, "elapsed_s": elapsed_s,
                      "interval_confidence": look_confidence(confidence, look, sequential), "settled": None})
    return Timing(names=tuple(names), batches=tuple(batches), ms=_as_ms(times), looks=tuple(looks),
                  elapsed_s=elapsed_s, stopped=stopped, sequential=sequential)


def _orders(m: int, rounds: int = 4096, seed: int = 0) -> list[list[int]]:
    """The call order of each round (cycled). Two models: A B | B A, so each runs after itself and after the
    other equally often. More: a seeded random order per round, so every model takes every position and
    follows every other model equally often on average. (A fixed forward/backward order made the middle
    model of three look ~10% slower than its identical twin: the end models ran twice in a row, with warm
    caches and thread pools; a plain rotation still left a 2-4% bias from who runs before whom.)"""
    if m <= 2:
        return [list(range(m)), list(range(m))[::-1]]
    rng = np.random.Generator(np.random.PCG64(seed))
    return [list(rng.permutation(m)) for _ in range(rounds)]


def _as_ms(times: list[list[int]]) -> np.ndarray:
    n = min(len(t) for t in times)
    return np.maximum(np.array([t[:n] for t in times], dtype=np.float64), 1.0) / 1e6


# ---- statistics ----------------------------------------------------------------------------

def min_runs_for(q: float, confidence: float = PERCENTILE_CONFIDENCE) -> int:
    """MLPerf's early-stopping minimum for claiming the q-th percentile (d = 0, c = 0.99): the fewest runs
    n for which a system that just misses the percentile would show at most one run above it with
    probability <= 1 - c, i.e. P(Binomial(n, 1 - q) <= 1) <= 1 - c. 64 runs for p90, 662 for p99."""
    n = 2
    while q ** n + n * (1.0 - q) * q ** (n - 1) > 1.0 - confidence:
        n += 1
    return n


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (bisection on the CDF; scipy is not a dependency)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi


def _binom_cdf(n: int, p: float) -> np.ndarray:
    """cdf[k] = P(Binomial(n, p) <= k) for k = 0..n."""
    lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    k = np.arange(n + 1)
    log_pmf = lg[n] - lg - lg[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)


def quantile_interval(values: np.ndarray, q: float, confidence: float) -> Interval:
    """Distribution-free interval of the q-quantile from order statistics: [x_(l), x_(u)] with
    P(l <= B < u) >= confidence for B ~ Binomial(n, q), the number of runs below the quantile.
    A side the runs cannot bound is 0 (below) or infinite (above)."""
    x = np.sort(values)
    n = len(x)
    alpha = (1.0 - confidence) / 2.0
    if n <= 5000:
        cdf = _binom_cdf(n, q)
        low_rank = int(np.searchsorted(cdf, alpha, side="right"))  # largest l with P(B <= l - 1) <= alpha
        high_rank = int(np.searchsorted(cdf, 1.0 - alpha, side="left")) + 1  # smallest u with P(B >= u) <= alpha
    else:  # normal approximation of the binomial: exact enough this far from the ends
        z = NormalDist().inv_cdf(1.0 - alpha)
        half = z * math.sqrt(n * q * (1.0 - q))
        low_rank, high_rank = math.floor(n * q - half), math.ceil(n * q + half) + 1
    low = float(x[low_rank - 1]) if low_rank >= 1 else 0.0
    high = float(x[high_rank - 1]) if high_rank <= n else math.inf
    return Interval(low=low, high=high, method="order_statistic")


def _blocks(n: int) -> list[np.ndarray] | None:
    k = min(MAX_BLOCKS, n // 4)
    if n < MIN_ROUNDS_FOR_INTERVAL or k < 5:
        return None
    return np.array_split(np.arange(n), k)


def _t_interval(estimate: float, block_values: np.ndarray, confidence: float) -> tuple[float, float, float]:
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
    lo, hi, _ = _t_interval(mean_c, block_mean_c, confidence)
    d_lo, d_hi, _ = _t_interval(mean_c - mean_b, block_mean_c - block_mean_b, confidence)
    ev = dict(common, blocks=k)
    out["latency_mean_ms"] = MetricResult(
        metric="latency_mean_ms", n=n, base=mean_b, candidate=mean_c, delta=mean_c - mean_b,
        candidate_interval=Interval(low=max(lo, 0.0), high=hi, method="block_t"),
        delta_interval=Interval(low=d_lo, high=d_hi, method="block_t"), evidence=ev)
    thr_iv = Interval(low=1000.0 * bc / hi, high=1000.0 * bc / lo if lo > 0 else math.inf, method="block_t")
    block_thr = 1000.0 * bc / block_mean_c - 1000.0 * bb / block_mean_b
    t_lo, t_hi, _ = _t_interval(thr_c - thr_b, block_thr, confidence)
    out["throughput"] = MetricResult(metric="throughput", n=n, base=thr_b, candidate=thr_c, delta=thr_c - thr_b,
                                     candidate_interval=thr_iv,
                                     delta_interval=Interval(low=t_lo, high=t_hi, method="block_t"), evidence=ev)
    medians = np.array([np.median(log_ratio[b]) for b in blocks])
    est = float(medians.mean())
    l_lo, l_hi, se = _t_interval(est, medians, confidence)
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


# ---- per-op profile ------------------------------------------------------------------------

def op_profile(path: Path, feeds: dict, settings: SpeedSettings, threads: int, workdir: Path, *,
               runs: int = 20, warmup: int = 5) -> dict:
    """Time per inference by op type, from onnxruntime's profiler (names of the optimized graph, so fused
    nodes appear as their fused op type). {op_type: {"us": per run, "nodes": count}}"""
    prefix = str(workdir / f"profile_{abs(hash(str(path))) % 10**8}")
    session = open_session(path, settings, threads, profile_prefix=prefix)
    for _ in range(warmup + runs):
        session.run(None, feeds)
    profile_file = Path(session.end_profiling())
    try:
        events = json.loads(profile_file.read_text(encoding="utf-8"))
    finally:
        profile_file.unlink(missing_ok=True)
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(run_starts) < warmup + 1:
        return {}
    first_timed = run_starts[warmup]
    timed_runs = len(run_starts) - warmup
    by_op: dict[str, dict] = {}
    nodes: dict[str, set] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < first_timed:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        entry = by_op.setdefault(op, {"us": 0.0, "nodes": 0})
        entry["us"] += float(e.get("dur", 0))
        nodes.setdefault(op, set()).add(e["name"])
    for op, entry in by_op.items():
        entry["us"] /= timed_runs
        entry["nodes"] = len(nodes[op])
    return dict(sorted(by_op.items()))


def compare_profiles(base: dict, cand: dict) -> dict:
    """Op types by the change of their time per inference, losses (candidate slower) first."""
    ops = []
    for op in sorted(set(base) | set(cand)):
        b, c = base.get(op, {"us": 0.0, "nodes": 0}), cand.get(op, {"us": 0.0, "nodes": 0})
        ops.append({"op_type": op, "base_us": b["us"], "candidate_us": c["us"], "delta_us": c["us"] - b["us"],
                    "base_nodes": b["nodes"], "candidate_nodes": c["nodes"]})
    ops.sort(key=lambda r: (-r["delta_us"], r["op_type"]))
    return {"base_us": sum(v["us"] for v in base.values()), "candidate_us": sum(v["us"] for v in cand.values()),
            "ops": ops}


# ---- energy (RAPL) -------------------------------------------------------------------------

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True, kw_only=True)
class RaplCounter:
    name: str
    energy: Path  # energy_uj
    max_range_uj: int


def rapl_counters(root: Path = POWERCAP) -> tuple[list[RaplCounter], str | None]:
    """The package-level RAPL counters (intel-rapl:N, not their sub-zones), or why there are none."""
    if not root.is_dir():
        return [], f"no RAPL energy counters on this machine ({root} is absent)"
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # sub-zones (core, dram) are inside the package's count
        energy = zone / "energy_uj"
        try:
            int(energy.read_text())
            max_range = int((zone / "max_energy_range_uj").read_text())
        except PermissionError:
            return [], f"the RAPL counters in {root} are not readable by this user (they usually need root)"
        except (OSError, ValueError):
            continue
        name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
        found.append(RaplCounter(name=name, energy=energy, max_range_uj=max_range))
    if not found:
        return [], f"no readable RAPL package counters under {root}"
    return found, None


def read_energy_uj(counters: list[RaplCounter]) -> list[int]:
    return [int(c.energy.read_text()) for c in counters]


def energy_delta_uj(before: list[int], after: list[int], counters: list[RaplCounter]) -> int:
    """Energy between two reads, over every package, across a counter wrap-around."""
    total = 0
    for b, a, c in zip(before, after, counters):
        total += a - b if a >= b else a + c.max_range_uj - b
    return total


def energy_blocks(runs: list[Callable[[], object]], counters: list[RaplCounter], *, blocks: int = 6,
                  block_s: float = 0.25, clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """mJ per call of each model in interleaved blocks ([models, blocks]): RAPL counts the whole package at
    about millisecond resolution, so a model is run alone for a block and the blocks alternate."""
    out = np.zeros((len(runs), blocks))
    for k in range(blocks):
        order = range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            before, calls, t0 = read_energy_uj(counters), 0, clock()
            while clock() - t0 < block_s * 1e9:
                runs[i]()
                calls += 1
            out[i, k] = energy_delta_uj(before, read_energy_uj(counters), counters) / 1000.0 / calls
    return out


def energy_metric(per_block: np.ndarray | None, j: int, *, confidence: float, reason: str | None) -> MetricResult:
    name = "energy_per_inference_mj"
    if per_block is None:
        # a property of the machine, not of the model: the judge warns instead of failing
        return MetricResult(metric=name, n=0, unavailable=reason or "energy was not measured",
                            evidence={"not_on_this_machine": True})
    base, cand = per_block[0], per_block[j]
    k = len(cand)
    vb, vc = float(base.mean()), float(cand.mean())
    lo, hi, _ = _t_interval(vc, cand, confidence)
    d_lo, d_hi, _ = _t_interval(vc - vb, cand - base, confidence)
    return MetricResult(metric=name, n=k, base=vb, candidate=vc, delta=vc - vb,
                        candidate_interval=Interval(low=lo, high=hi, method="block_t"),
                        delta_interval=Interval(low=d_lo, high=d_hi, method="block_t"),
                        evidence={"blocks": k, "interval_confidence": confidence, "package_energy": True})


@dataclass(frozen=True, kw_only=True)
class SpeedRun:
    """Everything one speed measurement produced, for every candidate."""
    settings: dict
    metrics: dict[str, dict[str, MetricResult]] = field(default_factory=dict)  # candidate -> metric -> result
    details: dict[str, dict] = field(default_factory=dict)  # candidate -> report details
    base_metrics: dict[str, float] = field(default_factory=dict)


def measure_on_this_machine(models: list[tuple[str, Path, object]], settings: SpeedSettings, *, confidence: float,
                            timed: bool = True, memory: bool = False, energy: bool = False,
                            settled: Callable[[dict[str, dict[str, MetricResult]]], bool] | None = None,
                            host: dict | None = None) -> SpeedRun:
    """Speed (and memory, energy) of the base (models[0]) and every candidate on this machine.

    models: (name, path, bound runner) with the runner's data binding giving the input batch.
    settled(candidate -> metrics): True when every rule on these metrics is decided; without it the run
    looks once (min_runs and min_time_s), with it a borderline result is measured again up to max_time_s.
    """
    import tempfile

    from gate.measure.memory import peak_memory

    threads, clamp_note = threads_to_use(settings.threads)
    usable, usable_why = usable_cpus()
    names = [m[0] for m in models]
    fed = [feeds_for(runner, settings.batch_size) for _, _, runner in models]
    batches = [b for _, b in fed]
    run_settings = dict(settings.to_dict(), threads_used=threads, usable_cpus=usable, usable_cpus_why=usable_why)
    notes = [clamp_note] if clamp_note else []
    if len(set(batches)) > 1:
        notes.append(f"the models run different batch sizes ({', '.join(f'{n}: {b}' for n, b in zip(names, batches))},"
                     " fixed in their files): speedup compares time per sample, latencies are per call")
    out_metrics: dict[str, dict[str, MetricResult]] = {n: {} for n in names[1:]}
    details: dict[str, dict] = {n: {"target": settings.target, "host": host or {}, "settings": run_settings,
                                    "notes": list(notes)} for n in names[1:]}
    base_metrics: dict[str, float] = {}

    sessions = [open_session(path, settings, threads) for _, path, _ in models]
    providers = [s.get_providers()[0] for s in sessions]
    calls = [(lambda s=s, f=f: s.run(None, f)) for s, (f, _) in zip(sessions, fed)]
    if timed:
        def decide(ms: np.ndarray, level: float, look: int) -> bool:
            so_far = {n: speed_metrics(ms, batches, j, confidence=level, look=look)
                      for j, n in enumerate(names[1:], start=1)}
            return settled(so_far)

        timing = time_interleaved(calls, names, batches, settings, confidence=confidence,
                                  decide=decide if settled is not None else None)
        level, look = timing.looks[-1]["interval_confidence"], len(timing.looks)
        base_summary = summary(timing.ms[0], batches[0])
        base_notes = variance_notes(names[0], base_summary)
        for j, name in enumerate(names[1:], start=1):
            metrics = speed_metrics(timing.ms, batches, j, confidence=level, look=look)
            out_metrics[name].update(metrics)
            cand_summary = summary(timing.ms[j], batches[j])
            sp = metrics["speedup"]
            iv = sp.candidate_interval
            details[name].update({
                "rounds": timing.rounds, "elapsed_s": timing.elapsed_s, "looks": list(timing.looks),
                "stopped": timing.stopped, "sequential": timing.sequential, "interval_confidence": level,
                "providers": {"base": providers[0], "candidate": providers[j]},
                "base": base_summary, "candidate": cand_summary,
                "speedup": {"value": sp.candidate, "low": iv.low if iv else None, "high": iv.high if iv else None},
            })
            cand_notes = variance_notes(name, cand_summary)
            details[name]["notes"] += base_notes + cand_notes
            details[name]["high_variance"] = bool(base_notes or cand_notes)
            if timing.stopped == "max_time" and timing.rounds < settings.min_runs:
                details[name]["notes"].append(f"max_time_s {settings.max_time_s:g} s ran out after "
                                              f"{timing.rounds:,} of min_runs {settings.min_runs:,} rounds")
        first = out_metrics[names[1]] if len(names) > 1 else {}
        for key in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                    "throughput"):
            if key in first and first[key].base is not None:
                base_metrics[key] = first[key].base
        with tempfile.TemporaryDirectory(prefix="gate-profile-") as tmp:
            try:
                base_prof = op_profile(models[0][1], fed[0][0], settings, threads, Path(tmp))
                for j, name in enumerate(names[1:], start=1):
                    cand_prof = op_profile(models[j][1], fed[j][0], settings, threads, Path(tmp))
                    details[name]["op_profile"] = dict(compare_profiles(base_prof, cand_prof), runs=20)
            except Exception as exc:  # the profile is an aid: its failure must not lose the timings
                for name in names[1:]:
                    details[name]["op_profile"] = None
                    details[name]["notes"].append(f"the per-op profile failed: {type(exc).__name__}: {exc}"[:300])
    if energy:
        counters, reason = rapl_counters()
        per_block = energy_blocks(calls, counters) if counters else None
        for j, name in enumerate(names[1:], start=1):
            m = energy_metric(per_block, j, confidence=confidence, reason=reason)
            out_metrics[name][m.metric] = m
            details[name]["energy"] = {"available": per_block is not None, "reason": reason,
                                       "counters": [c.name for c in counters]}
        if per_block is not None:
            base_metrics["energy_per_inference_mj"] = float(per_block[0].mean())
    del sessions, calls
    if memory:
        peaks = peak_memory({str(i): (path, f) for i, ((_, path, _), (f, _)) in enumerate(zip(models, fed))},
                            threads=threads, provider=settings.provider)
        base_peak = peaks["0"]
        if "peak_mb" in base_peak:
            base_metrics["peak_memory_mb"] = base_peak["peak_mb"]
        for j, name in enumerate(names[1:], start=1):
            got = peaks[str(j)]
            details[name]["memory"] = {"base": base_peak, "candidate": got}
            if "error" in got or "error" in base_peak:
                out_metrics[name]["peak_memory_mb"] = MetricResult(
                    metric="peak_memory_mb", n=1, unavailable=got.get("error") or base_peak.get("error"))
                continue
            b, c = base_peak["peak_mb"], got["peak_mb"]
            out_metrics[name]["peak_memory_mb"] = MetricResult(
                metric="peak_memory_mb", n=1, base=b, candidate=c, delta=c - b,
                delta_interval=Interval(low=c - b, high=c - b, method="exact"),
                candidate_interval=Interval(low=c, high=c, method="exact"),
                evidence={"method": got["method"], "baseline_mb": got.get("baseline_mb"), "runs": got["runs"]})
    return SpeedRun(settings=run_settings, metrics=out_metrics, details=details, base_metrics=base_metrics)
