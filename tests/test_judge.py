"""The judge is a pure function: decisions from intervals and bounds, nothing else."""

from pathlib import Path

import pytest

from gate.judge import evaluate, judge
from gate.measure.stats import Interval, paired_proportion_diff_interval, wilson_interval
from gate.measurements import CandidateMeasurements, Measurements, MetricResult, ModelInfo
from gate.policy import Rule, parse_policy


def rule(metric, kind, bound, severity="fail"):
    return Rule(index=1, line=1, metric=metric, bound_kind=kind, bound=bound, severity=severity)


def accuracy(b, c, n, base_acc):
    return MetricResult(metric="accuracy", n=n, base=base_acc, candidate=base_acc + (c - b) / n,
                        delta=(c - b) / n, delta_interval=paired_proportion_diff_interval(b, c, n, 0.95),
                        candidate_interval=wilson_interval(round((base_acc + (c - b) / n) * n), n, 0.95),
                        discordant_rate=(b + c) / n)


def run(r, m, inconclusive="fail"):
    return evaluate(r, m, confidence=0.95, inconclusive=inconclusive)


def test_clear_drop_fails_clear_equality_passes():
    assert run(rule("accuracy", "max_drop", 0.01), accuracy(60, 0, 1000, 0.9)).status == "fail"
    assert run(rule("accuracy", "max_drop", 0.02), accuracy(3, 3, 2000, 0.9)).status == "pass"


def test_straddling_interval_is_inconclusive_with_sample_advice():
    result = run(rule("accuracy", "max_drop", 0.01), accuracy(10, 2, 1000, 0.9))
    assert result.status == "inconclusive" and result.blocking
    assert result.samples_needed and result.samples_needed > 1000
    assert "samples would decide it" in result.reason
    assert not run(rule("accuracy", "max_drop", 0.01), accuracy(10, 2, 1000, 0.9), "warn").blocking


def test_warn_severity_never_blocks():
    result = run(rule("accuracy", "max_drop", 0.01, "warn"), accuracy(60, 0, 1000, 0.9))
    assert result.status == "warn" and not result.blocking


def test_bound_text_resolves_the_bound_in_words():
    result = run(rule("accuracy", "max_drop", 0.01), accuracy(0, 0, 1000, 0.8385))
    assert result.bound_text == "candidate accuracy >= base - 0.0100 = 0.8285"
    rel = run(rule("accuracy", "max_relative_drop", 0.05), accuracy(0, 0, 1000, 0.9))
    assert rel.bound_text == "candidate accuracy >= base x (1 - 0.05) = 0.8550"


def test_relative_drop_is_judged_on_the_base_scale():
    # base 0.9, drop 0.04 = 4.4% relative: inside 5%; drop 0.06 = 6.7%: beyond
    assert run(rule("accuracy", "max_relative_drop", 0.05), accuracy(40, 0, 20000, 0.9)).status == "pass"
    failed = run(rule("accuracy", "max_relative_drop", 0.05), accuracy(1200, 0, 20000, 0.9))
    assert failed.status == "fail" and failed.observed == pytest.approx(0.06 / 0.9)


def exact(metric, base, cand):
    return MetricResult(metric=metric, n=10, base=base, candidate=cand, delta=cand - base,
                        delta_interval=Interval(low=cand - base, high=cand - base, method="exact"),
                        candidate_interval=Interval(low=cand, high=cand, method="exact"))


def test_zero_base_relative_increase_fails_any_increase():
    assert run(rule("mae", "max_relative_increase", 0.5), exact("mae", 0.0, 0.001)).status == "fail"
    assert run(rule("mae", "max_relative_increase", 0.5), exact("mae", 0.0, 0.0)).status == "pass"


def test_absolute_bounds_on_exact_metrics_are_inclusive():
    assert run(rule("model_size_mb", "max", 4.0), exact("model_size_mb", 16.0, 4.0)).status == "pass"
    assert run(rule("model_size_mb", "max", 4.0), exact("model_size_mb", 16.0, 4.0000001)).status == "fail"
    assert run(rule("parameters", "min", 10), exact("parameters", 100, 9)).status == "fail"


def test_unmeasurable_metric_is_an_error_never_a_pass():
    missing = run(rule("roc_auc", "max_drop", 0.01), None)
    assert missing.status == "error" and missing.blocking
    unavailable = run(rule("kl_divergence", "max", 0.1),
                      MetricResult(metric="kl_divergence", n=10, unavailable="a model gives labels, not scores"))
    assert unavailable.status == "error" and "labels, not scores" in unavailable.reason


def test_bootstrap_metric_without_interval_is_an_error():
    m = MetricResult(metric="f1_macro", n=100, base=0.9, candidate=0.89, delta=-0.01)
    result = run(rule("f1_macro", "max_drop", 0.02), m)
    assert result.status == "error" and "interval" in result.reason


def _measurements(candidates):
    info = ModelInfo(name="base", path="b.onnx", sha256="0" * 64, size_bytes=10)
    return Measurements(task="classification", n_samples=1000, confidence=0.95, seed=0, bootstrap=1000, base=info,
                        candidates=tuple(candidates), data={"sha256": "x"}, provenance={})


def test_identical_candidate_always_passes_and_broken_candidate_fails():
    policy = parse_policy("version: 1\nrules:\n  - metric: accuracy\n    max_drop: 0.01\n", "p.yaml", Path("."))
    good = CandidateMeasurements(info=ModelInfo(name="same", path="s.onnx"),
                                 metrics={"accuracy": accuracy(0, 0, 1000, 0.9)})
    broken = CandidateMeasurements(info=ModelInfo(name="bad", path="x.onnx"), error="cannot load",
                                   error_kind="input")
    verdict = judge(policy, _measurements([good, broken]))
    assert [c.verdict for c in verdict.candidates] == ["pass", "fail"]
    assert verdict.verdict == "fail" and verdict.input_errors == ("cannot load",)
    assert judge(policy, _measurements([good])).verdict == "pass"
