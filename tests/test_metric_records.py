"""Every metric record held to the same invariants, driven by the registry (STYLE.md habit 12).

For every metric computed from per-sample vectors (registry.sample_metrics()):
- its value equals the reference its record names (scikit-learn, or an independent numpy computation)
  on 2-, 3- and 7-class data (regression: 1 and 3 outputs);
- inside a slice it means what its record's `in_slice` says;
- a candidate identical to the base gives zero change and passes a rule in the regression direction,
  over all samples and per group;
- permuting the samples changes no number: value, change, intervals and the judge's evidence.
And the generated files (docs/metrics.md, policies/schema.json) equal the registry's text.
A new metric fails here until its reference is added below.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from gate import docs
from gate.judge import judge_candidate
from gate.measure.compare import compare
from gate.measure.groups import groupings_for, measure_groupings, wanted
from gate.measure.registry import (BOOTSTRAP, EXACT, PAIRED_PROPORTION, PROPORTION, SLICE_CLASSES, TIMED, VECTORS,
                                   get_metric, headline_for, known_names, metric_name_schema, sample_metrics,
                                   top_k_of)
from gate.measurements import CandidateMeasurements, ModelInfo
from gate.policy import json_schema, parse_policy
from gate.predictions import AgreementCollector, Collector, Predictions

N = 300
RESAMPLES = 30  # enough to draw an interval; the invariants hold for any number (and roc_auc is slow)
CLASSES = [2, 3, 7]
SK = "sklearn.metrics."

CLASSIFICATION = [s for s in sample_metrics() if "classification" in s.tasks]
REGRESSION = [s for s in sample_metrics() if "regression" in s.tasks]


# ---- references: computed from the labels and the class probabilities, independently of the gate -----

def ece_reference(y, probs) -> float:
    """Guo et al. 2017, top-label: M = 15 bins (m-1)/M < conf <= m/M, sum_m |B_m|/n |acc(B_m) - conf(B_m)|."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    total = 0.0
    for m in range(1, 16):
        inside = (conf > (m - 1) / 15) & (conf <= m / 15)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def brier_reference(y, probs) -> float:
    """Multiclass Brier score: mean_i sum_k (p_ik - [k = y_i])^2, in [0, 2]."""
    onehot = np.eye(probs.shape[1])[y]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def _top_k(y, probs, labels, name):
    with warnings.catch_warnings():  # top-5 of 2 or 3 classes is always right: sklearn says so, and is 1.0
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = probs[:, 1] if probs.shape[1] == 2 else probs  # sklearn takes a binary task's scores as one column
        return skm.top_k_accuracy_score(y, scores, k=top_k_of(name), labels=np.arange(probs.shape[1]))


def _roc_auc(y, probs, labels, name):
    if probs.shape[1] == 2:
        return skm.roc_auc_score(y, probs[:, 1])
    return skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")


# reference -> f(y, probs, labels, name); `labels`: the classes a class average is taken over (a slice's)
REFERENCES = {
    SK + "accuracy_score": lambda y, p, labels, name: skm.accuracy_score(y, p.argmax(axis=1)),
    SK + "balanced_accuracy_score": lambda y, p, labels, name: skm.balanced_accuracy_score(y, p.argmax(axis=1)),
    SK + "f1_score(average='macro')": lambda y, p, labels, name: skm.f1_score(
        y, p.argmax(axis=1), labels=labels, average="macro", zero_division=0),
    SK + "f1_score(average='weighted')": lambda y, p, labels, name: skm.f1_score(
        y, p.argmax(axis=1), average="weighted", zero_division=0),
    SK + "precision_score(average='macro')": lambda y, p, labels, name: skm.precision_score(
        y, p.argmax(axis=1), labels=labels, average="macro", zero_division=0),
    SK + "recall_score(average='macro')": lambda y, p, labels, name: skm.recall_score(
        y, p.argmax(axis=1), labels=labels, average="macro", zero_division=0),
    SK + "top_k_accuracy_score": _top_k,
    SK + "roc_auc_score(multi_class='ovr', average='macro')": _roc_auc,
    SK + "log_loss": lambda y, p, labels, name: skm.log_loss(y, p, labels=np.arange(p.shape[1])),
    "numpy (Guo et al. 2017)": lambda y, p, labels, name: ece_reference(y, p),
    SK + "brier_score_loss(scale_by_half=False)": lambda y, p, labels, name: skm.brier_score_loss(
        y, p, labels=np.arange(p.shape[1]), scale_by_half=False),
}
REGRESSION_REFERENCES = {
    SK + "mean_absolute_error": skm.mean_absolute_error,
    SK + "root_mean_squared_error": skm.root_mean_squared_error,
    SK + "r2_score": skm.r2_score,
}


# ---- data: two models' outputs through the gate's own collector ------------------------------------

def collect(raw: np.ndarray, y: np.ndarray, task: str = "classification", scores: str = "logits"):
    """(Predictions, log-probabilities) of one model's outputs, as the pipeline collects them."""
    col = Collector(n=len(raw), task=task, scores=scores, keep_probs=True, where="model.onnx",
                    labels_where="data.npz")
    logp = col.add(raw, y, 0, len(raw))
    return col.result(), logp


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Case:
    """Labels, a base, a candidate that differs on some samples, and their agreement."""

    def __init__(self, k: int, seed: int = 0):
        rng = np.random.default_rng(seed + 10 * k)
        self.k = k
        self.y = rng.integers(0, k, N)
        self.y[:k] = np.arange(k)  # every class present
        self.base_logits = rng.normal(scale=1.5, size=(N, k))
        self.base_logits[np.arange(N), self.y] += 1.5  # about 70% right, not calibrated
        self.cand_logits = self.base_logits + rng.normal(scale=0.6, size=(N, k))
        self.base, base_logp = collect(self.base_logits, self.y)
        self.cand, cand_logp = collect(self.cand_logits, self.y)
        agree = AgreementCollector(N)
        agree.add(self.base_logits, self.cand_logits, base_logp, cand_logp, 0, N)
        self.agreement = agree.result()
        self.groups = np.array(["north", "south", "east"])[rng.integers(0, 3, N)]

    def permuted(self, perm: np.ndarray) -> Case:
        out = object.__new__(Case)
        out.__dict__.update(self.__dict__)
        out.y, out.base, out.cand = self.y[perm], self.base.take(perm), self.cand.take(perm)
        out.base_logits, out.cand_logits, out.groups = self.base_logits[perm], self.cand_logits[perm], \
            self.groups[perm]
        a = self.agreement
        out.agreement = type(a)(kl=a.kl[perm], cosine=a.cosine[perm], max_abs=a.max_abs[perm])
        return out


_CASES: dict[int, Case] = {}


def case_of(k: int) -> Case:
    if k not in _CASES:
        _CASES[k] = Case(k)
    return _CASES[k]


def measure(name: str, c: Case, *, cand: Predictions | None = None, task: str = "classification", y=None,
            base: Predictions | None = None, agreement=None, with_interval: bool = True):
    return compare(name, base=base or c.base, cand=cand or c.cand, agreement=agreement or c.agreement,
                   y=c.y if y is None else y, task=task, confidence=0.95, bootstrap=RESAMPLES, seed=7,
                   with_interval=with_interval)


def regression_case(outputs: int, seed: int = 0):
    rng = np.random.default_rng(seed + outputs)
    y = rng.normal(size=(N, outputs)) if outputs > 1 else rng.normal(size=N)
    truth = y.reshape(N, -1)
    base, _ = collect(truth + rng.normal(scale=0.3, size=truth.shape), y, task="regression")
    cand, _ = collect(truth + rng.normal(scale=0.35, size=truth.shape), y, task="regression")
    return y, base, cand


# ---- the records themselves ------------------------------------------------------------------------

@pytest.mark.parametrize("spec", sample_metrics(), ids=lambda s: s.name)
def test_every_sample_metric_has_a_reference_and_reads_known_vectors(spec):
    assert spec.reference in {**REFERENCES, **REGRESSION_REFERENCES}, \
        f"{spec.name}: add its reference computation ({spec.reference!r}) to this file"
    assert spec.needs and set(spec.needs) <= set(VECTORS) <= {f.name for f in fields(Predictions)}
    assert spec.needs_labels and spec.method in (BOOTSTRAP, PAIRED_PROPORTION) and spec.per_group
    assert spec.description


def test_records_are_consistent():
    for name in known_names():
        spec = get_metric(name)
        assert spec.name == name and spec.method in (PAIRED_PROPORTION, PROPORTION, BOOTSTRAP, EXACT, TIMED)
        assert (spec.fn is not None) == (spec in sample_metrics()), name
    for task in ("classification", "regression"):
        headline = get_metric(headline_for(task))
        assert headline.fn is not None and task in headline.tasks and headline.per_group
        assert sum(1 for n in known_names() if get_metric(n).headline and task in get_metric(n).tasks) == 1
    assert headline_for("classification") == "accuracy" and headline_for("regression") == "mae"
    assert get_metric("top_3_accuracy").fn is not None and get_metric("top_3_accuracy").needs == ("true_rank",)
    for name in ("ece", "brier_score"):
        spec = get_metric(name)
        assert not spec.higher_is_better and spec.method == BOOTSTRAP and spec.per_group and spec.needs_scores


# ---- the value is the reference's --------------------------------------------------------------------

@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("spec", CLASSIFICATION, ids=lambda s: s.name)
def test_value_equals_the_reference(spec, k):
    c = case_of(k)
    probs = softmax(c.base_logits)
    expected = REFERENCES[spec.reference](c.y, probs, np.arange(k), spec.name)
    assert spec.fn(c.base, c.y) == pytest.approx(expected, rel=1e-9, abs=1e-6)
    result = measure(spec.name, c, with_interval=False)
    if result.unavailable is None:  # top-5 of fewer classes is refused, not measured
        assert result.base == pytest.approx(expected, rel=1e-9, abs=1e-6)
        assert result.candidate == pytest.approx(
            REFERENCES[spec.reference](c.y, softmax(c.cand_logits), np.arange(k), spec.name), rel=1e-9, abs=1e-6)
    else:
        assert top_k_of(spec.name) is not None and top_k_of(spec.name) >= k


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("spec", REGRESSION, ids=lambda s: s.name)
def test_regression_value_equals_the_reference(spec, outputs):
    y, base, _ = regression_case(outputs)
    expected = REGRESSION_REFERENCES[spec.reference](y, base.values if outputs > 1 else base.values[:, 0])
    assert spec.fn(base, y) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("spec", CLASSIFICATION, ids=lambda s: s.name)
def test_inside_a_slice_the_record_says_what_it_means(spec, k):
    c = case_of(k)
    idx = np.flatnonzero(c.y >= k // 2)  # a slice that lacks some classes
    classes = np.unique(c.y[idx])
    value = spec.function(classes)(c.base, c.y, idx)
    if spec.in_slice == SLICE_CLASSES:  # averaged over the slice's own true classes
        expected = REFERENCES[spec.reference](c.y[idx], softmax(c.base_logits[idx]), classes, spec.name)
    else:  # the same definition over the slice's samples
        expected = spec.fn(c.base.take(idx), c.y[idx])
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-12) or (np.isnan(value) and np.isnan(expected))


# ---- invariants ------------------------------------------------------------------------------------

def _regression_rule(spec, bound: float = 0.05) -> str:
    return f"max_drop: {bound}" if spec.higher_is_better else f"max_increase: {bound}"


def _judged(spec, c: Case, cand: Predictions, per_group: bool = True, relative: bool = False):
    """The verdict of rules on spec over all samples and per group, measured as the pipeline measures."""
    bound = _regression_rule(spec).replace("max_", "max_relative_") if relative else _regression_rule(spec)
    text = f"version: 1\nrules:\n  - metric: {spec.name}\n    {bound}\n"
    if per_group:
        text += f"  - metric: {spec.name}\n    per: group\n    {bound}\n"
    policy = parse_policy(text, "p.yaml", Path("."))
    each, gaps, fairness, per_class = wanted(policy.rules)
    groupings = groupings_for({"region": c.groups}, ("region",), c.y, per_class=per_class)
    grouped = measure_groupings(groupings, base=c.base, cand=cand, agreement=c.agreement, y=c.y,
                                task="classification", each=each, gaps=gaps, fairness=fairness, confidence=0.95,
                                bootstrap=RESAMPLES, seed=7)
    overall = {spec.name: measure(spec.name, c, cand=cand)}
    measured = CandidateMeasurements(info=ModelInfo(name="c", path="c.onnx"), metrics=overall, groupings=grouped)
    return judge_candidate(policy, measured, confidence=0.95), overall[spec.name], grouped


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("spec", CLASSIFICATION, ids=lambda s: s.name)
def test_an_identical_candidate_has_zero_change_and_passes(spec, k):
    c = case_of(k)
    same = c.base.take(np.arange(N))  # equal vectors, other arrays
    verdict, result, grouped = _judged(spec, c, same)
    if result.unavailable:
        assert top_k_of(spec.name) is not None and top_k_of(spec.name) >= k
        return
    assert result.delta == 0 and result.base == result.candidate
    assert result.delta_interval.low <= 0 <= result.delta_interval.high
    if spec.method == BOOTSTRAP:
        assert result.delta_interval.low == result.delta_interval.high == 0
    for group in grouped[0].groups:
        m = group.metrics[spec.name]
        assert m.unavailable or m.delta == 0 or (m.delta is None and np.isnan(spec.fn(c.base, c.y, np.flatnonzero(
            c.groups == group.key))))
    assert verdict.verdict == "pass", [(r.text, r.status, r.reason) for r in verdict.rules]
    relative, _, _ = _judged(spec, c, same, per_group=False, relative=True)
    assert relative.verdict == "pass", [(r.text, r.status, r.reason) for r in relative.rules]


def _same(a, b, path=""):
    """Equal numbers, to rounding (summation order), everywhere in two results."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12) or (np.isnan(a) and np.isnan(b)), path
    else:
        assert a == b, path


@pytest.mark.parametrize("k", CLASSES)
@pytest.mark.parametrize("spec", CLASSIFICATION, ids=lambda s: s.name)
def test_permuting_the_samples_changes_no_number(spec, k):
    c = case_of(k)
    shuffled = c.permuted(np.random.default_rng(k).permutation(N))
    _same(measure(spec.name, c).to_dict(), measure(spec.name, shuffled).to_dict(), spec.name)


@pytest.mark.parametrize("spec", REGRESSION, ids=lambda s: s.name)
def test_regression_invariants(spec):
    y, base, cand = regression_case(3)
    c = object.__new__(Case)
    c.y, c.base, c.cand, c.agreement = y, base, cand, None
    same = measure(spec.name, c, cand=base.take(np.arange(N)), task="regression")
    assert same.delta == 0 and same.delta_interval.low == same.delta_interval.high == 0
    perm = np.random.default_rng(1).permutation(N)
    moved = measure(spec.name, c, task="regression", y=y[perm], base=base.take(perm), cand=cand.take(perm))
    _same(measure(spec.name, c, task="regression").to_dict(), moved.to_dict(), spec.name)


# ---- expected calibration error and the Brier score ---------------------------------------------------

def _labels_only(pred, y, top, sum_sq=None, true=None):
    return Predictions(kind="probabilities", pred=np.asarray(pred), values=None, true_prob=true, true_rank=None,
                       probs=None, n_classes=2, top_prob=np.asarray(top, dtype=float), sum_sq_prob=sum_sq)


def test_ece_by_hand():
    from gate.measure.quality import ece

    y = np.array([0, 0, 0, 0, 1])
    # bin (0.8667, 0.9333]: conf 0.9 x 4 with 3 right -> |0.75 - 0.9| x 4/5; bin (0.4667, 0.5333]: 0.5, wrong
    assert ece(_labels_only([0, 0, 0, 1, 0], y, [0.9, 0.9, 0.9, 0.9, 0.5]), y) == pytest.approx(
        0.15 * 4 / 5 + 0.5 * 1 / 5)
    # calibrated: 80% right at 0.8 confidence
    assert ece(_labels_only([0, 0, 0, 0, 0], y, [0.8] * 5), y) == pytest.approx(0.0, abs=1e-15)
    # an edge belongs to the bin it closes: 10/15 with 9/15 goes to (9/15, 10/15], not the next one
    on_edge = _labels_only([0, 1], np.array([0, 0]), [10 / 15, 11 / 15])
    assert ece(on_edge, np.array([0, 0])) == pytest.approx(ece_reference(
        np.array([0, 0]), np.array([[10 / 15, 5 / 15], [4 / 15, 11 / 15]])))


def test_brier_of_two_classes_is_twice_sklearns_positive_class_form():
    c = case_of(2)
    p1 = softmax(c.base_logits)[:, 1]
    binary = skm.brier_score_loss(c.y, p1)  # mean (p_1 - y)^2
    assert get_metric("brier_score").fn(c.base, c.y) == pytest.approx(2 * binary, rel=1e-9)
    # a one-column probability output reads the same
    single, _ = collect(p1.astype(np.float64), c.y, scores="probabilities")
    assert get_metric("brier_score").fn(single, c.y) == pytest.approx(2 * binary, rel=1e-9)
    assert get_metric("brier_score").fn(c.base, c.y) == pytest.approx(brier_reference(c.y, softmax(c.base_logits)))


@pytest.mark.parametrize("name", ["ece", "brier_score"])
def test_a_worse_calibrated_candidate_fails_an_increase_bound(name):
    c = case_of(3)
    overconfident, _ = collect(c.base_logits * 4, c.y)  # same predictions, far too sure
    verdict, result, _ = _judged(get_metric(name), c, overconfident)
    assert result.delta > 0.05 and result.delta_interval.low > 0.05
    assert [r.status for r in verdict.rules] == ["fail", "fail"] or verdict.rules[0].status == "fail"
    assert verdict.verdict == "fail"


@pytest.mark.parametrize("name", ["ece", "brier_score"])
def test_policy_accepts_increase_bounds_and_refuses_drop_bounds(name):
    for bound in ("max: 0.1", "max_increase: 0.01", "max_relative_increase: 0.1"):
        parse_policy(f"version: 1\nrules:\n  - metric: {name}\n    per: group\n    {bound}\n", "p.yaml", Path("."))
    from gate.errors import GateInputError
    with pytest.raises(GateInputError) as info:
        parse_policy(f"version: 1\nrules:\n  - metric: {name}\n    max_drop: 0.01\n", "p.yaml", Path("."))
    assert "lower-is-better" in info.value.render() and "max_increase" in info.value.render()


def test_label_outputs_give_no_calibration_numbers():
    c = case_of(3)
    labels, _ = collect(c.base_logits.argmax(axis=1), c.y)
    for name in ("ece", "brier_score"):
        assert measure(name, c, base=labels, cand=labels).unavailable == "a model gives labels, not scores"


# ---- generated files -----------------------------------------------------------------------------

def test_generated_files_equal_the_committed_ones():
    for path, text in docs.generated().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python -m gate.docs"
    assert docs.main(["--check"]) == 0


def test_schema_names_every_metric_of_the_registry():
    metric = json_schema()["properties"]["rules"]["items"]["properties"]["metric"]
    assert metric == metric_name_schema()
    enum, pattern = metric["anyOf"][0]["enum"], metric["anyOf"][1]["pattern"]
    assert set(enum) | {"top_5_accuracy"} == set(known_names()) and "ece" in enum and "brier_score" in enum
    import re
    assert re.match(pattern, "top_3_accuracy") and not re.match(pattern, "top_0_accuracy")
    table = docs.METRICS_DOC.read_text(encoding="utf-8")
    for name in enum:
        assert f"| `{name}` |" in table, name
