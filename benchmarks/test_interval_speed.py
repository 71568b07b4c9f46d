"""Intervals on 100,000 samples: the index bootstrap against the sufficient-statistic methods (issue 12).

The same predictions (the MLP 784-512-512-10 of conftest.py and its int8 twin, run once with
onnxruntime) are judged for accuracy, f1_macro, balanced_accuracy, roc_auc, log_loss and kl_divergence
with 1,000 resamples:
- new: gate.measure.compare.compare, as the pipeline calls it (cell multinomial, DeLong, Poisson weights);
- old: the index bootstrap these metrics used before (compare.bootstrapped over sample_order, the metric
  function called on every resample; roc_auc through scikit-learn's roc_auc_score as quality.roc_auc did).
  log_loss's time includes drawing the Poisson weights that kl_divergence then reuses (one matrix of weights
  per candidate for every per-sample mean), so read the two together.
  The old method's cost is linear in the resamples (one metric call per resample and model), so it is
  timed on GATE_BENCH_OLD_RESAMPLES resamples (default 20) and scaled to 1,000; the figures say so.

    python -m pytest benchmarks/test_interval_speed.py --benchmark-only
    GATE_BENCH_OLD_RESAMPLES=1000 python -m pytest benchmarks/test_interval_speed.py --benchmark-only  # no scaling
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import SUMMARY

from gate.measure import fast
from gate.measure.compare import _unordered, bootstrapped, compare, sample_order
from gate.measure.registry import get_metric
from gate.predictions import Agreement, Predictions

RESAMPLES = 1000
OLD_RESAMPLES = int(os.environ.get("GATE_BENCH_OLD_RESAMPLES", "20"))
METRICS = ("accuracy", "f1_macro", "balanced_accuracy", "roc_auc", "log_loss", "kl_divergence")
ROUNDS = int(os.environ.get("GATE_BENCH_ROUNDS", "3"))


def _predictions(logits: np.ndarray, y: np.ndarray) -> tuple[Predictions, np.ndarray]:
    z = logits.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    probs = np.exp(logp)
    true_logp = logp[np.arange(len(y)), y]
    return Predictions(kind="logits", pred=logp.argmax(axis=1), values=None, true_prob=np.exp(true_logp),
                       true_rank=(logp > true_logp[:, None]).sum(axis=1).astype(np.int32),
                       probs=probs.astype(np.float32), n_classes=probs.shape[1], top_prob=probs.max(axis=1),
                       sum_sq_prob=(probs ** 2).sum(axis=1)), logp


@pytest.fixture(scope="module")
def outputs(mlp_assets):
    import onnxruntime as ort

    data = np.load(mlp_assets.data)
    pixels, y = data["pixels"], data["label"]
    logits = []
    for path in (mlp_assets.base, mlp_assets.int8):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits.append(np.concatenate([session.run(None, {"input": pixels[i:i + 4096]})[0]
                                      for i in range(0, len(y), 4096)]))
    base, logp_b = _predictions(logits[0], y)
    cand, logp_c = _predictions(logits[1], y)
    pb, pc = np.exp(logp_b), np.exp(logp_c)
    kl = (pb * (logp_b - logp_c)).sum(axis=1)
    cosine = (logits[0] * logits[1]).sum(axis=1) / (np.linalg.norm(logits[0], axis=1) *
                                                    np.linalg.norm(logits[1], axis=1))
    agreement = Agreement(kl=kl, cosine=cosine.astype(np.float64), max_abs=np.abs(logits[0] - logits[1]).max(axis=1))
    return base, cand, agreement, y


def _sklearn_roc_auc(p, y, idx=None):
    """quality.roc_auc as it was: scikit-learn on every call."""
    from sklearn.metrics import roc_auc_score

    yy, probs = (y, p.probs) if idx is None else (y[idx], p.probs[idx])
    if len(np.unique(yy)) < probs.shape[1]:
        return float("nan")
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return float(roc_auc_score(yy, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))


def _old(name: str, base, cand, agreement, y, resamples: int):
    """The index bootstrap as compare() ran it before issue 12."""
    spec = get_metric(name)
    if name == "kl_divergence":
        values = agreement.kl
        from gate.measure.compare import canonical_order
        return bootstrapped(name, len(y), base_value=None, cand_value=float(values.mean()),
                            cand_stat=lambda idx: float(values[idx].mean()), base_stat=None, confidence=0.95,
                            bootstrap=resamples, seed=0, order=canonical_order(len(y), values))
    fn = _sklearn_roc_auc if name == "roc_auc" else spec.function()
    return bootstrapped(name, len(y), base_value=fn(base, y, None), cand_value=fn(cand, y, None),
                        cand_stat=lambda idx: fn(cand, y, idx), base_stat=lambda idx: fn(base, y, idx),
                        confidence=0.95, bootstrap=resamples, seed=0,
                        order=sample_order(base, cand, y, agreement, *_unordered(spec, base, cand)))


def _new(name: str, base, cand, agreement, y):
    return compare(name, base=base, cand=cand, agreement=agreement, y=y, task="classification", confidence=0.95,
                   bootstrap=RESAMPLES, seed=0, with_interval=True)


def test_interval_time_old_vs_new(benchmark, outputs):
    base, cand, agreement, y = outputs
    n = len(y)
    new_times: dict[str, list[float]] = {m: [] for m in METRICS}
    results = {}

    def run_new():
        # a fresh pipeline run: nothing cached from the previous round (the base's AUC components and the
        # shared weights of the per-sample means are cached within one run, across metrics and candidates)
        fast.clear_caches()
        for name in METRICS:
            start = time.perf_counter()
            results[name] = _new(name, base, cand, agreement, y)
            new_times[name].append(time.perf_counter() - start)

    benchmark.pedantic(run_new, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    old_times, old_results = {}, {}
    for name in METRICS:
        if name == "accuracy":  # closed form before and after (Tango, Wilson): nothing to compare
            old_times[name] = min(new_times[name])
            continue
        start = time.perf_counter()
        old_results[name] = _old(name, base, cand, agreement, y, OLD_RESAMPLES)
        old_times[name] = (time.perf_counter() - start) * RESAMPLES / OLD_RESAMPLES

    lines = [f"{n:,} samples, MLP 784-512-512-10 vs its int8 twin, {RESAMPLES} resamples; old method timed on "
             f"{OLD_RESAMPLES} resamples and scaled x{RESAMPLES / OLD_RESAMPLES:g}; new: best of {ROUNDS}"]
    def shown(name):
        iv = results[name].delta_interval if results[name].delta_interval is not None else \
            results[name].candidate_interval
        return f"interval [{iv.low:+.5f}, {iv.high:+.5f}] ({iv.method})"

    _old_vs_new(benchmark, lines, METRICS, old_times, new_times, shown, total="all six", n=n)
    SUMMARY.extend(["intervals: old index bootstrap vs sufficient statistics", *lines])
    print("\n" + "\n".join(lines))


# ---- the remaining metrics (issue 12, "every interval at the floor") ------------------------------------
# ece (Poisson bin sums), rmse and r2 (Poisson moments, sharing mae's weights), the gap between subgroups
# (cells by subgroup for accuracy and f1_macro, Poisson sums by subgroup for log_loss and ece) and the
# fairness metrics (cells by subgroup). Regression and binary outputs are derived from the same two models:
# the regression output is each model's expected class (sum_k k p_k) against the label, the binary one
# "class >= 5". Four subgroups of 40 / 30 / 20 / 10% (seeded). The new gap and fairness times are
# groups.measure_groupings asked for that one gap or fairness metric (including each subgroup's accuracy
# and flips, which the old figure leaves out).

GAPS = ("accuracy", "f1_macro", "log_loss", "ece", "roc_auc")
FAIRNESS = ("demographic_parity_difference", "equalized_odds_difference")


def _regression(p: Predictions) -> Predictions:
    expected = p.probs.astype(np.float64) @ np.arange(p.probs.shape[1], dtype=np.float64)
    return Predictions(kind="values", pred=None, values=expected[:, None], true_prob=None, true_rank=None,
                       probs=None, n_classes=None)


def _binary(p: Predictions) -> Predictions:
    return Predictions(kind="labels", pred=(p.pred >= 5).astype(np.int64), values=None, true_prob=None,
                       true_rank=None, probs=None, n_classes=2)


def _old_gap(name, base, cand, y, grouping, eligible, agreement, resamples):
    """The gap as groups.measure_groupings drew it before: _gap_stat over every index resample."""
    from gate.measure.groups import _gap_stat

    fn = get_metric(name).function()
    b_stat, c_stat = _gap_stat(fn, base, y, grouping, eligible), _gap_stat(fn, cand, y, grouping, eligible)
    idx = np.arange(len(y))
    return bootstrapped(f"{name} gap {grouping.name}", len(y), base_value=b_stat(idx), cand_value=c_stat(idx),
                        cand_stat=c_stat, base_stat=b_stat, confidence=0.95, bootstrap=resamples, seed=0,
                        order=sample_order(base, cand, y, agreement, grouping.codes))


def _old_fairness(name, base, cand, y, grouping, agreement, resamples):
    from gate.measure.groups import _fairness_stat

    b_stat, c_stat = _fairness_stat(name, base, y, grouping), _fairness_stat(name, cand, y, grouping)
    idx = np.arange(len(y))
    return bootstrapped(f"{name} {grouping.name}", len(y), base_value=b_stat(idx), cand_value=c_stat(idx),
                        cand_stat=c_stat, base_stat=b_stat, confidence=0.95, bootstrap=resamples, seed=0,
                        order=sample_order(base, cand, y, agreement, grouping.codes))


def test_interval_time_old_vs_new_remaining_metrics(benchmark, outputs):
    from gate.measure.groups import make_grouping, measure_groupings

    base, cand, agreement, y = outputs
    n = len(y)
    column = np.random.default_rng(5).choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    grouping = make_grouping({"segment": column}, ("segment",))
    eligible = list(range(len(grouping.keys)))
    reg_b, reg_c, reg_y = _regression(base), _regression(cand), y.astype(np.float64)
    bin_b, bin_c, bin_y = _binary(base), _binary(cand), (y >= 5).astype(np.int64)
    none = Agreement(kl=None, cosine=None, max_abs=None)
    cases = {  # name -> (new, old)
        "ece": (lambda: _new("ece", base, cand, agreement, y),
                lambda r: _old_overall("ece", base, cand, agreement, y, r)),
        "rmse": (lambda: compare("rmse", base=reg_b, cand=reg_c, agreement=none, y=reg_y, task="regression",
                                 confidence=0.95, bootstrap=RESAMPLES, seed=0, with_interval=True),
                 lambda r: _old_overall("rmse", reg_b, reg_c, none, reg_y, r)),
        "r2": (lambda: compare("r2", base=reg_b, cand=reg_c, agreement=none, y=reg_y, task="regression",
                               confidence=0.95, bootstrap=RESAMPLES, seed=0, with_interval=True),
               lambda r: _old_overall("r2", reg_b, reg_c, none, reg_y, r)),
    }
    for name in GAPS:
        cases[f"{name} gap"] = (
            lambda name=name: measure_groupings([grouping], base=base, cand=cand, agreement=agreement, y=y,
                                                task="classification", each={}, gaps={name: 1}, fairness=set(),
                                                confidence=0.95, bootstrap=RESAMPLES, seed=0)[0].gaps[name],
            lambda r, name=name: _old_gap(name, base, cand, y, grouping, eligible, agreement, r))
    for name in FAIRNESS:
        cases[name] = (
            lambda name=name: measure_groupings([grouping], base=bin_b, cand=bin_c, agreement=none, y=bin_y,
                                                task="classification", each={}, gaps={}, fairness={name},
                                                confidence=0.95, bootstrap=RESAMPLES, seed=0)[0].fairness[name],
            lambda r, name=name: _old_fairness(name, bin_b, bin_c, bin_y, grouping, none, r))
    new_times: dict[str, list[float]] = {m: [] for m in cases}
    results = {}

    def run_new():
        fast.clear_caches()
        for name, (new, _) in cases.items():
            start = time.perf_counter()
            results[name] = new()
            new_times[name].append(time.perf_counter() - start)

    benchmark.pedantic(run_new, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    old_times, old_results = {}, {}
    for name, (_, old) in cases.items():
        start = time.perf_counter()
        old_results[name] = old(OLD_RESAMPLES)
        old_times[name] = (time.perf_counter() - start) * RESAMPLES / OLD_RESAMPLES

    lines = [f"{n:,} samples, {RESAMPLES} resamples, 4 subgroups; old method timed on {OLD_RESAMPLES} resamples and "
             f"scaled x{RESAMPLES / OLD_RESAMPLES:g}; new: best of {ROUNDS}"]
    def shown(name):
        iv, old_iv = results[name].delta_interval, old_results[name].delta_interval
        return (f"delta [{iv.low:+.5f}, {iv.high:+.5f}] (old, {OLD_RESAMPLES} resamples: "
                f"[{old_iv.low:+.5f}, {old_iv.high:+.5f}])")

    _old_vs_new(benchmark, lines, cases, old_times, new_times, shown, total="all", n=n)
    SUMMARY.extend(["intervals, remaining metrics: old index bootstrap vs sufficient statistics", *lines])
    print("\n" + "\n".join(lines))


def _old_vs_new(benchmark, lines: list, names, old_times: dict, new_times: dict, shown, *, total: str, n: int):
    """One line per metric (old time, best new time, their ratio, what shown(name) says) and a total, into
    `lines` and the benchmark's extra_info."""
    width = max(len(total), *(len(name) for name in names))
    total_old = total_new = 0.0
    info = {}
    for name in names:
        new = min(new_times[name])
        total_old += old_times[name]
        total_new += new
        lines.append(f"  {name:{width}s} old {old_times[name]:8.2f} s   new {new:7.3f} s   old/new "
                     f"{old_times[name] / new:8.1f}x   {shown(name)}")
        info[name] = {"old_s": old_times[name], "new_s": new, "ratio": old_times[name] / new}
    lines.append(f"  {total:{width}s} old {total_old:8.2f} s   new {total_new:7.3f} s   old/new "
                 f"{total_old / total_new:8.1f}x")
    benchmark.extra_info.update({"n_samples": n, "resamples": RESAMPLES, "old_resamples": OLD_RESAMPLES,
                                 "metrics": info, "total_old_s": total_old, "total_new_s": total_new})


def _old_overall(name: str, base, cand, agreement, y, resamples: int):
    """The index bootstrap of an overall metric as compare() ran it before (one call per resample and model)."""
    spec = get_metric(name)
    fn = spec.function()
    return bootstrapped(name, len(y), base_value=fn(base, y, None), cand_value=fn(cand, y, None),
                        cand_stat=lambda idx: fn(cand, y, idx), base_stat=lambda idx: fn(base, y, idx),
                        confidence=0.95, bootstrap=resamples, seed=0,
                        order=sample_order(base, cand, y, agreement, *_unordered(spec, base, cand)))
