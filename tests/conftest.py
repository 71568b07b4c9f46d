"""Shared fixtures: real, tiny ONNX models whose every prediction the test chooses.

The workhorse is a LOOKUP-TABLE model: its input is the sample index `idx`
(int64, shape [batch, 1]) and its output is row `idx` of a table the test
gives. So a test fixes the exact prediction of every sample, for the base and
for every candidate, and knows the accuracy drop and the flips (b = base right
and candidate wrong, c = base wrong and candidate right) exactly.

Everything is built with onnx.helper (opset 17, IR version 8), never downloaded,
and run through the real CLI: in this process (run_main: gate.cli.main, output captured) unless the
process itself is under test, then in a subprocess (run_cli: `python -m gate ...`). The demo
(`gate demo`) is built once per session (demo_run, demo_dir) and shared.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# predictions with exact, known counts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """Labels and the predicted class of every sample for a base and a candidate."""
    y: np.ndarray  # (n,) int64 true classes
    base: np.ndarray  # (n,) int64 base predictions
    cand: np.ndarray  # (n,) int64 candidate predictions
    k: int

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def b(self) -> int:
        return int(((self.base == self.y) & (self.cand != self.y)).sum())

    @property
    def c(self) -> int:
        return int(((self.base != self.y) & (self.cand == self.y)).sum())

    @property
    def flips(self) -> int:
        return int((self.base != self.cand).sum())


def make_scenario(n: int, base_right: int, b: int, c: int, *, k: int = 3, seed: int = 0,
                  extra_flips: int = 0) -> Scenario:
    """n samples; the base is right on `base_right`; the candidate loses b of those and wins c of
    the others. `extra_flips` base-wrong samples change to another wrong class (a flip that is
    neither negative nor positive; needs k >= 3)."""
    assert 0 <= b <= base_right <= n and 0 <= c <= n - base_right
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n).astype(np.int64)
    order = rng.permutation(n)
    right, wrong = order[:base_right], order[base_right:]
    base = y.copy()
    base[wrong] = (y[wrong] + 1) % k
    cand = base.copy()
    lost = right[:b]
    cand[lost] = (y[lost] + 1) % k
    won = wrong[:c]
    cand[won] = y[won]
    if extra_flips:
        assert k >= 3 and c + extra_flips <= len(wrong)
        other = wrong[c:c + extra_flips]
        cand[other] = (y[other] + 2) % k
    s = Scenario(y=y, base=base, cand=cand, k=k)
    assert (int((base == y).sum()), s.b, s.c) == (base_right, b, c)
    return s


def logits_for(pred: np.ndarray, k: int, *, seed: int = 0, margin: float = 2.0) -> np.ndarray:
    """(n, k) float32 logits whose argmax is `pred`, with some noise on the other classes."""
    rng = np.random.default_rng(seed)
    table = rng.uniform(-1.0, 1.0, size=(len(pred), k))
    table[np.arange(len(pred)), pred] = margin + rng.uniform(0.0, 1.0, size=len(pred))
    return table.astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# lookup-table ONNX models
# --------------------------------------------------------------------------------------------

def _finish(nodes, inputs, outputs, initializers, path: Path, *, external: bool) -> Path:
    graph = helper.make_graph(nodes, "lookup", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="gate-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        # the table goes to the .data file; the 8-byte Squeeze axes stay inline, as exporters keep
        # small tensors (onnxruntime cannot shape-infer from an external axes tensor)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=64)
    else:
        onnx.save_model(model, str(path))
    return path


def save_graph(graph, path: Path) -> Path:
    """A hand-built graph saved as a model of this suite's opset and IR version."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def bound_runners(policy_path: Path, max_mb: float = 100) -> list[tuple[str, Path, object]]:
    """(name, path, runner) of the policy's base and candidates, each bound to the policy's data,
    as the speed code receives them."""
    from gate.data import load_dataset
    from gate.models import open_runner
    from gate.policy import load_policy

    policy = load_policy(policy_path)
    data = load_dataset(policy.data, max_mb=max_mb)
    runners = []
    for ref in (policy.base, *policy.candidates):
        runner = open_runner(ref, output=None, inputs={}, max_mb=max_mb)
        runner.bind(data)
        runners.append((ref.name, runner.path, runner))
    return runners


def point_external_data(path: Path, location: str) -> Path:
    """Rewrite every external-data `location` of a saved model (the data itself is not touched)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    onnx.save_model(model, str(path))
    return path


def lookup_model(path: Path, table: np.ndarray, *, kind: str = "logits", batch: int | None = None,
                 input_dtype: str = "int64", external: bool = False) -> Path:
    """Save a model whose output for sample i is computed from table[i].

    kind:
      logits         output `logits` float32 [batch, k] = table[idx]
      probabilities  output `probabilities` = Softmax(table[idx])
      binary         output `score` float32 [batch, 1] = table[idx] (one column: P(class 1))
      label          output `label` int64 [batch] = ArgMax(table[idx])
      two_outputs    outputs `logits` and `probabilities`
      regression     output `value` float32 [batch, 1] = table[idx] (one column)
    batch: None for a dynamic batch axis, or a fixed batch size.
    input_dtype: "int64" or "float32" (then the index is cast to int64 inside the model).
    """
    table = np.asarray(table, dtype=np.float32)
    if table.ndim == 1:
        table = table[:, None]
    k = table.shape[1]
    dim = batch if batch is not None else "batch"
    elem = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}[input_dtype]
    inputs = [helper.make_tensor_value_info("idx", elem, [dim, 1])]
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    nodes = []
    index = "idx"
    if input_dtype != "int64":
        nodes.append(helper.make_node("Cast", ["idx"], ["idx64"], to=TensorProto.INT64))
        index = "idx64"
    nodes.append(helper.make_node("Gather", ["table", index], ["gathered"], axis=0))  # [batch, 1, k]
    rows = "rows"
    nodes.append(helper.make_node("Squeeze", ["gathered", "axis1"], [rows]))  # [batch, k]
    f = TensorProto.FLOAT
    if kind in ("logits", "binary", "regression"):
        name = {"logits": "logits", "binary": "score", "regression": "value"}[kind]
        nodes.append(helper.make_node("Identity", [rows], [name]))
        outputs = [helper.make_tensor_value_info(name, f, [dim, k])]
    elif kind == "probabilities":
        nodes.append(helper.make_node("Softmax", [rows], ["probabilities"], axis=1))
        outputs = [helper.make_tensor_value_info("probabilities", f, [dim, k])]
    elif kind == "label":
        nodes.append(helper.make_node("ArgMax", [rows], ["label"], axis=1, keepdims=0))
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [dim])]
    elif kind == "two_outputs":
        nodes.append(helper.make_node("Identity", [rows], ["logits"]))
        nodes.append(helper.make_node("Softmax", [rows], ["probabilities"], axis=1))
        outputs = [helper.make_tensor_value_info("logits", f, [dim, k]),
                   helper.make_tensor_value_info("probabilities", f, [dim, k])]
    else:
        raise ValueError(kind)
    return _finish(nodes, inputs, outputs, inits, path, external=external)


def two_input_model(path: Path, k: int = 3) -> Path:
    """A model with two inputs (`a`, `b`, float32 [batch, 2]) and logits [batch, k]."""
    w = np.arange(2 * k, dtype=np.float32).reshape(2, k)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["logits"])]
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 2]) for x in ("a", "b")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])]
    return _finish(nodes, inputs, outputs, [numpy_helper.from_array(w, "w")], path, external=False)


# --------------------------------------------------------------------------------------------
# data, policies, the CLI
# --------------------------------------------------------------------------------------------

def base_and_copy(root: Path, y: np.ndarray, *, k: int = 3, **columns) -> np.ndarray:
    """data.npz of the labels y and the given columns, base.onnx right on about 90% of the samples (the others
    get the next class) and same.onnx giving the base's predictions; -> the base's predictions."""
    base = y.copy()
    wrong = np.random.default_rng(len(y)).random(len(y)) < 0.1
    base[wrong] = (y[wrong] + 1) % k
    write_npz(root / "data.npz", y, **columns)
    lookup_model(root / "base.onnx", logits_for(base, k, seed=1))
    lookup_model(root / "same.onnx", logits_for(base, k, seed=2))
    return base


def write_npz(path: Path, labels: np.ndarray | None, *, idx_dtype=np.int64, **extra) -> Path:
    """`idx` (n, 1) and `label` (n,), plus any extra arrays."""
    n = len(labels) if labels is not None else len(next(iter(extra.values())))
    arrays = {"idx": np.arange(n, dtype=idx_dtype).reshape(n, 1)}
    if labels is not None:
        arrays["label"] = np.asarray(labels)
    arrays.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_csv(path: Path, labels: np.ndarray, **extra) -> Path:
    """The same data as write_npz, as a CSV with columns idx, label (and extras)."""
    n = len(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["idx", "label", *extra])
        for i in range(n):
            w.writerow([i, labels[i].item(), *(v[i] for v in extra.values())])
    return path


def write_policy(path: Path, rules: list[dict], *, base: str | dict | None = "base.onnx",
                 candidates: dict | None = None, data: str | dict | None = "data.npz", **top) -> Path:
    """A policy YAML; model and data paths are relative to the policy file."""
    doc: dict = {"version": 1}
    if base is not None:
        doc["base"] = base
    if candidates is not None:
        doc["candidates"] = candidates
    if data is not None:
        doc["data"] = {"path": data} if isinstance(data, str) else data
    doc.update(top)
    doc["rules"] = rules
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str
    args: tuple

    def __repr__(self) -> str:
        return f"gate {' '.join(map(str, self.args))} -> {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "PYTEST_", "RUNNER_")) and k not in ("CI", "FORCE_COLOR")}
    env["PYTHONWARNINGS"] = "default"
    env["TERM"] = "dumb"
    env["COLUMNS"] = "100"
    return env


def run_cli(*args, cwd: Path | None = None, timeout: float = 180) -> CliResult:
    """`python -m gate ARGS` in a subprocess with no terminal attached."""
    proc = subprocess.run([sys.executable, "-m", "gate", *map(str, args)], cwd=cwd, env=_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout)
    return CliResult(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr, args=tuple(args))


def _repository_code_modules(before: set[str]) -> list[str]:
    """Modules imported since `before` from outside the interpreter and this checkout: repository code
    a policy's `factory:` imported from a temporary directory (a fresh process would not keep them)."""
    keep = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, ROOT})
    found = []
    for name in set(sys.modules) - before:
        file = getattr(sys.modules[name], "__file__", None)
        if file and not str(Path(file).resolve()).startswith(keep):
            found.append(name)
    return found


def run_main(*args, cwd: Path | None = None) -> CliResult:
    """`gate ARGS` in this process: gate.cli.main with stdout and stderr captured, seen as run_cli sees them
    (no terminal, the CI variables removed, warnings printed rather than raised, repository code a factory
    imported forgotten). For tests of what the gate does, not of the process it runs in: keep run_cli
    for exit codes of the process itself, signals and pipes, environments and what a fresh process imports."""
    import contextlib
    import io
    import warnings
    from unittest import mock

    from gate import cli

    out, err = io.StringIO(), io.StringIO()  # the gate reads sys.stdout/sys.stderr when it prints
    before = set(sys.modules)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    env = _env()  # PYTHONWARNINGS=default too, for the processes the gate starts
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, env, clear=True))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("default")  # as PYTHONWARNINGS=default: shown on stderr, where tests look
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, usage mistakes
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
    for name in _repository_code_modules(before):
        del sys.modules[name]
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return CliResult(code=code, stdout=out.getvalue(), stderr=err.getvalue(), args=tuple(args))


def read_report(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "report.json").read_text(encoding="utf-8"))


def candidate(report: dict, name: str) -> dict:
    found = [c for c in report["candidates"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in report["candidates"]]
    return found[0]


def rule_of(cand: dict, metric: str, bound_kind: str | None = None) -> dict:
    found = [r for r in cand["rules"] if r["metric"] == metric and (bound_kind is None or r["bound_kind"] == bound_kind)]
    assert len(found) == 1, cand["rules"]
    return found[0]


# --------------------------------------------------------------------------------------------
# the demo, built once per session
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoRun:
    root: Path  # what `gate demo --out ROOT` wrote: policy.yaml, models/, data/ and report/
    assets: object  # the gate.demo_assets.DemoAssets that build_demo_assets returned in that run
    result: CliResult


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """One `gate demo` (in this process) for the whole session: 5 candidates, pruned-90 fails 5 rules and
    warns on 1, 29 rules pass. Shared: read it, never write into it (copy it with shutil.copytree first)."""
    from unittest import mock

    from gate import demo_assets

    built = []
    build = demo_assets.build_demo_assets

    def recording(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    root = tmp_path_factory.mktemp("demo") / "gate-demo"
    with mock.patch.object(demo_assets, "build_demo_assets", recording):
        result = run_main("demo", "--out", root)
    assert result.code == 0 and len(built) == 1, result
    assert "Traceback" not in result.stderr, result
    return DemoRun(root=root, assets=built[0], result=result)


@pytest.fixture(scope="session")
def demo_dir(demo_run) -> Path:
    """The session's `gate demo` output directory (read-only, see demo_run)."""
    return demo_run.root


# --------------------------------------------------------------------------------------------
# fixtures: factories, so tests and module fixtures build exactly what they need
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def build_model():
    return lookup_model


@pytest.fixture(scope="session")
def scenario():
    return make_scenario


@pytest.fixture(scope="session")
def write_data():
    return write_npz


@pytest.fixture(scope="session")
def policy_file():
    return write_policy


@pytest.fixture(scope="session")
def gate_cli():
    return run_cli
