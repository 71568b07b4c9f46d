from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto

from gate.demo_assets import DemoAssets, build_demo_assets

EXPECTED_CANDIDATES = {"int8-dynamic", "int8-static-qdq", "fp16", "pruned-50", "pruned-90"}


@pytest.fixture(scope="module")
def assets(demo_run) -> DemoAssets:
    """What build_demo_assets returned inside the session's `gate demo` run (seed 0, its default)."""
    assert isinstance(demo_run.assets, DemoAssets)
    return demo_run.assets


@pytest.fixture(scope="module")
def calibration(assets):
    with np.load(assets.data) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def logits(assets, calibration):
    paths = {"base": assets.base, **assets.candidates}
    out = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out[name] = session.run(None, {"input": calibration["pixels"]})[0]
    return out


def _accuracy(logits, labels) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _initializer_types(path) -> set[int]:
    return {init.data_type for init in onnx.load(str(path)).graph.initializer}


def _weight_zero_fraction(path) -> float:
    # Weight matrices are the 2-D initializers; biases are 1-D.
    mats = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if len(i.dims) == 2]
    assert len(mats) == 3
    return sum(int(np.sum(m == 0)) for m in mats) / sum(m.size for m in mats)


def test_all_files_exist(assets):
    assert set(assets.candidates) == EXPECTED_CANDIDATES
    for path in (assets.policy, assets.base, assets.data, *assets.candidates.values()):
        assert path.is_file(), path
        assert path.is_relative_to(assets.root)


def test_assets_is_frozen(assets):
    with pytest.raises(AttributeError):
        assets.root = assets.root  # type: ignore[misc]


def test_calibration_data(calibration):
    assert set(calibration) == {"pixels", "label", "stroke"}
    x, y, stroke = calibration["pixels"], calibration["label"], calibration["stroke"]
    n = len(y)
    assert 680 <= n <= 760
    assert x.dtype == np.float32 and x.shape == (n, 64)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert stroke.dtype.kind == "U" and stroke.shape == (n,)
    groups, counts = np.unique(stroke, return_counts=True)
    assert list(groups) == ["heavy", "light"]
    assert abs(int(counts[0]) - int(counts[1])) <= 0.05 * n


def test_every_model_runs_on_cpu(assets, calibration, logits):
    n = len(calibration["label"])
    for name, out in logits.items():
        assert out.shape == (n, 10), name
        assert out.dtype == np.float32, name
        assert np.all(np.isfinite(out)), name


def test_base_model_interface(assets):
    model = onnx.load(str(assets.base))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 64] and out_dims == ["batch", 10]
    assert {node.op_type for node in model.graph.node} == {"MatMul", "Add", "Relu"}


def test_base_logits_are_not_probabilities(logits):
    sums = logits["base"].sum(axis=1)
    assert not np.allclose(sums, 1.0)


def test_dynamic_batch(assets, calibration):
    session = ort.InferenceSession(str(assets.base), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        (out,) = session.run(None, {"input": calibration["pixels"][:batch]})
        assert out.shape == (batch, 10)


@pytest.mark.parametrize("name", ["int8-dynamic", "int8-static-qdq"])
def test_int8_models_have_int8_weights(assets, name):
    assert TensorProto.INT8 in _initializer_types(assets.candidates[name])


def test_fp16_model_has_fp16_weights_and_fp32_io(assets):
    path = assets.candidates["fp16"]
    assert TensorProto.FLOAT16 in _initializer_types(path)
    assert TensorProto.FLOAT not in _initializer_types(path)
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_base_is_dense(assets):
    assert _weight_zero_fraction(assets.base) < 0.01


@pytest.mark.parametrize("name, sparsity", [("pruned-50", 0.5), ("pruned-90", 0.9)])
def test_pruned_sparsity(assets, name, sparsity):
    assert _weight_zero_fraction(assets.candidates[name]) == pytest.approx(sparsity, abs=0.01)


def test_pruning_leaves_biases_alone(assets):
    def biases(path):
        model = onnx.load(str(path))
        return [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) == 1]

    for name in ("pruned-50", "pruned-90"):
        for got, want in zip(biases(assets.candidates[name]), biases(assets.base), strict=True):
            np.testing.assert_array_equal(got, want)


def test_accuracy_story(calibration, logits):
    y = calibration["label"]
    base = _accuracy(logits["base"], y)
    assert base > 0.9
    drop = {name: base - _accuracy(out, y) for name, out in logits.items() if name != "base"}
    # Measured at seed 0: 0.0 for int8-dynamic, fp16 and pruned-50, 0.0014 for
    # int8-static-qdq, 0.166 for pruned-90.
    assert drop["int8-dynamic"] < 0.01
    assert drop["fp16"] < 0.01
    assert drop["int8-static-qdq"] < 0.01
    assert drop["pruned-50"] < 0.01
    assert drop["pruned-90"] > 0.08


def test_flip_rates_far_from_policy_bounds(calibration, logits):
    base_pred = np.argmax(logits["base"], axis=1)
    for name in ("int8-dynamic", "int8-static-qdq", "fp16", "pruned-50"):
        flips = np.mean(np.argmax(logits[name], axis=1) != base_pred)
        assert flips < 0.01, name


def test_policy(assets):
    text = assets.policy.read_text(encoding="utf-8")
    assert text.startswith("# gate demo policy: generated by `gate demo`\n")
    policy = yaml.safe_load(text)
    root = assets.policy.parent
    assert policy["version"] == 1
    assert policy["task"] == "classification"
    assert (root / policy["base"]).resolve() == assets.base.resolve()
    assert set(policy["candidates"]) == EXPECTED_CANDIDATES
    for name, rel in policy["candidates"].items():
        assert (root / rel).resolve() == assets.candidates[name].resolve()
    assert (root / policy["data"]["path"]).resolve() == assets.data.resolve()
    assert policy["data"]["inputs"] == {"input": "pixels"}
    assert policy["data"]["labels"] == "label"
    assert policy["data"]["groups"] == ["stroke"]
    rules = [(rule["metric"], rule.get("per")) for rule in policy["rules"]]
    assert rules == [("accuracy", None), ("accuracy", "group"), ("accuracy", "class"), ("flip_rate", None),
                     ("negative_flip_rate", None), ("kl_divergence", None), ("model_size_mb", None)]


def test_size_bound_passes_every_model(assets):
    rules = {r["metric"]: r for r in yaml.safe_load(assets.policy.read_text(encoding="utf-8"))["rules"] if "per" not in r}
    bound_bytes = rules["model_size_mb"]["max"] * 1e6
    for path in (assets.base, *assets.candidates.values()):
        assert path.stat().st_size < bound_bytes, path


def test_compressed_models_are_smaller(assets):
    base = assets.base.stat().st_size
    for name in ("int8-dynamic", "int8-static-qdq"):
        assert assets.candidates[name].stat().st_size < 0.4 * base
    assert assets.candidates["fp16"].stat().st_size < 0.6 * base


def test_build_is_deterministic(assets, tmp_path):
    # the session's build (by `gate demo`, default seed) against a second one with the seed given
    again = build_demo_assets(tmp_path / "again", seed=0)
    assert again.base.read_bytes() == assets.base.read_bytes()
    assert again.data.read_bytes() == assets.data.read_bytes()
    for name, path in assets.candidates.items():
        assert again.candidates[name].read_bytes() == path.read_bytes(), name
    assert again.policy.read_bytes() == assets.policy.read_bytes()


def test_importing_the_module_stays_light():
    # The builder's heavy dependencies must load only when it runs.
    code = (
        "import sys, gate.demo_assets; "
        "heavy = ('sklearn', 'onnxruntime.quantization', 'onnxruntime.transformers'); "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == ""
