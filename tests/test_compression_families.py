"""Every common compression family, built from a small real model and judged end to end.

A module fixture trains a tiny CNN on scikit-learn's bundled digits (8x8 images, seeded,
a few seconds on a CPU) and compresses it eight ways with the real tools:

  int8-dynamic   onnxruntime quantize_dynamic                     ONNX
  int8-qdq       onnxruntime quantize_static, QDQ, per channel    ONNX
  fp16           onnxruntime.transformers.float16                 ONNX
  pruned-50      torch.nn.utils.prune, global magnitude, 50%      .pt2 (torch.export)
  channels       half the channels of both convolutions removed   TorchScript .pt
  low-rank       SVD of the big linear layer, rank 16             .safetensors + factory
  student        a distilled MLP (another architecture)           ONNX
  torch-int8     torch.ao dynamic int8 quantization of Linear     TorchScript .pt
  torch-same     the base itself, as safetensors + factory        (torch vs ONNX runtime)

One `gate check` (gate.cli.main, in this process: conftest.run_main) judges them all against the
ONNX base: torch and ONNX models in one policy. Each test then holds the report to numbers computed here,
independently: every model is run in this process (onnxruntime sessions, the in-memory torch
modules) and accuracy, flips and the b/c counts are counted with numpy; parameters come from
the modules' shapes or the ONNX initializers read with numpy_helper; sparsity from the
pruned tensors; sizes from the files.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

import onnx
import onnxruntime as ort
import torch  # the test extra installs it (pip install '.[test]')
from onnx import TensorProto, helper, numpy_helper

from conftest import IR_VERSION, OPSET, candidate, read_report, rule_of, run_main, write_policy

N_TRAIN = 1000
BATCH = 256  # the policy's batch_size: the independent runs use the same batches
RANK = 16
STUDENT_HIDDEN = 32

# the repository code a safetensors model needs (`factory: zoo.nets:...`), written next to the policy
NETS = f'''
import torch
from torch import nn


class TinyCNN(nn.Module):
    """Digits 8x8: two 3x3 convolutions (8 -> 6 -> 4), then two linear layers."""

    def __init__(self, c1=16, c2=32, hidden=64, rank=None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3)
        self.conv2 = nn.Conv2d(c1, c2, 3)
        if rank:
            self.fc1 = nn.Sequential(nn.Linear(c2 * 16, rank, bias=False), nn.Linear(rank, hidden))
        else:
            self.fc1 = nn.Linear(c2 * 16, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Student(nn.Module):
    def __init__(self, hidden={STUDENT_HIDDEN}):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def cnn():
    return TinyCNN()


def cnn_lowrank():
    return TinyCNN(rank={RANK})
'''


# ------------------------------------------------------------------------------------------
# building: data, training, ONNX graphs
# ------------------------------------------------------------------------------------------

def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, cal = order[:N_TRAIN], order[N_TRAIN:]
    return x[train], y[train], x[cal], y[cal]


def _train(model, x, y, *, epochs: int, teacher=None, lr: float = 3e-3, seed: int = 0):
    """Adam on cross-entropy, or (teacher given) on the KL divergence to the teacher's softened outputs."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    soft = None
    if teacher is not None:
        with torch.no_grad():
            soft = torch.softmax(teacher(xt) / 2.0, dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(50):
            opt.zero_grad()
            out = model(xt[idx])
            if soft is None:
                loss = torch.nn.functional.cross_entropy(out, yt[idx])
            else:
                loss = torch.nn.functional.kl_div(torch.log_softmax(out / 2.0, dim=1), soft[idx],
                                                  reduction="batchmean")
            loss.backward()
            opt.step()
    return model.eval()


def _onnx_from_torch(model, path: Path, *, cnn: bool) -> Path:
    """The same computation as an ONNX graph built from the module's weights (Conv, MatMul + Add)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    inits, nodes = [], []
    h = "x"
    if cnn:
        for i, name in enumerate(("conv1", "conv2")):
            inits += [numpy_helper.from_array(sd[f"{name}.weight"], f"{name}.weight"),
                      numpy_helper.from_array(sd[f"{name}.bias"], f"{name}.bias")]
            nodes += [helper.make_node("Conv", [h, f"{name}.weight", f"{name}.bias"], [f"c{i}"]),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
            h = f"r{i}"
    nodes.append(helper.make_node("Flatten", [h], ["flat"], axis=1))
    h = "flat"
    for i, name in enumerate(("fc1", "fc2")):
        inits += [numpy_helper.from_array(np.ascontiguousarray(sd[f"{name}.weight"].T), f"{name}.wT"),
                  numpy_helper.from_array(sd[f"{name}.bias"], f"{name}.bias")]
        out = "logits" if name == "fc2" else f"f{i}"
        nodes += [helper.make_node("MatMul", [h, f"{name}.wT"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"{name}.bias"], [out])]
        if name == "fc1":
            nodes.append(helper.make_node("Relu", [out], ["a1"]))
            h = "a1"
    graph = helper.make_graph(nodes, "digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gate-tests")
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))
    return path


def _quantized_onnx(base: Path, d: Path, x_train) -> dict[str, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.float16 import convert_float_to_float16

    pre = d / "base.pre.onnx"
    quant_pre_process(str(base), str(pre))
    out = {"int8-dynamic": d / "int8_dynamic.onnx", "int8-qdq": d / "int8_qdq.onnx", "fp16": d / "fp16.onnx"}
    quantize_dynamic(str(pre), str(out["int8-dynamic"]), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        """Calibration batches: training images, never the gate's data."""

        def __init__(self):
            self._batches = iter([{"x": x_train[i:i + 50]} for i in range(0, 300, 50)])

        def get_next(self):
            return next(self._batches, None)

    reader = Reader()
    quantize_static(str(pre), str(out["int8-qdq"]), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    half = convert_float_to_float16(onnx.load(str(base)), keep_io_types=True)
    onnx.save_model(half, str(out["fp16"]))
    return out


def _remove_channels(model, nets, keep1: int, keep2: int):
    """Structured pruning: the conv filters with the largest L1 norms stay, the others are cut out of
    the tensors (and the inputs they fed), so every tensor gets smaller."""
    small = nets.TinyCNN(c1=keep1, c2=keep2)
    w1, w2, f1 = model.conv1.weight.detach(), model.conv2.weight.detach(), model.fc1.weight.detach()
    k1 = torch.argsort(w1.abs().sum((1, 2, 3)), descending=True)[:keep1].sort().values
    k2 = torch.argsort(w2[:, k1].abs().sum((1, 2, 3)), descending=True)[:keep2].sort().values
    cols = (k2[:, None] * 16 + torch.arange(16)).reshape(-1)  # fc1 inputs of the kept conv2 channels
    with torch.no_grad():
        small.conv1.weight.copy_(w1[k1])
        small.conv1.bias.copy_(model.conv1.bias[k1])
        small.conv2.weight.copy_(w2[k2][:, k1])
        small.conv2.bias.copy_(model.conv2.bias[k2])
        small.fc1.weight.copy_(f1[:, cols])
        small.fc1.bias.copy_(model.fc1.bias)
        small.fc2.load_state_dict(model.fc2.state_dict())
    return small


def _low_rank(model, nets):
    """fc1 (64 x 512) ~ U_r S_r V_r^T: two linear layers of rank RANK, no retraining."""
    small = nets.TinyCNN(rank=RANK)
    u, s, vh = torch.linalg.svd(model.fc1.weight.detach(), full_matrices=False)
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc2"):
            getattr(small, name).load_state_dict(getattr(model, name).state_dict())
        small.fc1[0].weight.copy_(s[:RANK, None] * vh[:RANK])
        small.fc1[1].weight.copy_(u[:, :RANK])
        small.fc1[1].bias.copy_(model.fc1.bias)
    return small.eval()


def _import_nets(d: Path):
    spec = importlib.util.spec_from_file_location("gate_test_zoo_nets", d / "zoo" / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export(model, x, path: Path) -> Path:
    program = torch.export.export(model, (torch.from_numpy(x[:4]),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    return path


# ------------------------------------------------------------------------------------------
# independent numbers
# ------------------------------------------------------------------------------------------

def _run_onnx(path: Path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def _run_torch(model, x) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(x[i:i + BATCH])).numpy() for i in range(0, len(x), BATCH)])


def _onnx_stored_values(path: Path) -> int:
    model = onnx.load(str(path))
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    return int(sum(numpy_helper.to_array(t).size for t in tensors))


def _module_values(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------------------
# the fixture: build everything, judge once
# ------------------------------------------------------------------------------------------

RULES = [{"metric": "accuracy", "max_drop": 0.05},
         {"metric": "flip_rate", "max": 0.2},
         {"metric": "parameters", "max_relative_increase": 0.1}]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    d = tmp_path_factory.mktemp("families")
    (d / "zoo").mkdir()
    (d / "zoo" / "__init__.py").write_text("", encoding="utf-8")
    (d / "zoo" / "nets.py").write_text(NETS, encoding="utf-8")
    nets = _import_nets(d)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and steady on a busy machine
    x_train, y_train, x, y = _digits()
    np.savez(d / "data.npz", x=x, label=y)

    base = _train(nets.TinyCNN(), x_train, y_train, epochs=12)
    _onnx_from_torch(base, d / "base.onnx", cnn=True)
    from safetensors.torch import save_file

    save_file(base.state_dict(), str(d / "cnn.safetensors"))
    onnx_paths = _quantized_onnx(d / "base.onnx", d, x_train)

    from torch.nn.utils import prune

    pruned = copy.deepcopy(base)
    layers = [(pruned.conv1, "weight"), (pruned.conv2, "weight"), (pruned.fc1, "weight"), (pruned.fc2, "weight")]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.5)
    for module, name in layers:
        prune.remove(module, name)
    _export(pruned, x, d / "pruned50.pt2")

    channels = _train(_remove_channels(base, nets, 8, 16), x_train, y_train, epochs=3, lr=1e-3, seed=1)
    low_rank = _low_rank(base, nets)
    save_file(low_rank.state_dict(), str(d / "lowrank.safetensors"))
    student = _train(nets.Student(), x_train, y_train, epochs=25, teacher=base, seed=2)
    _onnx_from_torch(student, d / "student.onnx", cnn=False)
    with warnings.catch_warnings():
        # TorchScript, torch.ao quantization and qint8 tensors are deprecated upstream (still the common path)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*", category=UserWarning)
        torch.jit.trace(channels, torch.from_numpy(x[:4])).save(str(d / "channels.pt"))
        torch_int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {torch.nn.Linear},
                                                            dtype=torch.qint8)
        torch.jit.trace(torch_int8, torch.from_numpy(x[:4])).save(str(d / "torch_int8.pt"))
        outputs = {"torch-int8": _run_torch(torch_int8, x)}

    paths = {**{k: v.name for k, v in onnx_paths.items()},
             "pruned-50": "pruned50.pt2", "channels": "channels.pt",
             "low-rank": {"path": "lowrank.safetensors", "factory": "zoo.nets:cnn_lowrank"},
             "student": "student.onnx", "torch-int8": "torch_int8.pt",
             "torch-same": {"path": "cnn.safetensors", "factory": "zoo.nets:cnn"}}
    policy = write_policy(d / "policy.yaml", RULES, base="base.onnx", candidates=paths,
                          data={"path": "data.npz", "labels": "label"}, batch_size=BATCH)
    result = run_main("check", "--policy", policy, "--out", d / "out")

    outputs["base"] = _run_onnx(d / "base.onnx", x)
    for name, path in onnx_paths.items():
        outputs[name] = _run_onnx(path, x)
    outputs["student"] = _run_onnx(d / "student.onnx", x)
    for name, model in (("pruned-50", pruned), ("channels", channels), ("low-rank", low_rank),
                        ("torch-same", base)):
        outputs[name] = _run_torch(model, x)
    models = {"base": base, "pruned-50": pruned, "channels": channels, "low-rank": low_rank, "student": student}
    torch.set_num_threads(threads)
    return {"dir": d, "result": result, "y": y, "outputs": outputs, "models": models, "paths": paths}


@pytest.fixture(scope="module")
def report(families):
    result = families["result"]
    assert result.code in (0, 1), result
    assert "Traceback" not in result.stderr, result
    return read_report(families["dir"] / "out")


def _check_agreement(report, families, name: str) -> dict:
    """accuracy (base, candidate, b, c), flip rates and the accuracy rule, against this process's own runs."""
    y, outputs = families["y"], families["outputs"]
    base_pred = outputs["base"].argmax(1)
    pred = outputs[name].argmax(1)
    n = len(y)
    b = int(((base_pred == y) & (pred != y)).sum())
    c = int(((base_pred != y) & (pred == y)).sum())
    c_entry = candidate(report, name)
    assert c_entry["error"] is None, c_entry["error"]
    acc = c_entry["metrics"]["accuracy"]
    assert acc["base"] == pytest.approx(float((base_pred == y).mean()), abs=1e-12)
    assert acc["candidate"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
    assert (acc["evidence"]["b"], acc["evidence"]["c"], acc["evidence"]["n"]) == (b, c, n)
    assert c_entry["metrics"]["flip_rate"]["candidate"] == pytest.approx(float((pred != base_pred).mean()), abs=1e-12)
    assert c_entry["metrics"]["negative_flip_rate"]["candidate"] == pytest.approx(b / n, abs=1e-12)
    assert rule_of(c_entry, "accuracy", "max_drop")["observed"] == pytest.approx((b - c) / n, abs=1e-12)
    size = (families["dir"] / _path_of(families, name)).stat().st_size
    assert c_entry["metrics"]["model_size_mb"]["candidate"] == pytest.approx(size / 1e6, abs=1e-12)
    print(f"\n{name}: accuracy {acc['base']:.4f} -> {acc['candidate']:.4f} (b={b}, c={c}, n={n}), "
          f"flips {int((pred != base_pred).sum())}, parameters {c_entry['metrics']['parameters']['candidate']:.0f}, "
          f"size {size / 1e3:.1f} kB, sparsity {c_entry['metrics'].get('sparsity', {}).get('candidate')}")
    return c_entry


def _path_of(families, name: str) -> str:
    p = families["paths"][name]
    return p["path"] if isinstance(p, dict) else p


def _parameters(c_entry) -> float:
    return c_entry["metrics"]["parameters"]["candidate"]


# ------------------------------------------------------------------------------------------
# one test per family
# ------------------------------------------------------------------------------------------

def test_base_is_a_real_classifier_and_counted_exactly(report, families):
    base = families["models"]["base"]
    y, logits = families["y"], families["outputs"]["base"]
    assert (logits.argmax(1) == y).mean() > 0.9, "the trained base should classify digits well"
    params = candidate(report, "int8-dynamic")["metrics"]["parameters"]
    assert params["base"] == _module_values(base) == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 512 * 64 + 64 + 64 * 10 + 10


def test_onnxruntime_int8_dynamic(report, families):
    c = _check_agreement(report, families, "int8-dynamic")
    path = families["dir"] / "int8_dynamic.onnx"
    assert _parameters(c) == _onnx_stored_values(path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops, ops  # both kinds of layer quantized
    assert c["metrics"]["model_size_mb"]["candidate"] < 0.4 * c["metrics"]["model_size_mb"]["base"]


def test_onnxruntime_int8_static_qdq_per_channel(report, families):
    c = _check_agreement(report, families, "int8-qdq")
    path = families["dir"] / "int8_qdq.onnx"
    model = onnx.load(str(path))
    assert _parameters(c) == _onnx_stored_values(path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    per_channel = [s for s in scales if numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == s)).size > 1]
    assert len(per_channel) >= 4, "every conv and matmul weight has one scale per output channel"
    assert c["metrics"]["model_size_mb"]["candidate"] < 0.4 * c["metrics"]["model_size_mb"]["base"]


def test_fp16(report, families):
    c = _check_agreement(report, families, "fp16")
    # the same weights in half precision: the same count, about half the bytes
    assert _parameters(c) == _onnx_stored_values(families["dir"] / "fp16.onnx") == \
        _module_values(families["models"]["base"])
    assert 0.45 < c["metrics"]["model_size_mb"]["candidate"] / c["metrics"]["model_size_mb"]["base"] < 0.6
    assert c["metrics"]["flip_rate"]["candidate"] <= 0.01


def test_unstructured_magnitude_pruning_keeps_dense_storage_with_the_right_sparsity(report, families):
    c = _check_agreement(report, families, "pruned-50")
    pruned = families["models"]["pruned-50"]
    weights = [p for p in pruned.parameters() if p.dim() >= 2]
    zeros, total = sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)
    assert zeros == round(0.5 * total)
    # stored dense: every value is still a parameter; half the weights are zero
    assert _parameters(c) == _module_values(pruned) == _module_values(families["models"]["base"])
    assert c["metrics"]["sparsity"]["candidate"] == pytest.approx(zeros / total, abs=1e-12)
    assert c["metrics"]["sparsity"]["base"] == pytest.approx(0.0, abs=1e-3)
    assert c["metrics"]["nonzero_parameters"]["candidate"] == _module_values(pruned) - zeros


def test_structured_channel_pruning_makes_smaller_tensors(report, families):
    c = _check_agreement(report, families, "channels")
    small = families["models"]["channels"]
    assert tuple(small.conv1.weight.shape) == (8, 1, 3, 3)
    assert tuple(small.conv2.weight.shape) == (16, 8, 3, 3)
    assert tuple(small.fc1.weight.shape) == (64, 256)
    expected = 8 * 9 + 8 + 16 * 8 * 9 + 16 + 256 * 64 + 64 + 64 * 10 + 10
    assert _parameters(c) == _module_values(small) == expected
    assert c["metrics"]["parameters"]["delta"] == expected - _module_values(families["models"]["base"])


def test_low_rank_factorisation_has_fewer_parameters(report, families):
    c = _check_agreement(report, families, "low-rank")
    expected = 16 * 9 + 16 + 32 * 16 * 9 + 32 + 512 * RANK + RANK * 64 + 64 + 64 * 10 + 10
    assert _parameters(c) == _module_values(families["models"]["low-rank"]) == expected
    assert c["metrics"]["parameters"]["base"] - _parameters(c) == 512 * 64 - (512 + 64) * RANK


def test_distilled_student_of_another_architecture(report, families):
    c = _check_agreement(report, families, "student")
    student = families["models"]["student"]
    assert not any(isinstance(m, torch.nn.Conv2d) for m in student.modules())
    expected = 64 * STUDENT_HIDDEN + STUDENT_HIDDEN + STUDENT_HIDDEN * 10 + 10
    assert _parameters(c) == _module_values(student) == _onnx_stored_values(families["dir"] / "student.onnx") \
        == expected


def test_torch_dynamic_int8_linear(report, families):
    c = _check_agreement(report, families, "torch-int8")
    # packed int8 Linear weights are unpacked and counted: the same values as the float model
    assert _parameters(c) == _module_values(families["models"]["base"])
    assert c["model"]["footprint"]["parameters_by_dtype"]["int8"] == 512 * 64 + 64 * 10  # both Linear weights
    assert c["metrics"]["model_size_mb"]["candidate"] < 0.6 * c["metrics"]["model_size_mb"]["base"]


def test_same_model_in_torch_and_onnxruntime_agrees(report, families):
    c = _check_agreement(report, families, "torch-same")
    assert c["metrics"]["flip_rate"]["candidate"] == 0.0
    assert c["metrics"]["max_abs_diff"]["candidate"] < 1e-4
    assert _parameters(c) == c["metrics"]["parameters"]["base"]
    assert c["verdict"] == "pass"
