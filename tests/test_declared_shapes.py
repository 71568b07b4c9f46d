"""Flat columns feeding an image-shaped input: data.inputs: {x: {columns, shape}} in the policy.

Known answer: scikit-learn's digits as a CSV of 64 pixel columns, fed to a real ONNX model whose input is
(batch, 1, 8, 8) (a nearest-class-mean classifier written as one 8x8 Conv), gives the same verdict and the same
numbers as the same data stored as an (n, 1, 8, 8) array in an .npz; the candidate is the same classifier with
coarser weights, so the numbers compared are not all zero. The reshape is a view of the data, never a copy of it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

from conftest import read_report, run_main, save_graph, write_policy
from gate.columns import Reshaped, with_sample_shape

RULES = [{"metric": "accuracy", "max_drop": 0.01}, {"metric": "flip_rate", "max": 0.05}]


def class_mean_conv(path: Path, means: np.ndarray, *, shape=("batch", 1, 8, 8)) -> Path:
    """logits_k = x . m_k - |m_k|^2 / 2: the nearest class mean, as a Conv whose kernels cover the whole image."""
    kernels = means.reshape(len(means), 1, 8, 8).astype(np.float32)
    bias = (-0.5 * np.square(means).sum(axis=1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "b"], ["c"]), helper.make_node("Flatten", ["c"], ["logits"])], "means",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(means)])],
        initializer=[numpy_helper.from_array(kernels, "W"), numpy_helper.from_array(bias, "b")])
    return save_graph(graph, path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    class_mean_conv(d / "base.onnx", means)
    class_mean_conv(d / "coarse.onnx", np.round(means / 4) * 4)
    np.savez(d / "digits.npz", x=x.reshape(-1, 1, 8, 8), label=y)
    with open(d / "digits.csv", "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow([f"px_{i}" for i in range(64)] + ["label"])
        out.writerows([*map(int, row), int(t)] for row, t in zip(data.data, y))
    return d


@pytest.fixture(scope="module")
def from_npz(digits):
    code, err, report = _check(digits, "npz", {"path": "digits.npz"})
    assert code in (0, 1), err
    return code, report


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing written outside the test's folder


def _check(d: Path, name: str, data: dict) -> tuple[int, str, dict | None]:
    policy = write_policy(d / f"{name}.yaml", RULES, base="base.onnx", candidates={"coarse": "coarse.onnx"},
                          data=data, diagnostics={"layers": False})
    result = run_main("check", "--policy", policy, "--out", d / name, "--no-progress")
    report = read_report(d / name) if result.code in (0, 1) else None
    return result.code, result.stderr, report


def _numbers(report: dict) -> list:
    return [(c["name"], c["verdict"], [(r["metric"], r["status"], r["observed"], r["threshold"]) for r in c["rules"]])
            for c in report["candidates"]]


def test_csv_columns_declared_as_images_give_the_numbers_of_the_same_npz_array(digits, from_npz):
    code_npz, npz_report = from_npz
    code, err, from_csv = _check(digits, "csv", {"path": "digits.csv",
                                                 "inputs": {"x": {"columns": "px_*", "shape": [1, 8, 8]}}})
    assert (code, from_csv["verdict"]) == (code_npz, npz_report["verdict"]), err
    assert _numbers(from_csv) == _numbers(npz_report)
    flips = [r for c in from_csv["candidates"] for r in c["rules"] if r["metric"] == "flip_rate"]
    assert flips[0]["observed"] > 0  # the coarse weights change predictions: the equality is not 0 == 0


def test_the_declared_shape_is_a_view_of_the_data(digits):
    from gate.data import load_dataset
    from gate.models import open_runner
    from gate.policy import load_policy

    policy_path = write_policy(digits / "view.yaml", RULES, base="base.onnx", candidates={"coarse": "coarse.onnx"},
                               data={"path": "digits.csv", "inputs": {"x": {"columns": "px_*", "shape": [1, 8, 8]}}})
    policy = load_policy(policy_path)
    dataset = load_dataset(policy.data, max_mb=100)
    runners = []
    for ref in (policy.base, *policy.candidates):
        runner = open_runner(ref, output=None, inputs=policy.data.inputs, max_mb=100)
        runner.bind(dataset)
        runners.append(runner)
    stacked = dataset.column("px_*", for_input="x", model=policy.base.path)  # the one stacked copy, shared
    for runner in runners:
        assert runner.sample(5)["x"].shape == (1, 8, 8)
        assert np.shares_memory(runner.sample(5)["x"], stacked)
        np.testing.assert_array_equal(runner.sample(5)["x"].reshape(-1), stacked[5])


def test_rows_that_are_not_contiguous_are_reshaped_batch_by_batch():
    whole = np.arange(6 * 4 * 4, dtype=np.float32).reshape(6, 4, 4)
    fortran = np.asfortranarray(whole)  # (6, 16) of it has no view: numpy would copy the whole array
    column = with_sample_shape(fortran, (16,))
    assert isinstance(column, Reshaped)
    np.testing.assert_array_equal(column[2:5], whole.reshape(6, 16)[2:5])
    np.testing.assert_array_equal(column[-1], whole.reshape(6, 16)[-1])
    assert (column.min(), column.max()) == (0, 95)
    contiguous = with_sample_shape(whole, (16,))
    assert isinstance(contiguous, np.ndarray) and np.shares_memory(contiguous, whole)


def test_without_a_declared_shape_the_error_names_the_key_that_fixes_it(digits):
    code, err, _ = _check(digits, "undeclared", {"path": "digits.csv"})
    assert code == 2 and "Traceback" not in err, err
    assert "digits.csv" in err and "input 'x' of base.onnx expects samples of shape (1, 8, 8)" in err, err
    assert "fix: declare the sample shape in the policy: data: {inputs: {x: {shape: [1, 8, 8]}}}" in err, err


def test_a_shape_of_another_size_is_refused_naming_the_input_both_shapes_and_the_fix(digits):
    code, err, _ = _check(digits, "wrong", {"path": "digits.csv", "inputs": {"x": {"columns": "px_*",
                                                                                   "shape": [1, 8, 9]}}})
    assert code == 2 and "Traceback" not in err, err
    for part in ("digits.csv", "input 'x' of base.onnx", "(1, 8, 9) (72 values)", "64 values per sample (64,)",
                 "fix: make data.inputs.x.shape in the policy hold 64 values"):
        assert part in err, f"{part!r} not in {err}"


@pytest.mark.parametrize("shape, message", [
    ([0, 8, 8], "must be an integer >= 1"),
    ([1, 8.5, 8], "must be an integer >= 1"),
    ([], "must have at least 1 item"),
    ("1x8x8", "must be a list"),
])
def test_a_malformed_shape_is_refused_with_its_policy_line(tmp_path, shape, message):
    text = ("version: 1\nbase: base.onnx\ncandidates: {c: c.onnx}\ndata:\n  path: d.csv\n  inputs:\n"
            f"    x:\n      columns: px_*\n      shape: {shape!r}\nrules: [{{metric: accuracy, max_drop: 0.01}}]\n")
    (tmp_path / "p.yaml").write_text(text.replace("'", ""), encoding="utf-8")
    result = run_main("policy", "check", tmp_path / "p.yaml")
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert "p.yaml:9" in result.stderr and "data.inputs.x.shape" in result.stderr, result
    assert message in result.stderr, result


def test_a_torch_base_fed_the_declared_shape_gives_the_numbers_of_the_onnx_base(digits, from_npz):
    """The same classifier exported with torch.export, as the base: the CSV (its columns inferred, the shape
    declared) reaches it through the same binding, and every number equals the ONNX base's on the .npz array."""
    import torch

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target
    means = torch.as_tensor(np.stack([x[y == k].mean(axis=0) for k in range(10)]))

    class Means(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1) @ means.T - 0.5 * (means * means).sum(1)

    program = torch.export.export(Means(), (torch.zeros(4, 1, 8, 8),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(digits / "means.pt2"))
    policy = write_policy(digits / "torch.yaml", RULES, base="means.pt2", candidates={"coarse": "coarse.onnx"},
                          data={"path": "digits.csv", "inputs": {"x": {"shape": [1, 8, 8]}}},
                          diagnostics={"layers": False})
    result = run_main("check", "--policy", policy, "--out", digits / "torch", "--no-progress")
    assert result.code in (0, 1), result
    assert _numbers(read_report(digits / "torch")) == _numbers(from_npz[1])
