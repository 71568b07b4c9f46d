"""The documented export path of torch 2.13: torch.onnx.export with its default (dynamo) exporter, which needs
onnxscript (installed by the torch extra). A small MLP trained on scikit-learn's digits is exported to
ONNX (weights in external data, as the exporter writes them) and to a .pt2 program; the gate judges the
ONNX export against the torch program it came from, and a dynamically quantized copy of the export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import candidate, read_report, rule_of, run_main, write_policy

torch = pytest.importorskip("torch")  # the test extras install torch; the core does not need it


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("export")
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    np.savez(d / "digits.npz", pixels=x[1000:], label=y[1000:].astype(np.int64))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    xt, yt = torch.from_numpy(x[:1000]), torch.from_numpy(y[:1000].astype(np.int64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny full-batch fit: more threads only contend on a busy 2-core runner
    try:
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notices are not under test
        torch.export.save(torch.export.export(model, (xt[:2],), dynamic_shapes=({0: batch},)), str(d / "base.pt2"))
        torch.onnx.export(model, (xt[:2],), str(d / "model.onnx"), input_names=["pixels"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    quantize_dynamic(str(d / "model.onnx"), str(d / "model.int8.onnx"), weight_type=QuantType.QInt8)
    return d


def test_the_exporters_onnx_file_agrees_with_the_torch_program(exported):
    assert (exported / "model.onnx.data").is_file() or (exported / "model.onnx").stat().st_size > 8000
    rules = [{"metric": "accuracy", "max_drop": 0.02}, {"metric": "flip_rate", "max": 0.01},
             {"metric": "max_abs_diff", "max": 1e-4}]
    policy = write_policy(exported / "policy.yaml", rules, base="base.pt2",
                          candidates={"onnx-export": "model.onnx", "int8": "model.int8.onnx"},
                          data={"path": "digits.npz", "labels": "label"})
    result = run_main("check", "--policy", policy, "--out", exported / "report", "--no-progress")
    assert "Traceback" not in result.stderr, result
    report = read_report(exported / "report")
    export = candidate(report, "onnx-export")
    assert export["verdict"] == "pass", export["rules"]
    assert rule_of(export, "flip_rate")["observed"] == 0
    assert rule_of(export, "max_abs_diff")["observed"] < 1e-4
    assert report["base"]["metrics"]["accuracy"] > 0.85  # a real classifier, not noise
    int8 = candidate(report, "int8")
    assert rule_of(int8, "max_abs_diff")["status"] == "fail"  # int8 weights move the logits, measurably
