"""Fixtures for the benchmarks: an MLP 784-512-512-10, its int8 twin, 100,000 samples, a quality policy.

Everything is built here (onnx.helper, no torch, nothing downloaded) once per
session into a temporary directory. Set GATE_BENCH_SAMPLES to build a smaller
data set for a quick smoke run (the issue's figure is for 100,000).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

N_SAMPLES = int(os.environ.get("GATE_BENCH_SAMPLES", "100000"))
LAYERS = (784, 512, 512, 10)
LABEL_NOISE = 0.10
SEED = 0

# lines printed at the end of the run whether or not output is captured (-s)
SUMMARY: list[str] = []


@dataclass(frozen=True)
class Assets:
    root: Path
    base: Path
    int8: Path
    data: Path
    policy: Path
    n_samples: int


def build_mlp(path: Path, seed: int = SEED) -> None:
    """MatMul + Add (+ Relu) per layer, float32, dynamic batch: input `input` [batch, 784] -> `logits`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    last = len(LAYERS) - 2
    for i, (fan_in, fan_out) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]))
        out = "logits" if i == last else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [out]))
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            x = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp_784_512_512_10",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", LAYERS[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LAYERS[-1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gate-bench")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_assets(root: Path, n: int = N_SAMPLES) -> Assets:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    base, int8 = root / "mlp.onnx", root / "mlp.int8.onnx"
    build_mlp(base)
    with warnings.catch_warnings():  # quantization tooling may warn; pyproject turns warnings into errors
        warnings.simplefilter("ignore")
        quantize_dynamic(str(base), str(int8), weight_type=QuantType.QInt8)

    rng = np.random.default_rng(SEED + 1)
    pixels = rng.standard_normal((n, LAYERS[0]), dtype=np.float32)
    session = ort.InferenceSession(str(base), providers=["CPUExecutionProvider"])
    label = np.concatenate([session.run(None, {"input": pixels[i:i + 8192]})[0].argmax(axis=1)
                            for i in range(0, n, 8192)]).astype(np.int64)
    noisy = rng.random(n) < LABEL_NOISE
    label[noisy] = rng.integers(0, LAYERS[-1], int(noisy.sum()))
    data = root / "calibration.npz"
    np.savez(data, pixels=pixels, label=label)  # uncompressed, as a large calibration set usually is

    policy = root / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"base: {base.name}\n"
        "candidates:\n"
        f"  int8: {int8.name}\n"
        "data:\n"
        f"  path: {data.name}\n"
        "  inputs: {input: pixels}\n"
        "  labels: label\n"
        "rules:\n"
        "  - metric: accuracy\n"
        "    max_drop: 0.01\n"
        "  - metric: flip_rate\n"
        "    max: 0.05\n"
        "  - metric: negative_flip_rate\n"
        "    max: 0.03\n",
        encoding="utf-8")
    return Assets(root=root, base=base, int8=int8, data=data, policy=policy, n_samples=n)


@pytest.fixture(scope="session")
def mlp_assets(tmp_path_factory) -> Assets:
    return build_assets(tmp_path_factory.mktemp("gate-bench-assets"))


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("gate check vs bare onnxruntime")
        for line in SUMMARY:
            terminalreporter.write_line(line)
