"""Real scikit-learn classifiers converted by skl2onnx (issue 13).

skl2onnx gives a classifier two outputs: a label tensor (int64 or string) and the class probabilities, by
default as a ZipMap (a sequence of {class: probability} maps), with options={'zipmap': False} as a float tensor.
The gate judges the probabilities without being told (`output:` unset), reads a ZipMap in the model's class
order, maps the data's labels (text, or integers other than 0..k-1) by the class labels stored in the model
(or the policy's data.classes), and reports the same accuracy as scikit-learn's own `score` on the same data.

Every model is trained on a dataset bundled with scikit-learn (no network), small enough that the whole
file runs in seconds.
"""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import _finish, candidate, read_report, rule_of, run_main, write_npz, write_policy

pytest.importorskip("skl2onnx")

from skl2onnx import to_onnx  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_iris, load_wine  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

RULES = [{"metric": "accuracy", "max_drop": 0.5},
         {"metric": "log_loss", "max_increase": 10.0},
         {"metric": "roc_auc", "max_drop": 0.5}]
IRIS = ("setosa", "versicolor", "virginica")


def _data(name: str):
    loader = {"iris": load_iris, "breast_cancer": load_breast_cancer, "wine": load_wine}[name]
    x, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(x).astype(np.float32), y.astype(np.int64)


def _fit(est, x, y):
    with warnings.catch_warnings():  # the small candidates stop early on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, y)


def _save(est, x, path, *, zipmap: bool):
    options = None if zipmap else {"zipmap": False}
    path.write_bytes(to_onnx(est, x[:1], options=options, target_opset=17).SerializeToString())
    return path


def _labels_csv(path, x, labels):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow([f"f{j}" for j in range(x.shape[1])] + ["label"])
        for row, label in zip(x, labels):
            w.writerow([repr(float(v)) for v in row] + [label])
    return path


# (model, dataset, labels, base output, data file): every model with and without ZipMap, integer and text labels
CASES = {
    "random_forest": (lambda small: RandomForestClassifier(n_estimators=2 if small else 25, max_depth=None if not small
                                                           else 2, random_state=0),
                      "iris", "names", "zipmap", "npz"),
    "gradient_boosting": (lambda small: GradientBoostingClassifier(n_estimators=2 if small else 30, random_state=0),
                          "breast_cancer", "indices", "plain", "npz"),
    "logistic_regression": (lambda small: LogisticRegression(max_iter=1 if small else 1000),
                            "wine", "names", "plain", "csv"),
    "mlp": (lambda small: MLPClassifier(hidden_layer_sizes=(8,), max_iter=3 if small else 400, random_state=0),
            "iris", "one_based", "zipmap", "npz"),
}


def _labels(kind: str, y: np.ndarray, dataset: str) -> np.ndarray:
    if kind == "indices":
        return y
    if kind == "one_based":  # integer classes 1..k: the model's class labels, not its column indices
        return y + 1
    names = IRIS if dataset == "iris" else tuple(f"cultivar {c}" for c in "ABC")
    return np.array(names, dtype=str)[y]


@pytest.mark.parametrize("model", list(CASES))
def test_sklearn_classifier_through_skl2onnx(tmp_path, model):
    make, dataset, label_kind, base_output, data_format = CASES[model]
    x, y = _data(dataset)
    labels = _labels(label_kind, y, dataset)
    base, small = _fit(make(False), x, labels), _fit(make(True), x, labels)
    zipmap = base_output == "zipmap"
    _save(base, x, tmp_path / "base.onnx", zipmap=zipmap)
    _save(base, x, tmp_path / "other_output.onnx", zipmap=not zipmap)  # the same model, the other output form
    _save(small, x, tmp_path / "small.onnx", zipmap=zipmap)
    if data_format == "csv":
        data = {"path": str(_labels_csv(tmp_path / "data.csv", x, labels)), "labels": "label"}
    else:
        np.savez(tmp_path / "data.npz", x=x, label=labels)
        data = {"path": "data.npz", "labels": "label"}
    write_policy(tmp_path / "policy.yaml", RULES, candidates={"other_output": "other_output.onnx",
                                                              "small": "small.onnx"},
                 data=data, bootstrap=100)
    result = run_main("check", "--policy", tmp_path / "policy.yaml", "--out", tmp_path / "out")
    assert result.code in (0, 1), result
    report = read_report(tmp_path / "out")
    model_info = report["base"]["model"]
    assert model_info["output"] in ("probabilities", "output_probability"), model_info
    assert model_info["output_kind"] == "probabilities"

    # exactly scikit-learn's own accuracy of each model on the same data
    want_base, want_small = base.score(x, labels), small.score(x, labels)
    assert report["base"]["metrics"]["accuracy"] == want_base
    same = candidate(report, "other_output")
    assert same["error"] is None, same["error"]
    assert same["metrics"]["accuracy"]["candidate"] == want_base
    assert same["metrics"]["flip_rate"]["candidate"] == 0.0
    judged = candidate(report, "small")
    accuracy = rule_of(judged, "accuracy")
    assert (accuracy["base"], accuracy["candidate"]) == (want_base, want_small)
    assert accuracy["observed"] == pytest.approx(want_base - want_small)
    assert accuracy["status"] in ("pass", "fail", "inconclusive"), accuracy
    # score metrics are measured from the probabilities, never an error for want of scores
    for metric in ("log_loss", "roc_auc"):
        rule = rule_of(judged, metric)
        assert rule["status"] != "error", rule
        assert np.isfinite(rule["base"]) and np.isfinite(rule["candidate"]), rule
    assert report["base"]["metrics"]["log_loss"] == pytest.approx(_log_loss(base, x, labels), abs=1e-5)
    # the label output agrees with the scores' argmax: nothing to say about it
    assert not any("label output" in note for note in judged["notes"] + same["notes"]), judged["notes"]


def _log_loss(est, x, labels) -> float:
    proba = est.predict_proba(x)
    index = {c: i for i, c in enumerate(est.classes_.tolist())}
    true = proba[np.arange(len(labels)), [index[v] for v in labels.tolist()]]
    return float(-np.mean(np.log(np.clip(true, 1e-12, None))))


# --------------------------------------------------------------------------------------------
# labels the model does not know, data.classes
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iris_forest(tmp_path_factory):
    """A random forest trained on the iris names, converted with ZipMap; and the iris data."""
    d = tmp_path_factory.mktemp("iris")
    x, y = _data("iris")
    names = np.array(IRIS)[y]
    est = _fit(RandomForestClassifier(n_estimators=5, random_state=0), x, names)
    _save(est, x, d / "forest.onnx", zipmap=True)
    return d, x, names, est


def _check(d, policy_name, **policy):
    write_policy(d / f"{policy_name}.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                 base="forest.onnx", candidates={"same": "forest.onnx"}, bootstrap=100, **policy)
    return run_main("check", "--policy", d / f"{policy_name}.yaml", "--out", d / f"out-{policy_name}")


def test_a_label_the_model_does_not_know_is_named(iris_forest):
    d, x, names, _ = iris_forest
    labels = names.copy()
    labels[7] = "iris-x"
    np.savez(d / "unknown.npz", x=x, label=labels)
    result = _check(d, "unknown", data={"path": "unknown.npz"})
    assert result.code == 2, result
    assert "'iris-x'" in result.stderr and "sample 7" in result.stderr, result.stderr
    assert all(f"'{c}'" in result.stderr for c in IRIS), f"the known classes are not listed:\n{result.stderr}"
    assert "unknown.npz" in result.stderr and "Traceback" not in result.stderr


def test_data_classes_matching_the_model_is_accepted(iris_forest):
    d, x, names, est = iris_forest
    np.savez(d / "named.npz", x=x, label=names)
    result = _check(d, "declared", data={"path": "named.npz", "classes": list(IRIS)})
    assert result.code == 0, result
    assert read_report(d / "out-declared")["base"]["metrics"]["accuracy"] == est.score(x, names)


def test_data_classes_contradicting_the_model_is_refused(iris_forest):
    d, x, names, _ = iris_forest
    np.savez(d / "named2.npz", x=x, label=names)
    result = _check(d, "contradicts", data={"path": "named2.npz", "classes": ["versicolor", "setosa", "virginica"]})
    assert result.code == 2, result
    assert "data.classes" in result.stderr and "'versicolor', 'setosa'" in result.stderr, result.stderr
    assert "contradicts.yaml" in result.stderr


def test_a_candidate_with_other_classes_is_an_error_of_its_own(iris_forest):
    d, x, names, _ = iris_forest
    np.savez(d / "cls.npz", x=x, label=names)
    other = np.char.add("species ", names)
    _save(_fit(RandomForestClassifier(n_estimators=3, random_state=0), x, other), x, d / "renamed.onnx", zipmap=False)
    write_policy(d / "renamed.yaml", [{"metric": "accuracy", "max_drop": 0.5}], base="forest.onnx",
                 candidates={"renamed": "renamed.onnx", "same": "forest.onnx"}, data="cls.npz", bootstrap=100)
    result = run_main("check", "--policy", d / "renamed.yaml", "--out", d / "out-renamed")
    assert result.code in (1, 2), result
    report = read_report(d / "out-renamed")
    assert "species setosa" in candidate(report, "renamed")["error"]
    assert candidate(report, "same")["verdict"] == "pass"


# --------------------------------------------------------------------------------------------
# models without class labels: data.classes names them; label + score outputs chosen without `output:`
# --------------------------------------------------------------------------------------------

def _label_and_scores_model(path, scores: np.ndarray, labels: np.ndarray):
    """Outputs `label` (int64 [batch], labels[idx]) and `probabilities` (float [batch, k], scores[idx]):
    a classifier whose label output the test chooses independently of its scores."""
    inputs = [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])]
    inits = [numpy_helper.from_array(scores.astype(np.float32), "scores"),
             numpy_helper.from_array(labels.astype(np.int64).reshape(-1, 1), "labels"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["labels", "idx"], ["lg"], axis=0),
             helper.make_node("Reshape", ["lg", "minus1"], ["label"]),
             helper.make_node("Gather", ["scores", "idx"], ["sg"], axis=0),
             helper.make_node("Squeeze", ["sg", "axis1"], ["probabilities"])]
    inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"))
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", scores.shape[1]])]
    return _finish(nodes, inputs, outputs, inits, path, external=False)


def _probabilities(pred: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, size=(len(pred), k))
    p[np.arange(len(pred)), pred] = 2.0
    return p / p.sum(axis=1, keepdims=True)


def test_label_and_scores_are_told_apart_and_text_labels_follow_data_classes(tmp_path):
    n, k = 200, 3
    rng = np.random.default_rng(3)
    y = rng.integers(0, k, size=n)
    base_pred = np.where(rng.uniform(size=n) < 0.9, y, (y + 1) % k)
    cand_pred = np.where(rng.uniform(size=n) < 0.8, y, (y + 2) % k)
    _label_and_scores_model(tmp_path / "base.onnx", _probabilities(base_pred, k, 0), base_pred)
    wrong = cand_pred.copy()
    wrong[[4, 9]] = (wrong[[4, 9]] + 1) % k  # its label output disagrees with its scores on two samples
    _label_and_scores_model(tmp_path / "cand.onnx", _probabilities(cand_pred, k, 1), wrong)
    names = np.array(["cat", "dog", "emu"])
    write_npz(tmp_path / "data.npz", names[y])
    write_policy(tmp_path / "policy.yaml", RULES, candidates={"cand": "cand.onnx"},
                 data={"path": "data.npz", "classes": ["cat", "dog", "emu"]}, bootstrap=100)
    result = run_main("check", "--policy", tmp_path / "policy.yaml", "--out", tmp_path / "out")
    assert result.code in (0, 1), result
    report = read_report(tmp_path / "out")
    assert report["base"]["model"]["output"] == "probabilities"
    cand = candidate(report, "cand")
    accuracy = rule_of(cand, "accuracy")
    assert (accuracy["base"], accuracy["candidate"]) == (np.mean(base_pred == y), np.mean(cand_pred == y))
    assert rule_of(cand, "roc_auc")["status"] != "error"
    note = [t for t in cand["notes"] if "label output" in t]
    assert len(note) == 1 and "2 of 200 samples" in note[0] and "4, 9" in note[0], cand["notes"]

    # without data.classes the text labels cannot be placed: exit 2, naming the labels and the fix
    write_policy(tmp_path / "bare.yaml", RULES, candidates={"cand": "cand.onnx"}, data="data.npz", bootstrap=100)
    result = run_main("check", "--policy", tmp_path / "bare.yaml", "--out", tmp_path / "out-bare")
    assert result.code == 2, result
    assert "'label'" in result.stderr and "data: classes:" in result.stderr and "'cat'" in result.stderr, result.stderr


def test_data_classes_must_match_the_number_of_scores(tmp_path):
    n = 60
    y = np.arange(n) % 3
    _label_and_scores_model(tmp_path / "base.onnx", _probabilities(y, 3, 0), y)
    write_npz(tmp_path / "data.npz", np.array(["a", "b", "c"])[y])
    write_policy(tmp_path / "policy.yaml", RULES, candidates={"same": "base.onnx"},
                 data={"path": "data.npz", "classes": ["a", "b", "c", "d"]}, bootstrap=100)
    result = run_main("check", "--policy", tmp_path / "policy.yaml", "--out", tmp_path / "out")
    assert result.code == 2, result
    assert "3 class scores" in result.stderr and "names 4 classes" in result.stderr, result.stderr


@pytest.mark.parametrize("classes, message", [
    (["a", "b", "a"], "repeats the class 'a'"),
    (["a"], "at least 2"),
    ([["a"], "b"], "data.classes[0]"),
])
def test_data_classes_in_the_policy_is_checked(tmp_path, classes, message):
    path = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                        data={"path": "data.npz", "classes": classes})
    result = run_main("policy", "check", path)
    assert result.code == 2, result
    assert message in result.stderr, result.stderr


def test_integer_class_labels_other_than_indices_are_mapped_and_checked(iris_forest):
    d, x, names, _ = iris_forest
    y = np.searchsorted(np.array(IRIS), names)
    est = _fit(RandomForestClassifier(n_estimators=3, random_state=0), x, y + 1)  # classes 1, 2, 3
    _save(est, x, d / "one_based.onnx", zipmap=False)
    np.savez(d / "one_based.npz", x=x, label=y + 1)
    write_policy(d / "one_based.yaml", [{"metric": "accuracy", "max_drop": 0.5}], base="one_based.onnx",
                 candidates={"same": "one_based.onnx"}, data="one_based.npz", bootstrap=100)
    result = run_main("check", "--policy", d / "one_based.yaml", "--out", d / "out-one_based")
    assert result.code == 0, result
    assert read_report(d / "out-one_based")["base"]["metrics"]["accuracy"] == est.score(x, y + 1)
    np.savez(d / "one_based.npz", x=x, label=y)  # 0-based: 0 is no class of this model
    result = run_main("check", "--policy", d / "one_based.yaml", "--out", d / "out-zero")
    assert result.code == 2, result
    assert "the label 0 " in result.stderr and "1, 2, 3" in result.stderr, result.stderr


@pytest.mark.parametrize("output, kind", [("output_label", "labels"), ("output_probability", "probabilities")])
def test_an_output_chosen_by_name_is_read_as_it_is(iris_forest, output, kind):
    d, x, names, est = iris_forest
    np.savez(d / "chosen.npz", x=x, label=names)
    write_policy(d / f"{output}.yaml", [{"metric": "accuracy", "max_drop": 0.5}, {"metric": "roc_auc", "max_drop": 0.5}],
                 base="forest.onnx", candidates={"same": "forest.onnx"}, data="chosen.npz", bootstrap=100,
                 output=output)
    result = run_main("check", "--policy", d / f"{output}.yaml", "--out", d / f"out-{output}")
    report = read_report(d / f"out-{output}")
    assert report["base"]["model"]["output_kind"] == kind
    assert report["base"]["metrics"]["accuracy"] == est.score(x, names)
    roc_auc = rule_of(candidate(report, "same"), "roc_auc")
    if kind == "labels":  # a label output has no scores: the score metric says so, never a silent pass
        assert result.code == 1 and roc_auc["status"] == "error", result
    else:
        assert result.code == 0 and roc_auc["status"] == "pass", result
