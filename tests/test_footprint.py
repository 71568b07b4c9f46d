"""Footprint facts read from the ONNX file, with known answers: sparsity, bytes by data type, MACs.

Every model here is built with onnx.helper so the stored weights are known exactly; the
int8 and fp16 candidates are also made with the real tools (onnxruntime's quantize_dynamic,
onnxruntime.transformers float16 conversion) and must report what those tools stored.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import candidate, read_report, rule_of, run_cli, write_policy
from gate.measure.footprint import model_facts

D_IN, D_HID, K = 32, 64, 10
W_ELEMENTS = D_IN * D_HID + D_HID * K  # 2688: the weight matrices
B_ELEMENTS = D_HID + K  # 74: the biases


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((D_IN, D_HID)).astype(np.float32)
    w2 = rng.standard_normal((D_HID, K)).astype(np.float32)
    b1 = (rng.standard_normal(D_HID) * 0.1 + 0.5).astype(np.float32)  # never zero
    b2 = (rng.standard_normal(K) * 0.1 + 0.5).astype(np.float32)
    return w1, b1, w2, b2


def _save(path, nodes, inits):
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D_IN])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", K])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mlp(path, w1, b1, w2, b2):
    """x @ w1 + b1 -> Relu -> @ w2 + b2, all fp32."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["z1"]),
             helper.make_node("Relu", ["z1"], ["h1"]), helper.make_node("MatMul", ["h1", "w2"], ["m2"]),
             helper.make_node("Add", ["m2", "b2"], ["logits"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    return _save(path, nodes, inits)


def pruned(w: np.ndarray, share: float, seed: int) -> np.ndarray:
    """w with exactly `share` of its entries set to 0."""
    out = w.copy().reshape(-1)
    idx = np.random.default_rng(seed).permutation(out.size)[: round(share * out.size)]
    out[idx] = 0.0
    return out.reshape(w.shape)


def fp16_by_hand(path, w1, b1, w2, b2):
    """Every weight stored as fp16, cast to fp32 where used."""
    nodes, inits = [], []
    for name, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        inits.append(numpy_helper.from_array(a.astype(np.float16), f"{name}_h"))
        nodes.append(helper.make_node("Cast", [f"{name}_h"], [name], to=TensorProto.FLOAT))
    nodes += [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["z1"]),
              helper.make_node("Relu", ["z1"], ["h1"]), helper.make_node("MatMul", ["h1", "w2"], ["m2"]),
              helper.make_node("Add", ["m2", "b2"], ["logits"])]
    return _save(path, nodes, inits)


def qdq_by_hand(path, w1, b1, w2, b2, *, zero_share: float):
    """QDQ int8: each weight matrix stored as int8 with a per-output-channel int8 zero point and fp32 scale;
    `zero_share` of the stored values equal their channel's zero point (real value 0)."""
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    for name, w in (("w1", w1), ("w2", w2)):
        cols = w.shape[1]
        zp = rng.integers(-5, 6, size=cols).astype(np.int8)
        q = rng.integers(-100, 101, size=w.shape).astype(np.int8)
        q[q == zp[None, :]] += 7  # no accidental zeros
        flat = q.reshape(-1)
        idx = rng.permutation(flat.size)[: round(zero_share * flat.size)]
        flat[idx] = np.broadcast_to(zp[None, :], w.shape).reshape(-1)[idx]
        scale = np.full(cols, 0.02, dtype=np.float32)
        inits += [numpy_helper.from_array(flat.reshape(w.shape), f"{name}_q"),
                  numpy_helper.from_array(scale, f"{name}_s"), numpy_helper.from_array(zp, f"{name}_z")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], axis=1))
    inits += [numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(b2, "b2")]
    nodes += [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["z1"]),
              helper.make_node("Relu", ["z1"], ["h1"]), helper.make_node("MatMul", ["h1", "w2"], ["m2"]),
              helper.make_node("Add", ["m2", "b2"], ["logits"])]
    return _save(path, nodes, inits)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("footprint")
    w1, b1, w2, b2 = _weights()
    out = {"base": mlp(d / "base.onnx", w1, b1, w2, b2),
           "pruned80": mlp(d / "pruned80.onnx", pruned(w1, 0.8, 1), b1, pruned(w2, 0.8, 2), b2),
           "fp16": fp16_by_hand(d / "fp16.onnx", w1, b1, w2, b2),
           "qdq": qdq_by_hand(d / "qdq.onnx", w1, b1, w2, b2, zero_share=0.5)}
    from onnxruntime.transformers import float16  # ships inside onnxruntime: no extra dependency
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():  # the tools warn about pre-processing; warnings are errors here
        warnings.simplefilter("ignore")
        quantize_dynamic(str(out["base"]), str(d / "dyn_int8.onnx"), weight_type=QuantType.QInt8)
        converted = float16.convert_float_to_float16(onnx.load(str(out["base"])), keep_io_types=True)
    onnx.save(converted, str(d / "tool_fp16.onnx"))
    out["dyn_int8"], out["tool_fp16"] = d / "dyn_int8.onnx", d / "tool_fp16.onnx"
    return d, out


def facts(path):
    return model_facts(path)[2]


def test_pruned_80_percent_reports_sparsity_0_8(models):
    _, m = models
    f = facts(m["pruned80"])
    assert f["weight_parameters"] == W_ELEMENTS
    assert f["weight_zeros"] == round(0.8 * D_IN * D_HID) + round(0.8 * D_HID * K)
    assert f["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert f["nonzero_parameters"] == W_ELEMENTS - f["weight_zeros"] + B_ELEMENTS  # biases are not zero
    assert facts(m["base"])["sparsity"] == 0.0
    # pruning keeps dense storage: the file holds just as many values
    assert f["parameters_by_dtype"] == facts(m["base"])["parameters_by_dtype"] == {"fp32": W_ELEMENTS + B_ELEMENTS}


def test_bytes_by_dtype_of_hand_built_fp16_and_int8(models):
    _, m = models
    assert facts(m["base"])["bytes_by_dtype"] == {"fp32": 4 * (W_ELEMENTS + B_ELEMENTS)}
    assert facts(m["fp16"])["bytes_by_dtype"] == {"fp16": 2 * (W_ELEMENTS + B_ELEMENTS)}
    q = facts(m["qdq"])
    channels = D_HID + K  # one scale (fp32) and one zero point (int8) per output channel
    assert q["bytes_by_dtype"] == {"int8": W_ELEMENTS + channels, "fp32": 4 * (B_ELEMENTS + channels)}
    # a stored value equal to its channel's zero point is a real zero
    assert q["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_bytes_by_dtype_of_real_quantize_dynamic_and_float16_tools(models):
    _, m = models
    dyn = facts(m["dyn_int8"])
    # every weight-matrix value is stored as one int8; the rest (biases, scales, zero points) is small
    assert dyn["bytes_by_dtype"]["int8"] >= W_ELEMENTS
    assert dyn["bytes_by_dtype"]["int8"] <= W_ELEMENTS + 16
    assert dyn["bytes_by_dtype"].get("fp32", 0) <= 4 * (B_ELEMENTS + 16)
    tool16 = facts(m["tool_fp16"])
    assert tool16["bytes_by_dtype"] == {"fp16": 2 * (W_ELEMENTS + B_ELEMENTS)}


def test_macs_of_matmul_gemm_and_conv(models, tmp_path):
    _, m = models
    assert facts(m["base"])["macs"] == W_ELEMENTS  # batch 1: one MAC per weight of each MatMul
    assert facts(m["qdq"])["macs"] == W_ELEMENTS
    assert facts(m["dyn_int8"])["macs"] == W_ELEMENTS  # MatMulInteger counted as a MatMul
    # Conv 3->4 channels, 3x3 kernel, padding 1, 8x8 image: 4*8*8 outputs of 3*3*3 MACs, then a Gemm 256->10
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = numpy_helper.from_array(np.ones((10, 256), np.float32), "g")
    shape = numpy_helper.from_array(np.array([-1, 256], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["img", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "g"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 10])], [w, g, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "conv.onnx"))
    f = facts(tmp_path / "conv.onnx")
    assert f["macs_by_op"] == {"Conv": 4 * 8 * 8 * 27, "Gemm": 256 * 10}
    assert f["macs"] == 4 * 8 * 8 * 27 + 2560 and f["macs_unknown_nodes"] == 0


@pytest.fixture(scope="module")
def checked(models):
    """One `gate check` over every candidate, with rules on the footprint metrics."""
    d, m = models
    x = np.random.default_rng(5).standard_normal((64, D_IN)).astype(np.float32)
    np.savez(d / "data.npz", x=x, label=np.zeros(64, dtype=np.int64))
    rules = [{"metric": "sparsity", "min": 0.75}, {"metric": "bytes_fp32", "max": 0},
             {"metric": "compression_ratio", "min": 1.9}, {"metric": "macs", "max_increase": 0},
             {"metric": "nonzero_parameters", "max_relative_increase": 0.0}]
    policy = write_policy(d / "policy.yaml", rules, candidates={k: v.name for k, v in m.items() if k != "base"},
                          data={"path": "data.npz", "labels": "label"}, inconclusive="warn")
    result = run_cli("check", "--policy", policy, "--out", d / "out")
    return result, read_report(d / "out")


def test_footprint_rules_are_judged_exactly(checked):
    result, report = checked
    assert result.code == 1, result
    p = candidate(report, "pruned80")
    assert p["metrics"]["sparsity"]["candidate"] == pytest.approx(0.8, abs=1e-3)
    assert rule_of(p, "sparsity")["status"] == "pass"
    assert rule_of(p, "bytes_fp32")["status"] == "fail"
    assert rule_of(p, "compression_ratio")["status"] == "fail"  # dense storage: same size
    f16 = candidate(report, "fp16")
    assert f16["model"]["footprint"]["bytes_by_dtype"] == {"fp16": 2 * (W_ELEMENTS + B_ELEMENTS)}
    assert f16["metrics"]["bytes_fp32"]["candidate"] == 0.0
    assert rule_of(f16, "bytes_fp32")["status"] == "pass"
    assert rule_of(f16, "sparsity")["status"] == "fail"
    q = candidate(report, "qdq")
    assert q["model"]["footprint"]["bytes_by_dtype"]["int8"] == W_ELEMENTS + D_HID + K
    assert rule_of(q, "bytes_fp32")["status"] == "fail"  # its scales and biases are fp32
    for name in ("fp16", "qdq", "dyn_int8", "tool_fp16", "pruned80"):
        c = candidate(report, name)
        assert rule_of(c, "macs")["status"] == "pass", name  # same matrix work, whatever the storage
        assert c["rules"] and all(r["status"] != "error" for r in c["rules"]), c["rules"]
    assert candidate(report, "tool_fp16")["model"]["footprint"]["compression_ratio"] > 1.5
    assert rule_of(candidate(report, "dyn_int8"), "compression_ratio")["status"] == "pass"
    assert report["base"]["metrics"]["macs"] == W_ELEMENTS


def test_markdown_shows_the_footprint_table(checked, models):
    d, _ = models
    md = (d / "out" / "report.md").read_text(encoding="utf-8")
    assert "### Latency, memory and footprint" in md
    assert f"int8 {W_ELEMENTS + D_HID + K:,} B" in md
    assert "80.0%" in md  # the pruned candidate's sparsity


def test_a_relative_metric_takes_only_absolute_bounds(tmp_path):
    from gate.errors import GateInputError
    from gate.policy import parse_policy

    text = "version: 1\nrules:\n  - metric: compression_ratio\n    max_drop: 0.5\n"
    with pytest.raises(GateInputError) as info:
        parse_policy(text, "p.yaml", tmp_path)
    assert info.value.line == 4 and "use min or max" in info.value.render()
