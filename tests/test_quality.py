"""Every numpy metric held to scikit-learn's value (the oracle), on masks too."""

import numpy as np
import pytest
from sklearn import metrics as skm

from gate.measure import quality
from gate.measure.registry import get_metric, sample_metrics
from gate.predictions import Predictions


def _cls(pred, y, k, seed=0, probs=None):
    rng = np.random.default_rng(seed)
    if probs is None:
        logits = rng.normal(size=(len(y), k))
        logits[np.arange(len(y)), pred] += 5.0  # the argmax is the prediction
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true_prob = probs[np.arange(len(y)), y]
    rank = (probs > true_prob[:, None]).sum(axis=1)
    return Predictions(kind="probabilities", pred=pred, values=None, true_prob=true_prob, true_rank=rank,
                       probs=probs.astype(np.float32), n_classes=k, top_prob=probs.max(axis=1),
                       sum_sq_prob=(probs ** 2).sum(axis=1)), probs


@pytest.fixture(params=[2, 3, 7])
def case(request):
    k = request.param
    rng = np.random.default_rng(k)
    n = 400
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    if k == 7:
        pred[pred == 6] = 5  # a class never predicted: precision's 0/0 case
    p, probs = _cls(pred, y, k)
    return p, y, pred, probs, k


def test_confusion_metrics_match_sklearn(case):
    p, y, pred, _, _ = case
    with np.errstate(all="ignore"):
        expected = {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "f1_macro": skm.f1_score(y, pred, average="macro", zero_division=0),
            "f1_weighted": skm.f1_score(y, pred, average="weighted", zero_division=0),
            "precision_macro": skm.precision_score(y, pred, average="macro", zero_division=0),
            "recall_macro": skm.recall_score(y, pred, average="macro", zero_division=0),
        }
    for name, value in expected.items():
        assert get_metric(name).fn(p, y) == pytest.approx(value, abs=1e-12), name


def test_score_metrics_match_sklearn(case):
    p, y, _, probs, k = case
    assert quality.log_loss(p, y) == pytest.approx(skm.log_loss(y, probs, labels=np.arange(k)), rel=1e-6)
    expected_auc = skm.roc_auc_score(y, probs[:, 1]) if k == 2 else \
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert quality.roc_auc(p, y) == pytest.approx(expected_auc, abs=1e-6)
    if k > 2:
        top2 = quality.function_for("top_2_accuracy")
        assert top2(p, y) == pytest.approx(skm.top_k_accuracy_score(y, probs, k=2, labels=np.arange(k)))


def test_metrics_on_an_index_set_equal_metrics_on_the_subset(case):
    p, y, pred, probs, k = case
    idx = np.arange(0, len(y), 3)
    sub, _ = _cls(pred[idx], y[idx], k, probs=probs[idx])
    for name in ("accuracy", "f1_macro", "balanced_accuracy", "log_loss"):
        fn = get_metric(name).fn
        assert fn(p, y, idx) == pytest.approx(fn(sub, y[idx]))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    values = (y + rng.normal(scale=0.3, size=300)).reshape(-1, 1)
    p = Predictions(kind="values", pred=None, values=values, true_prob=None, true_rank=None, probs=None,
                    n_classes=None)
    assert quality.mae(p, y) == pytest.approx(skm.mean_absolute_error(y, values[:, 0]))
    assert quality.rmse(p, y) == pytest.approx(np.sqrt(skm.mean_squared_error(y, values[:, 0])))
    assert quality.r2(p, y) == pytest.approx(skm.r2_score(y, values[:, 0]))


def test_metrics_are_invariant_to_shuffling(case):
    p, y, pred, probs, k = case
    perm = np.random.default_rng(3).permutation(len(y))
    shuffled, _ = _cls(pred[perm], y[perm], k, probs=probs[perm])
    for spec in sample_metrics():
        if "classification" not in spec.tasks:
            continue
        assert spec.fn(shuffled, y[perm]) == pytest.approx(spec.fn(p, y), abs=1e-12), spec.name
