"""Peak memory: each model in its own subprocess, minus the same process without the model.

Known answers: a model holding 32 MB of fp32 weights needs at least 32 MB more than a
model holding 32 KB; the gate process's own memory is never charged to a model.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import candidate, read_report, rule_of, run_main, save_graph, write_policy
from gate.measure.memory import peak_memory

D_IN = 1000
WEIGHT_MB = D_IN * 8000 * 4 / 1e6  # the big model's weights: 32 MB


def matmul_model(path, d_out: int):
    """x @ w, then summed to 8 outputs: a big and a tiny model answer in the same shape (the gate refuses to
    compare outputs of different shapes), while the big one holds d_out/8 times the weights."""
    w = np.random.default_rng(0).standard_normal((D_IN, d_out)).astype(np.float32)
    shape = numpy_helper.from_array(np.array([-1, 8, d_out // 8], dtype=np.int64), "shape")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]),
                               helper.make_node("Reshape", ["h", "shape"], ["r"]),
                               helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w, "w"), shape, axes])
    save_graph(graph, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("memory")
    return d, matmul_model(d / "big.onnx", 8000), matmul_model(d / "tiny.onnx", 8)


def test_each_model_is_charged_its_own_memory_not_the_gates(models):
    _, big, tiny = models
    feeds = {"x": np.zeros((1, D_IN), np.float32)}
    hog = np.ones(150_000_000 // 8)  # 150 MB held by this process while the workers run
    peaks = peak_memory({"big": (big, feeds), "tiny": (tiny, feeds)}, threads=1, provider="CPUExecutionProvider")
    del hog
    assert peaks["big"]["peak_mb"] - peaks["tiny"]["peak_mb"] >= WEIGHT_MB  # the weights are held at least once
    # a child inherits its parent's peak in ru_maxrss on Linux: 150 MB would show up here if it were used
    assert peaks["tiny"]["peak_mb"] < WEIGHT_MB
    assert peaks["tiny"]["baseline_mb"] == peaks["big"]["baseline_mb"]  # the same process without a model
    assert peaks["tiny"]["rss_mb"] > peaks["tiny"]["baseline_mb"]


def test_a_worker_that_fails_is_reported_not_counted(models, tmp_path):
    _, _, tiny = models
    feeds = {"wrong_name": np.zeros((1, D_IN), np.float32)}
    peaks = peak_memory({"tiny": (tiny, feeds)}, threads=1, provider="CPUExecutionProvider")
    assert "error" in peaks["tiny"] and "peak_mb" not in peaks["tiny"]


def test_peak_memory_rules_end_to_end(models):
    d, _, _ = models
    x = np.random.default_rng(1).standard_normal((50, D_IN)).astype(np.float32)
    np.savez(d / "data.npz", x=x)
    rules = [{"metric": "peak_memory_mb", "max": WEIGHT_MB / 2},
             {"metric": "peak_memory_mb", "max_increase": 1.0, "severity": "warn"}]
    policy = write_policy(d / "policy.yaml", rules, base="tiny.onnx", candidates={"big": "big.onnx", "tiny2": "tiny.onnx"},
                          data={"path": "data.npz"}, task="regression")
    result = run_main("check", "--policy", policy, "--out", d / "out")
    assert result.code == 1, result
    report = read_report(d / "out")
    big, tiny = candidate(report, "big"), candidate(report, "tiny2")
    assert rule_of(big, "peak_memory_mb", "max")["status"] == "fail"
    assert rule_of(big, "peak_memory_mb", "max_increase")["status"] == "warn"
    assert rule_of(tiny, "peak_memory_mb", "max")["status"] == "pass"
    assert big["metrics"]["peak_memory_mb"]["evidence"]["method"].startswith(("VmHWM", "ru_maxrss"))
    assert "speed" in big and big["speed"]["memory"]["candidate"]["peak_mb"] == big["metrics"]["peak_memory_mb"]["candidate"]
    # no speed rule: nothing was timed
    assert "latency_p50_ms" not in big["metrics"] and "rounds" not in big["speed"]
