"""Predictions of base and candidate -> paired MetricResults with intervals.

Reads what to measure and the confidence level from the caller, never a
threshold: deciding is the judge's job.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import replace

import numpy as np

from gate.measure import agreement as agree
from gate.measure import fast
from gate.measure.quality import from_moments, moment_columns, per_sample, proportion_hits
from gate.measure.registry import (AGREEMENT, BOOTSTRAP, EXACT, FOOTPRINT, PAIRED_PROPORTION, PROPORTION,
                                   SLICE_CLASSES, MetricSpec, VECTORS, get_metric, sample_metrics,
                                   top_k_of)
from gate.measure.stats import (QUANTILE_LEVELS, Interval, paired_bootstrap, paired_proportion_diff_interval,
                                paired_proportion_relative_change, percentile_interval, quantile_grid,
                                relative_change_from_bootstrap, wilson_interval, z_two_sided)
from gate.measurements import MetricResult, ModelInfo
from gate.predictions import Agreement, Predictions


def _seed(seed: int, metric: str) -> int:
    # per-metric seeds: a metric's interval must not depend on which other rules exist
    return (seed * 1_000_003 + zlib.crc32(metric.encode())) % (2**32)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def unavailable_reason(spec: MetricSpec, *, task: str, has_labels: bool, base: Predictions,
                       cand: Predictions) -> str | None:
    if not spec.measured:
        return "not measured by this version of the gate"
    if task not in spec.tasks:
        return f"not defined for {task}"
    if spec.needs_labels and not has_labels:
        return "the data has no labels"
    if spec.needs_scores and spec.kind != AGREEMENT and (base.n_classes is None or cand.n_classes is None):
        return "a model gives labels, not scores"
    missing = [v for v in spec.needs if getattr(base, v) is None or getattr(cand, v) is None]
    if missing:
        return "scores were not kept" if missing == ["probs"] else f"the outputs give no {VECTORS[missing[0]]}"
    k = top_k_of(spec.name)
    if k is not None and base.n_classes is not None and k >= base.n_classes:
        return f"top-{k} of {base.n_classes} classes is always right"
    return None


def compare(name: str, *, base: Predictions, cand: Predictions, agreement: Agreement, y: np.ndarray | None,
            task: str, confidence: float, bootstrap: int, seed: int, with_interval: bool,
            classes: np.ndarray | None = None, intervals: bool = True, relative: bool = True) -> MetricResult:
    """One metric for one candidate. Cheap closed-form intervals are always given;
    bootstrap intervals only when asked (a rule uses the metric). `classes`: inside a slice, its true
    classes (class averages are taken over them). intervals=False: values only (a subgroup too small to
    judge, of which there may be thousands). relative=False: no interval of the relative change of a paired
    proportion (16,000 posterior draws, milliseconds: for thousands of subgroups no relative rule judges)."""
    spec = get_metric(name)
    n = len(y) if y is not None else len(base.pred if base.pred is not None else base.values)
    reason = unavailable_reason(spec, task=task, has_labels=y is not None, base=base, cand=cand)
    if reason:
        return MetricResult(metric=name, n=n, unavailable=reason)
    if spec.kind == AGREEMENT:
        return _agreement(name, spec, base=base, cand=cand, agreement=agreement, y=y, n=n, confidence=confidence,
                          bootstrap=bootstrap, seed=seed, with_interval=with_interval)
    if spec.method == PAIRED_PROPORTION:
        hits_b, hits_c = proportion_hits(name, base, y), proportion_hits(name, cand, y)
        b = int((hits_b & ~hits_c).sum())
        c = int((~hits_b & hits_c).sum())
        acc_b, acc_c = float(hits_b.mean()), float(hits_c.mean())
        k_c = int(hits_c.sum())
        # relative bounds: Jeffreys-posterior ratio of the paired table (a function of the counts
        # alone, so the judge re-derives its quantile grid from the evidence; see stats.py)
        # (only for judged metrics: it costs milliseconds, and thousands of subgroups are shown unjudged)
        rel = paired_proportion_relative_change(b, c, n, k_c, confidence=confidence) \
            if with_interval and relative else None
        evidence = {"b": b, "c": c, "n": n, "k": k_c}
        if not intervals:
            return MetricResult(metric=name, n=n, base=acc_b, candidate=acc_c, delta=(c - b) / n,
                                discordant_rate=(b + c) / n, evidence=evidence)
        return MetricResult(metric=name, n=n, base=acc_b, candidate=acc_c, delta=(c - b) / n,
                            delta_interval=paired_proportion_diff_interval(b, c, n, confidence),
                            candidate_interval=wilson_interval(k_c, n, confidence),
                            relative_interval=rel.interval if rel else None, discordant_rate=(b + c) / n,
                            evidence=evidence)
    fn = spec.function(classes)
    if with_interval and spec.resample == fast.DELONG:
        return _delong(name, base=base, cand=cand, y=y, n=n, confidence=confidence)
    value_b, value_c = fn(base, y, None), fn(cand, y, None)
    if not with_interval:
        return MetricResult(metric=name, n=n, base=_finite(value_b), candidate=_finite(value_c),
                            delta=_finite(value_c - value_b))
    s = _seed(seed, name)
    if spec.resample == fast.CELLS:
        # one seed for every confusion-matrix metric: they share the candidate's resamples of the cell table
        cand_dist, base_dist = fast.cell_distributions(
            name, y, base.pred, cand.pred, n_resamples=bootstrap, seed=_seed(seed, "confusion cells"),
            classes=classes if spec.in_slice == SLICE_CLASSES else None)
        return from_distributions(name, n, base_value=value_b, cand_value=value_c, cand_dist=cand_dist,
                                  base_dist=base_dist, confidence=confidence)
    if spec.resample in (fast.MEAN, fast.MOMENTS):
        cand_dist, base_dist, method = _mean_distributions(base, cand, agreement, y, bootstrap, seed)[name]
        if spec.resample == fast.MOMENTS:
            cand_dist, base_dist = from_moments(name, cand_dist), from_moments(name, base_dist)
        return from_distributions(name, n, base_value=value_b, cand_value=value_c, cand_dist=cand_dist,
                                  base_dist=base_dist, confidence=confidence, method=method)
    if spec.resample == fast.BINS:
        cand_dist, base_dist, method = fast.ece_distributions(y, base.pred, base.top_prob, cand.pred,
                                                              cand.top_prob, n_resamples=bootstrap, seed=s)
        return from_distributions(name, n, base_value=value_b, cand_value=value_c, cand_dist=cand_dist,
                                  base_dist=base_dist, confidence=confidence, method=method)
    return bootstrapped(name, n, base_value=value_b, cand_value=value_c,
                        cand_stat=lambda idx: fn(cand, y, idx), base_stat=lambda idx: fn(base, y, idx),
                        confidence=confidence, bootstrap=bootstrap, seed=seed,
                        order=sample_order(base, cand, y, agreement, *_unordered(spec, base, cand)))


def _mean_distributions(base: Predictions, cand: Predictions, agreement: Agreement | None, y, bootstrap: int,
                        seed: int) -> dict:
    """The resampled distributions of every per-sample mean this candidate has (records with resample MEAN;
    MOMENTS records get their columns' means), from one matrix of Poisson weights
    (fast.shared_mean_distributions), seeded by the policy's seed alone: the cost is in drawing the weights,
    so log_loss, brier_score and kl_divergence (mae, rmse and r2) together cost one."""
    columns = {}
    if y is not None:
        for spec in sample_metrics():
            # which columns exist depends on the outputs only (never on the rules), so the draws do too
            if spec.resample not in (fast.MEAN, fast.MOMENTS) or any(getattr(p, v) is None for v in spec.needs
                                                                    for p in (base, cand)):
                continue
            columns_of = per_sample if spec.resample == fast.MEAN else moment_columns
            b, c = columns_of(spec.name, base, y), columns_of(spec.name, cand, y)
            if b is not None and c is not None:
                columns[spec.name] = (c, b)
    if agreement is not None:
        for name, values in agree.per_sample(agreement).items():
            spec = get_metric(name)
            if values is not None and spec.resample == fast.MEAN:
                columns[name] = (values, None)
    return fast.shared_mean_distributions((base, cand, agreement, y), columns, n_resamples=bootstrap,
                                          seed=_seed(seed, "per-sample means"))


def _unordered(spec: MetricSpec, base: Predictions, cand: Predictions) -> list[np.ndarray]:
    """The vectors a metric reads that sample_order does not key on (top_prob, sum_sq_prob): keys too, so
    samples that tie on every key are interchangeable for this metric as well."""
    return [getattr(p, v) for v in spec.needs if v not in _ORDERED for p in (base, cand)]


def canonical_order(n: int, *arrays: np.ndarray | None) -> np.ndarray:
    """An order of the samples that depends only on what each sample holds (its label, predictions, scores),
    not on where it sits in the file. Resampling in this order makes every bootstrap interval, and so every
    verdict, the same for any permutation of the data: samples that tie on every key are interchangeable
    for any statistic of these arrays."""
    keys = []
    projection = np.random.Generator(np.random.PCG64(12345))
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a).reshape(n, -1)
        if a.shape[1] == 1:
            keys.append(a[:, 0])
        elif a.shape[1]:  # one key per row: a fixed random projection separates rows that differ
            keys.append(a.astype(np.float64) @ projection.standard_normal(a.shape[1]))
    return np.lexsort(keys[::-1]) if keys else np.arange(n)


def bootstrapped(name: str, n: int, *, base_value, cand_value, cand_stat, base_stat, confidence: float,
                 bootstrap: int, seed: int, order: np.ndarray | None = None) -> MetricResult:
    """A metric with paired bootstrap intervals of the delta, of the relative change and of the candidate's value.

    Both distributions come from the same resamples (same seed), so the delta is
    paired: each resample scores base and candidate on the same samples. The
    relative change takes the ratio within each resample (cand / base - 1), so the
    base's own sampling error is in its interval (see stats.relative_change_from_bootstrap).
    """
    s = _seed(seed, name)
    if order is not None:  # resample positions in the canonical order (see canonical_order)
        cand_stat = _in_order(cand_stat, order)
        base_stat = _in_order(base_stat, order) if base_stat is not None else None
    cand_dist = paired_bootstrap(cand_stat, n, n_resamples=bootstrap, seed=s)
    base_dist = paired_bootstrap(base_stat, n, n_resamples=bootstrap, seed=s) if base_stat is not None else None
    return from_distributions(name, n, base_value=base_value, cand_value=cand_value, cand_dist=cand_dist,
                              base_dist=base_dist, confidence=confidence)


def from_distributions(name: str, n: int, *, base_value, cand_value, cand_dist: np.ndarray,
                       base_dist: np.ndarray | None, confidence: float, method: str = "bootstrap") -> MetricResult:
    """A MetricResult from paired resampled distributions of the candidate and the base (row i of both from
    the same resample; base_dist None: a metric of the candidate alone). method: how they were drawn."""
    evidence = {"candidate_grid": quantile_grid(cand_dist)}
    delta_iv = relative_iv = None
    if base_dist is not None:
        delta_dist = cand_dist - base_dist
        delta_iv = percentile_interval(delta_dist, confidence, method)
        evidence["delta_grid"] = quantile_grid(delta_dist)
        if base_value is not None:
            rel = relative_change_from_bootstrap(cand_dist, base_dist, base_value=base_value, confidence=confidence,
                                                 method=method)
            relative_iv = rel.interval
            if rel.grid is not None:
                evidence["relative_grid"] = rel.grid
            if rel.unavailable is not None and base_value != 0:
                evidence["relative_unavailable"] = rel.unavailable
    return MetricResult(metric=name, n=n, base=_finite(base_value), candidate=_finite(cand_value),
                        delta=_finite(cand_value - base_value) if base_value is not None else None,
                        delta_interval=delta_iv, candidate_interval=percentile_interval(cand_dist, confidence, method),
                        relative_interval=relative_iv, evidence=evidence)


def _delong(name: str, *, base: Predictions, cand: Predictions, y: np.ndarray, n: int,
            confidence: float) -> MetricResult:
    """roc_auc with DeLong's paired normal intervals (fast.delong); the judge's grids are normal quantiles."""
    d = fast.delong(y, base.probs, cand.probs)
    if d is None:
        nan = Interval(low=math.nan, high=math.nan, method="delong")
        return MetricResult(metric=name, n=n, delta_interval=nan, candidate_interval=nan, relative_interval=nan,
                            evidence={})
    z = z_two_sided(confidence)
    delta = d.cand - d.base
    sd_delta, sd_cand = math.sqrt(d.var_delta), math.sqrt(max(d.var_cand, 0.0))
    evidence = {"candidate_grid": fast.normal_grid(d.cand, sd_cand, QUANTILE_LEVELS, 0.0, 1.0),
                "delta_grid": fast.normal_grid(delta, sd_delta, QUANTILE_LEVELS, -1.0, 1.0)}
    relative_iv = None
    if d.base > 0:
        # delta method for cand / base - 1 from the same covariance
        var_rel = (d.var_cand / d.base ** 2 - 2.0 * d.cand * d.cov / d.base ** 3
                   + d.cand ** 2 * d.var_base / d.base ** 4)
        rel, sd_rel = d.cand / d.base - 1.0, math.sqrt(max(var_rel, 0.0))
        relative_iv = Interval(low=max(rel - z * sd_rel, -1.0), high=rel + z * sd_rel, method="delong")
        evidence["relative_grid"] = fast.normal_grid(rel, sd_rel, QUANTILE_LEVELS, -1.0)
    return MetricResult(metric=name, n=n, base=_finite(d.base), candidate=_finite(d.cand), delta=_finite(delta),
                        delta_interval=Interval(low=max(delta - z * sd_delta, -1.0),
                                                high=min(delta + z * sd_delta, 1.0), method="delong"),
                        candidate_interval=Interval(low=max(d.cand - z * sd_cand, 0.0),
                                                    high=min(d.cand + z * sd_cand, 1.0), method="delong"),
                        relative_interval=relative_iv, evidence=evidence)


def _in_order(stat, order: np.ndarray):
    return lambda idx: stat(order[idx])


_ORDERED = ("pred", "true_prob", "true_rank", "values", "probs")  # the Predictions vectors sample_order reads


def sample_order(base: Predictions, cand: Predictions, y: np.ndarray | None, agreement: Agreement | None = None,
                 *extra: np.ndarray) -> np.ndarray:
    """canonical_order over everything a metric of these two models may read."""
    n = len(base.pred if base.pred is not None else base.values)
    arrays = [y, base.pred, cand.pred, base.true_prob, cand.true_prob, base.true_rank, cand.true_rank,
              base.values, cand.values, base.probs, cand.probs, *extra]
    if agreement is not None:
        arrays += [agreement.kl, agreement.cosine, agreement.max_abs]
    return canonical_order(n, *arrays)


def _agreement(name, spec, *, base, cand, agreement, y, n, confidence, bootstrap, seed, with_interval):
    if spec.method == PROPORTION:
        count = agree.flip_counts(base, cand, y)[name]
        return MetricResult(metric=name, n=n, candidate=count / n,
                            candidate_interval=wilson_interval(count, n, confidence), evidence={"k": count, "n": n})
    if spec.method == EXACT:  # max_abs_diff: the largest over all samples
        if agreement.max_abs is None:
            return MetricResult(metric=name, n=n, unavailable="the outputs of base and candidate differ in shape")
        return MetricResult(metric=name, n=n, candidate=float(np.max(agreement.max_abs)))
    values = agree.per_sample(agreement)[name]  # float32 per sample (gate/predictions.py): means in float64
    if values is None:
        why = "a model gives labels, not scores" if spec.needs_scores else \
            "the outputs of base and candidate differ in shape"
        return MetricResult(metric=name, n=n, unavailable=why)
    if with_interval and spec.method == BOOTSTRAP and spec.resample == fast.MEAN:
        draws = _mean_distributions(base, cand, agreement, y, bootstrap, seed)[name]
        return from_distributions(name, n, base_value=None, cand_value=float(values.mean(dtype=np.float64)),
                                  cand_dist=draws.cand, base_dist=None, confidence=confidence, method=draws.method)
    if with_interval and spec.method == BOOTSTRAP:
        return bootstrapped(name, n, base_value=None, cand_value=float(values.mean(dtype=np.float64)),
                            cand_stat=lambda idx: float(values[idx].mean(dtype=np.float64)), base_stat=None,
                            confidence=confidence, bootstrap=bootstrap, seed=seed,
                            order=canonical_order(n, values))
    return MetricResult(metric=name, n=n, candidate=float(values.mean(dtype=np.float64)))


def footprint(name: str, base: ModelInfo, cand: ModelInfo, n: int) -> MetricResult:
    """File-level facts: exact, no sampling error."""
    if name == "model_size_mb":
        b, c = base.size_bytes / 1e6, cand.size_bytes / 1e6
    elif name == "parameters":
        if base.parameters is None or cand.parameters is None:
            return MetricResult(metric=name, n=n, unavailable="parameter count unknown for this format")
        b, c = float(base.parameters), float(cand.parameters)
    else:
        return MetricResult(metric=name, n=n, unavailable="not measured by this version of the gate")
    exact = Interval(low=c - b, high=c - b, method="exact")
    return MetricResult(metric=name, n=n, base=b, candidate=c, delta=c - b, delta_interval=exact,
                        candidate_interval=Interval(low=c, high=c, method="exact"))


def is_footprint(name: str) -> bool:
    spec = get_metric(name)
    return spec is not None and spec.kind == FOOTPRINT


_EXACT_ZERO = Interval(low=0.0, high=0.0, method="same file as the base")


def as_the_base_itself(m: MetricResult) -> MetricResult:
    """The measurement of a candidate that is the base's own file (the same sha256): it computes the same
    function, so every difference with the base is exactly zero, and agreement is perfect, not estimated.
    (An interval from the samples would leave a copy of the base undecided against a bound of 0.)"""
    if m.unavailable:
        return m
    spec = get_metric(m.metric)
    evidence = dict(m.evidence or {})
    for key in ("delta_grid", "relative_grid"):
        if evidence.get(key):
            evidence[key] = [0.0] * len(evidence[key])
    changes = {}
    if m.delta is not None:
        changes.update(delta=0.0, delta_interval=_EXACT_ZERO,
                       relative_interval=_EXACT_ZERO if m.base else m.relative_interval)
    if spec is not None and spec.kind == AGREEMENT and m.candidate is not None:
        changes["candidate_interval"] = Interval(low=m.candidate, high=m.candidate, method=_EXACT_ZERO.method)
        if "candidate_grid" in evidence and evidence["candidate_grid"]:
            evidence["candidate_grid"] = [m.candidate] * len(evidence["candidate_grid"])
    return replace(m, evidence=evidence, **changes) if changes else m
