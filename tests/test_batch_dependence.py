"""Dynamic int8 graphs give other predictions at other batch sizes: quality is judged at the batch the
model is deployed with, and the report says the graph depends on the batch.

Known answer: the accuracy onnxruntime itself gives at batch 1 and as one batch, computed here with a
bare InferenceSession, is what the gate reports for `batch_size: 1` and for one batch of all samples.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import candidate, read_report, run_main, save_graph, write_policy

N, D, H, K = 600, 32, 64, 5


def _mlp(path, w1, w2):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["logits"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", K])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    save_graph(graph, path)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    d = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((D, H)).astype(np.float32)
    w2 = rng.standard_normal((H, K)).astype(np.float32)
    # heavy-tailed inputs: the activation range of a whole batch is set by its largest values,
    # so a sample quantized alone and one quantized among outliers round differently
    x = (rng.standard_t(2, size=(N, D))).astype(np.float32)
    _mlp(d / "base.onnx", w1, w2)
    quantize_dynamic(str(d / "base.onnx"), str(d / "int8.onnx"), weight_type=QuantType.QInt8)
    base_logits = _run(d / "base.onnx", x, N)
    y = base_logits.argmax(axis=1)  # the base is right everywhere: the candidate's accuracy is its agreement
    np.savez(d / "data.npz", x=x, label=y)
    return d, x, y


def _run(path, x, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _accuracy_at(d, x, y, batch) -> float:
    return float((_run(d / "int8.onnx", x, batch).argmax(axis=1) == y).mean())


def _gate(d, name, **top):
    policy = write_policy(d / f"{name}.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"int8": "int8.onnx", "same": "base.onnx"}, **top)
    result = run_main("check", "--policy", policy, "--out", d / f"out-{name}", "--no-progress")
    assert result.code == 0, result
    return candidate(read_report(d / f"out-{name}"), "int8")


def test_the_batch_changes_what_a_dynamic_int8_model_predicts(project):
    d, x, y = project
    assert _accuracy_at(d, x, y, 1) != _accuracy_at(d, x, y, N)  # the premise: this graph depends on the batch


@pytest.mark.parametrize("top, batch, source", [
    ({"batch_size": 1}, 1, "the policy's batch_size"),
    ({"latency": {"batch_size": 1}}, 1, "latency.batch_size"),
    ({"batch_size": N}, N, "the policy's batch_size"),
], ids=["batch_size", "latency-batch", "one-batch"])
def test_quality_is_judged_at_the_deployed_batch_and_the_report_says_so(project, top, batch, source):
    d, x, y = project
    c = _gate(d, f"b{batch}-{'lat' if 'latency' in top else 'top'}", **top)
    assert c["metrics"]["accuracy"]["candidate"] == pytest.approx(_accuracy_at(d, x, y, batch), abs=1e-12)
    [note] = c["notes"]
    assert "DynamicQuantizeLinear" in note and f"Judged at batch size {batch:,} ({source}" in note


def test_a_graph_that_does_not_depend_on_the_batch_gets_no_note(project):
    d, _, _ = project
    _gate(d, "b1-top", batch_size=1)
    notes = candidate(read_report(d / "out-b1-top"), "same")["notes"]
    assert not any("DynamicQuantizeLinear" in note for note in notes), notes
    assert "DynamicQuantizeLinear" in (d / "out-b1-top" / "report.md").read_text(encoding="utf-8")
    assert "DynamicQuantizeLinear" in (d / "out-b1-top" / "report.html").read_text(encoding="utf-8")
