"""Where the error enters: base and candidate compared tensor by tensor (gate/measure/tensors.py).

Known answers on a 3-layer MLP (MatMul + Add + Relu) built with onnx.helper:
- the same weights in another file (another doc string, another sha256): every tensor exact, nothing grows;
- the second layer's weights disturbed: the error first grows at that layer's MatMul output, every tensor
  before it is exact, and its SQNR is the one numpy computes from the weights;
- real onnxruntime.quantization outputs (static QDQ, dynamic int8) and an fp16 conversion: compared by name,
  finite SQNR, and (quantized only) nodes_to_exclude that are base node names;
- a candidate with renamed tensors: "not comparable", no crash.
Through the CLI: report.json and results.json carry `layers` (valid against the schemas and the loader),
report.html shows the table and the chart with hostile names escaped, `diagnostics: {layers: false}` writes
none, and a crash inside the diagnosis is recorded without touching the verdict.

The second layer's tensor and node carry markup in their names on purpose: every report must keep it text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from conftest import bound_runners, read_report, run_main, save_graph, write_policy

from gate import contract
from gate.measure import tensors
from gate.measure.tensors import NOT_COMPARABLE, RENAMED, layer_agreement

DIMS = (8, 16, 16, 3)
HOSTILE = 'mm1<img src=x onerror="alert(1)">|`'  # the second layer's MatMul output
HOSTILE_NODE = "fc1<script>boom()</script>"
N = 200


def _weights(disturb: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    layers = []
    for i in range(3):
        w = (rng.normal(size=(DIMS[i], DIMS[i + 1])) / math.sqrt(DIMS[i])).astype(np.float32)
        b = (0.1 * rng.normal(size=DIMS[i + 1])).astype(np.float32)
        if i == disturb:
            w = w + (0.05 * np.random.default_rng(1).normal(size=w.shape)).astype(np.float32)
        layers.append((w, b))
    return layers


def _names(i: int, rename: bool) -> tuple[str, str]:
    """(MatMul output, node name) of layer i."""
    prefix = "renamed_" if rename else ""
    return (prefix + (HOSTILE if i == 1 else f"mm{i}"), HOSTILE_NODE if i == 1 else f"fc{i}")


def mlp(path: Path, *, disturb: int | None = None, rename: bool = False, doc: str = "") -> Path:
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(_weights(disturb)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        mm, node = _names(i, rename)
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [mm], name=node))
        out = "logits" if i == 2 else ("renamed_" if rename else "") + f"h{i}"
        nodes.append(helper.make_node("Add", [mm, f"b{i}"], [out], name=f"bias{i}"))
        prev = out
        if i < 2:
            prev_relu = ("renamed_" if rename else "") + f"r{i}"
            nodes.append(helper.make_node("Relu", [prev], [prev_relu], name=f"relu{i}"))
            prev = prev_relu
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIMS[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", DIMS[-1]])], inits,
                              doc_string=doc)
    return save_graph(graph, path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from gate.demo_assets import _convert_fp16

    d = tmp_path_factory.mktemp("layers")
    x = np.random.default_rng(2).normal(size=(N, DIMS[0])).astype(np.float32)
    labels = np.argmax(_forward(x, _weights())[-1], axis=1)
    np.savez(d / "data.npz", x=x, label=labels)
    mlp(d / "base.onnx")
    mlp(d / "same.onnx", doc="saved again")
    mlp(d / "disturbed.onnx", disturb=1)
    mlp(d / "renamed.onnx", rename=True)
    quantize_dynamic(str(d / "base.onnx"), str(d / "dynamic.onnx"), weight_type=QuantType.QInt8)
    # pre-processed first, as the quantization docs advise: MatMul + Add fused into one node of another name
    quant_pre_process(str(d / "base.onnx"), str(d / "base.pre.onnx"), skip_symbolic_shape=True)
    quantize_dynamic(str(d / "base.pre.onnx"), str(d / "fused.onnx"), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{"x": x[i:i + 50]} for i in range(0, N, 50)])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(str(d / "base.onnx"), str(d / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    _convert_fp16(d / "base.onnx", d / "fp16.onnx")
    names = ("same", "disturbed", "renamed", "dynamic", "qdq", "fp16", "fused")
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={n: f"{n}.onnx" for n in names}, data={"path": "data.npz", "labels": "label"})
    runners = {name: runner for name, _, runner in bound_runners(policy)}
    base = runners.pop("base")
    results = {name: layer_agreement(base, runner, samples=N) for name, runner in runners.items()}
    return SimpleNamespace(dir=d, x=x, results=results, policy=policy,
                           base_nodes={n.name for n in onnx.load(str(d / "base.onnx")).graph.node})


def _forward(x: np.ndarray, layers) -> list[np.ndarray]:
    """[mm0, r0, mm1, r1, logits] in float64, as an oracle."""
    out, h = [], x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        mm = h @ w.astype(np.float64)
        out.append(mm)
        h = mm + b
        if i < 2:
            h = np.maximum(h, 0)
            out.append(h)
    return out[:4] + [h]


# ---------------------------------------------------------------- known answers

def test_the_same_weights_in_another_file_lose_nothing_anywhere(made):
    assert (made.dir / "same.onnx").read_bytes() != (made.dir / "base.onnx").read_bytes()
    res = made.results["same"].to_dict()
    assert res["status"] == "compared" and res["samples"] == N
    assert res["tensors_compared"] == 9  # the input and every node output
    assert all(r["exact"] and r["sqnr_db"] is None and r["relative_error"] == 0 for r in res["rows"])
    assert res["first_growth"] is None and res["suggested_nodes_to_exclude"] == []
    assert res["output"] == "logits" and res["output_exact"] is True


def test_a_disturbed_layer_is_named_first_and_nothing_before_it_loses(made):
    res = made.results["disturbed"]
    rows = res.to_dict()["rows"]
    first = res.first_growth
    assert rows[first]["tensor"] == HOSTILE and rows[first]["node"] == HOSTILE_NODE and rows[first]["op"] == "MatMul"
    assert [r["tensor"] for r in rows[:first]] == ["x", "mm0", "h0", "r0"]
    assert all(r["exact"] for r in rows[:first])
    assert not any(r["exact"] for r in rows[first:])
    # the oracle: SQNR of the disturbed layer's output from the weights, in float64
    base_mm1, cand_mm1 = _forward(made.x, _weights())[2], _forward(made.x, _weights(disturb=1))[2]
    expected = 10 * math.log10((base_mm1 ** 2).sum() / ((cand_mm1 - base_mm1) ** 2).sum())
    assert rows[first]["sqnr_db"] == pytest.approx(expected, abs=0.01)
    assert rows[first]["relative_error"] == pytest.approx(10 ** (-expected / 20), rel=1e-3)
    assert rows[first]["drop_db"] is None and rows[first]["own_sqnr_db"] == pytest.approx(expected, abs=0.01)
    assert res.suggested_nodes_to_exclude == []  # not quantized: nodes_to_exclude does not apply


@pytest.mark.parametrize("name", ["qdq", "dynamic"])
def test_a_real_quantization_is_compared_and_names_base_nodes_to_keep_in_float(made, name):
    res = made.results[name].to_dict()
    assert res["status"] == "compared" and res["quantized"] is True
    assert res["tensors_compared"] > 0
    assert res["output_sqnr_db"] is not None and 10 < res["output_sqnr_db"] < 80
    suggested = res["suggested_nodes_to_exclude"]
    assert suggested and set(suggested) <= made.base_nodes
    first = res["rows"][res["first_growth"]]
    assert first["node"] == "fc0"  # the first quantized MatMul reads the exact input: the error enters there
    if name == "qdq":  # compared as its consumers read it: the dequantized value
        assert first["read_as"] == "mm0_DequantizeLinear_Output"


def test_nodes_fused_away_by_the_candidate_are_blamed_together_and_the_matmul_is_suggested(made):
    res = made.results["fused"].to_dict()
    assert "mm0" not in {r["tensor"] for r in res["rows"]}  # fused into the Add's node in the candidate
    first = res["rows"][res["first_growth"]]
    assert first["tensor"] == "h0" and first["segment"] == ["fc0", "bias0"]
    assert first["candidate_node"] != first["node"]  # the fused node's own name
    suggested = res["suggested_nodes_to_exclude"]
    assert suggested and set(suggested) <= {"fc0", HOSTILE_NODE, "fc2"}  # the MatMuls, by their base names


def test_fp16_is_compared_as_float16_and_suggests_nothing(made):
    res = made.results["fp16"].to_dict()
    assert res["status"] == "compared" and not res["quantized"]
    assert {r["dtype"] for r in res["rows"] if r["op"] == "MatMul"} == {"float16"}
    assert 40 < res["output_sqnr_db"] < 100
    assert res["suggested_nodes_to_exclude"] == []


def test_renamed_tensors_are_not_comparable(made):
    res = made.results["renamed"]
    assert res.status == NOT_COMPARABLE and res.reason == RENAMED and res.rows == ()
    assert res.to_dict()["first_growth"] is None


def test_the_fields_written_are_the_contracts():
    row = tensors.TensorAgreement(tensor="t", node="n", op="MatMul", dtype="float32", elements=4, sqnr_db=20.0,
                                  relative_error=0.1, input_sqnr_db=math.inf).to_dict()
    assert set(row) == set(contract.LAYER_ROW_FIELDS)
    layers = tensors.LayerAgreement(status="compared", rows=(tensors.TensorAgreement(
        tensor="t", node="n", op="MatMul", dtype="float32", elements=4, sqnr_db=20.0, relative_error=0.1,
        input_sqnr_db=math.inf),)).to_dict()
    assert set(layers) == set(contract.LAYERS_FIELDS)
    assert set(contract.LAYER_STATUSES) == {tensors.COMPARED, tensors.IDENTICAL, tensors.NOT_COMPARABLE,
                                            tensors.SKIPPED, tensors.ERROR}
    damaged = dict(layers, first_growth=3)
    with pytest.raises(contract._Bad, match="first_growth"):
        contract._check_layers(damaged, "layers")


# ---------------------------------------------------------------- reports

def test_report_rows_are_limited_to_the_worst_and_the_first_growth():
    from gate.report.render import LAYER_ROWS_SHOWN, layer_rows, py_list

    rows = [{"tensor": f"t{i}", "exact": False, "sqnr_db": 100.0 - i % 70} for i in range(100)]
    shown = layer_rows({"rows": rows, "first_growth": 2})
    assert len(shown) == LAYER_ROWS_SHOWN + 1 and [r["index"] for r in shown] == sorted(r["index"] for r in shown)
    assert 2 in {r["index"] for r in shown} and 69 in {r["index"] for r in shown}  # first growth; lowest SQNR
    names = ["a`b", 'q"', "<script>&"]
    pasted = py_list(names)
    assert not set("`<>&") & set(pasted)
    assert json.loads(pasted) == yaml.safe_load(f"nodes_to_exclude: {pasted}")["nodes_to_exclude"] == names


def test_through_the_cli_reports_carry_the_layers_and_escape_names(made, tmp_path):
    from jsonschema import Draft202012Validator

    policy = write_policy(made.dir / "cli.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"disturbed": "disturbed.onnx", "qdq": "qdq.onnx", "itself": "base.onnx",
                                      "renamed": "renamed.onnx"},
                          data={"path": "data.npz", "labels": "label"}, diagnostics={"layer_samples": 64})
    measured = run_main("measure", "--policy", policy, "--out", tmp_path / "results.json", "--no-progress")
    assert measured.code == 0, measured
    judged = run_main("judge", tmp_path / "results.json", "--policy", policy, "--out", tmp_path / "out")
    assert judged.code == 0, judged
    results_text = (tmp_path / "results.json").read_text(encoding="utf-8")
    schemas = {k: json.loads(p.read_text(encoding="utf-8")) for k, p in
               (("results", contract.RESULTS_SCHEMA), ("report", contract.REPORT_SCHEMA))}
    assert not list(Draft202012Validator(schemas["results"]).iter_errors(json.loads(results_text)))
    contract.load_results_file(tmp_path / "results.json")
    report = read_report(tmp_path / "out")
    assert not list(Draft202012Validator(schemas["report"]).iter_errors(report))
    contract.load_report(tmp_path / "out" / "report.json")
    layers = {c["name"]: c["layers"] for c in report["candidates"]}
    assert layers["disturbed"]["samples"] == 64
    assert layers["disturbed"]["rows"][layers["disturbed"]["first_growth"]]["tensor"] == HOSTILE
    assert layers["itself"]["status"] == "identical" and layers["itself"]["rows"] == []
    assert layers["renamed"]["status"] == "not_comparable"
    assert set(layers["qdq"]["suggested_nodes_to_exclude"]) <= made.base_nodes

    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert html.count('<table class="layers">') == 2  # disturbed and qdq
    assert "SQNR of disturbed against the base, tensor by tensor" in html  # the chart's <title>
    assert "<img src=x" not in html and "<script>boom" not in html
    assert "mm1&lt;img src=x onerror=&#34;alert(1)&#34;&gt;|`" in html
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "error first grows at mm1&lt;img src=x onerror=\"alert\\(1\\)\"&gt;\\|\\`" in markdown
    assert "<script>" not in markdown and "nodes_to_exclude=[" in markdown
    assert "not comparable: the candidate renamed its tensors" in markdown


def test_the_policy_turns_it_off(made, tmp_path):
    policy = write_policy(made.dir / "off.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"disturbed": "disturbed.onnx"}, data={"path": "data.npz", "labels": "label"},
                          diagnostics={"layers": False})
    result = run_main("check", "--policy", policy, "--out", tmp_path, "--no-progress")
    assert result.code == 0, result
    assert read_report(tmp_path)["candidates"][0]["layers"] is None
    assert "Where the error enters" not in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Where the error enters" not in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_a_crash_inside_the_diagnosis_is_recorded_and_the_verdict_stands(made, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(tensors, "_compare", broken)
    policy = write_policy(made.dir / "crash.yaml", [{"metric": "accuracy", "max_drop": 0.01}],
                          candidates={"disturbed": "disturbed.onnx"}, data={"path": "data.npz", "labels": "label"})
    result = run_main("check", "--policy", policy, "--out", tmp_path, "--no-progress")
    report = read_report(tmp_path)
    layers = report["candidates"][0]["layers"]
    assert layers["status"] == "error" and "RuntimeError: injected failure" in layers["reason"]
    # the verdict is the rules' alone: the disturbed layer flips enough predictions to fail a 1-point drop
    assert result.code == 1 and report["verdict"] == "fail", result


def test_a_wrong_diagnostics_block_names_its_line():
    from gate.errors import GateInputError
    from gate.policy import parse_policy

    text = "version: 1\nrules:\n  - {metric: accuracy, max_drop: 0.1}\ndiagnostics:\n  layers: 'yes'\n"
    with pytest.raises(GateInputError) as caught:
        parse_policy(text, "p.yaml", Path("."))
    assert "p.yaml:5" in str(caught.value) and "diagnostics.layers must be true or false" in str(caught.value)
