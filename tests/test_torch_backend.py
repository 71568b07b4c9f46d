"""The torch backend: every accepted format gives the known answer; every pickle is refused.

Known answers reuse conftest's lookup tables: a torch module whose output for sample i is row
i of a table, so a torch candidate loses exactly b and wins exactly c samples against the base,
in every format (.pt2 with a dynamic or a fixed batch, TorchScript, safetensors + factory), and
an ONNX lookup model with the same table agrees with the torch base to the last bit.

The refusals run hostile files through the real CLI: pickles under every name, torch.save
checkpoints, a fake TorchScript archive and .pt2 archives that smuggle code in the places
torch.export.load would run it. Every pickle here would create a marker file if it were ever
unpickled; the tests check that none exists afterwards.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, candidate, logits_for, lookup_model, make_scenario, read_report, run_main, write_npz, \
    write_policy
from gate import safety

N, BASE_RIGHT, B, C, K = 400, 360, 12, 3, 3

NETS = f'''
import torch
from torch import nn


class Lookup(nn.Module):
    def __init__(self, rows={N}):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(rows, {K}))

    def forward(self, idx):
        return self.table[idx[:, 0]]


def lookup():
    return Lookup()


def small():
    return Lookup(rows=10)
'''


class _Marker:
    """Unpickling this opens (creates) a file: the proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _torch():
    """torch, imported inside the tests that need it: the others show the gate works without it."""
    try:
        import torch
    except ImportError:
        pytest.fail("torch is missing: pip install '.[test]' (the test extra pins the CPU build torch==2.13.0)")
    return torch


def _lookup(table, *, outputs: str = "tensor"):
    torch = _torch()

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.as_tensor(np.asarray(table, dtype=np.float32)))

        def forward(self, idx):
            return self.table[idx[:, 0]]

    class DictLookup(Lookup):
        def forward(self, idx):
            rows = self.table[idx[:, 0]]
            return {"logits": rows, "probabilities": torch.softmax(rows, dim=1)}

    return (DictLookup() if outputs == "dict" else Lookup()).eval()


def _export(model, path: Path, *, batch: int | None = None) -> Path:
    torch = _torch()
    x = torch.zeros(batch or 4, 1, dtype=torch.int64)
    shapes = None if batch else {"idx": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))
    return path


def _script(model, path: Path) -> Path:
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.script(model).save(str(path))
    return path


def _write_nets(d: Path) -> None:
    (d / "zoo").mkdir(exist_ok=True)
    (d / "zoo" / "__init__.py").write_text("", encoding="utf-8")
    (d / "zoo" / "nets.py").write_text(NETS, encoding="utf-8")


# ------------------------------------------------------------------------------------------
# every format, known answers, a torch base
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    _torch()
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("torch_formats")
    _write_nets(d)
    s = make_scenario(N, BASE_RIGHT, B, C, k=K)
    base_table, cand_table = logits_for(s.base, K, seed=1), logits_for(s.cand, K, seed=2)
    base = _lookup(base_table)
    cand = _lookup(cand_table)
    _export(base, d / "base.pt2")
    lookup_model(d / "same.onnx", base_table)
    lookup_model(d / "cand.onnx", cand_table)
    _export(cand, d / "cand.pt2")
    _export(cand, d / "cand_static.pt2", batch=64)  # 400 = 6 x 64 + 16: the last chunk is padded
    _script(cand, d / "cand.pt")
    save_file(cand.state_dict(), str(d / "cand.safetensors"))
    _export(_lookup(cand_table, outputs="dict"), d / "cand_dict.pt2")
    write_npz(d / "data.npz", s.y)
    candidates = {"onnx": "cand.onnx", "pt2": "cand.pt2", "pt2-fixed-batch": "cand_static.pt2",
                  "torchscript": "cand.pt",
                  "safetensors": {"path": "cand.safetensors", "factory": "zoo.nets:lookup"},
                  "pt2-dict": {"path": "cand_dict.pt2", "output": "logits"},
                  "same-onnx": "same.onnx"}
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05},
                                              {"metric": "max_abs_diff", "max": 10.0}],
                          base="base.pt2", candidates=candidates, batch_size=128)
    result = run_main("check", "--policy", policy, "--out", d / "out")
    return d, s, result


@pytest.mark.parametrize("name", ["onnx", "pt2", "pt2-fixed-batch", "torchscript", "safetensors", "pt2-dict"])
def test_every_format_loses_exactly_the_chosen_samples(formats, name):
    d, s, result = formats
    assert result.code == 0, result
    c = candidate(read_report(d / "out"), name)
    assert c["error"] is None
    acc = c["metrics"]["accuracy"]
    assert acc["base"] == BASE_RIGHT / N
    assert acc["candidate"] == pytest.approx((BASE_RIGHT - B + C) / N, abs=1e-15)
    assert (acc["evidence"]["b"], acc["evidence"]["c"], acc["evidence"]["n"]) == (B, C, N)
    assert c["metrics"]["flip_rate"]["candidate"] == pytest.approx(s.flips / N, abs=1e-15)
    # the table is the model's only tensor: N x K values (the ONNX lookup also stores its 1-value axis)
    assert c["metrics"]["parameters"]["candidate"] == N * K + (1 if name == "onnx" else 0)
    assert c["metrics"]["parameters"]["base"] == N * K
    path = d / {"onnx": "cand.onnx", "pt2": "cand.pt2", "pt2-fixed-batch": "cand_static.pt2",
                "torchscript": "cand.pt", "safetensors": "cand.safetensors", "pt2-dict": "cand_dict.pt2"}[name]
    assert c["model"]["size_bytes"] == path.stat().st_size
    assert c["model"]["output"] == ("logits" if name in ("onnx", "pt2-dict") else "output")


def test_onnx_model_with_the_torch_base_table_agrees_to_the_last_bit(formats):
    d, _, result = formats
    c = candidate(read_report(d / "out"), "same-onnx")
    assert c["metrics"]["max_abs_diff"]["candidate"] == 0.0
    assert c["metrics"]["flip_rate"]["candidate"] == 0.0
    assert c["verdict"] == "pass"


def test_torch_runs_are_recorded_with_their_provenance(formats):
    d, _, _ = formats
    report = read_report(d / "out")
    assert report["base"]["model"]["path"].endswith("base.pt2")
    assert len(report["base"]["model"]["sha256"]) == 64
    assert report["provenance"]["versions"]["torch"]


# ------------------------------------------------------------------------------------------
# hostile and broken files: refused with exit 2, nothing unpickled
# ------------------------------------------------------------------------------------------

def _rewrite_pt2(src: Path, dst: Path, *, edit=None, replace: dict | None = None, add: dict | None = None) -> Path:
    """A copy of a .pt2 archive with model.json edited, members replaced or added."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        prefix = z.namelist()[0].split("/", 1)[0] + "/"
        for info in z.infolist():
            data = z.read(info.filename)
            rel = info.filename[len(prefix):]
            if edit is not None and rel == "models/model.json":
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
            if replace and rel in replace:
                data = replace[rel]
            out.writestr(info.filename, data)
        for rel, data in (add or {}).items():
            out.writestr(prefix + rel, data)
    return dst


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _set_all(doc, key: str, value) -> None:
    if isinstance(doc, dict):
        for k in doc:
            if k == key:
                doc[k] = value
            else:
                _set_all(doc[k], key, value)
    elif isinstance(doc, list):
        for item in doc:
            _set_all(item, key, value)


PICKLE_TEXT = "never loads"
SAFE_NAMED = (".pt2", "safetensors", "factory", ".onnx")

# candidate -> text its error must hold
HOSTILE = {
    "pickle-named-onnx": "is a Python pickle (protocol 4)",
    "pickle0-named-safetensors": "is a Python pickle",
    "pickle-named-pt2": "is a Python pickle",
    "joblib-compressed": "compressed Python pickle",
    "torch-save-module": "torch.save checkpoint",
    "torch-save-state-dict": "torch.save checkpoint",
    "torch-save-legacy": "Python pickle",
    "fake-torchscript": "TorchScript-like archive whose data.pkl names the Python global",
    "pt2-pickled-sample-inputs": "sample_inputs/model.pt names the Python global",
    "pt2-guard-code": "guard code",
    "pt2-shape-expression": "shape expression",
    "pt2-operator": "'torch.os.system', which is not an allow-listed torch operator",
    "pt2-compiled-library": "data/aotinductor/model/model.so",
    "pt2-name-injection": "only plain names are accepted",
    "zip-duplicate-members": "two members of the same name",
}
BROKEN = {
    "safetensors-without-factory": "needs code that builds the model",
    "factory-not-a-spec": "which is not package.module:function",
    "factory-missing-module": "failed when importing it",
    "factory-other-architecture": "does not fit the model built by zoo.nets:small",
    "wrong-input": "fails on the first samples of the data",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    torch = _torch()
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("torch_hostile")
    _write_nets(d)
    markers = d / "markers"
    markers.mkdir()
    s = make_scenario(N, BASE_RIGHT, B, C, k=K)
    table = logits_for(s.cand, K, seed=2)
    lookup_model(d / "base.onnx", logits_for(s.base, K, seed=1))
    write_npz(d / "data.npz", s.y)
    good = _export(_lookup(table), d / "good.pt2")

    def evil(name: str, protocol: int = 4) -> bytes:
        return pickle.dumps(_Marker(markers / name), protocol=protocol)

    files = {}
    files["pickle-named-onnx"] = ("model.onnx", evil("a"))
    files["pickle0-named-safetensors"] = ("model.safetensors", evil("b", protocol=0))
    files["pickle-named-pt2"] = ("model.pt2", evil("c", protocol=2))
    files["joblib-compressed"] = ("model.joblib", gzip.compress(evil("d")))
    for name, stem in (("pickle-named-onnx", "a"), ("pickle0-named-safetensors", "b"), ("pickle-named-pt2", "c"),
                       ("joblib-compressed", "d")):
        fname, data = files[name]
        (d / stem).mkdir()
        (d / stem / fname).write_bytes(data)
        files[name] = f"{stem}/{fname}"
    model = _lookup(table)
    torch.save(torch.nn.Sequential(torch.nn.Linear(1, K)), d / "module.pt")  # a whole nn.Module, pickled
    torch.save(model.state_dict(), d / "state.pt2")
    torch.save(model.state_dict(), d / "legacy.pt", _use_new_zipfile_serialization=False)
    files.update({"torch-save-module": "module.pt", "torch-save-state-dict": "state.pt2",
                  "torch-save-legacy": "legacy.pt"})
    (d / "fake.pt").write_bytes(_zip({"m/data.pkl": evil("e", protocol=2), "m/constants.pkl": pickle.dumps(()),
                                      "m/code/__torch__.py": b"", "m/version": b"3\n"}))
    files["fake-torchscript"] = "fake.pt"
    with warnings.catch_warnings(), zipfile.ZipFile(d / "twice.pt", "w") as z:  # a benign copy, then the payload
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        for member, data in (("m/data.pkl", pickle.dumps({}, protocol=2)), ("m/constants.pkl", pickle.dumps(())),
                             ("m/code/__torch__.py", b""), ("m/data.pkl", evil("i", protocol=2))):
            z.writestr(member, data)
    files["zip-duplicate-members"] = "twice.pt"
    sample = _zip({"archive/data.pkl": evil("f", protocol=2), "archive/version": b"3\n"})
    _rewrite_pt2(good, d / "sample.pt2", replace={"data/sample_inputs/model.pt": sample})
    marker = markers / "g"
    _rewrite_pt2(good, d / "guard.pt2", edit=lambda doc: doc.__setitem__(
        "guards_code", [f"__import__('os').system('touch {marker}') or True"]))
    _rewrite_pt2(good, d / "expr.pt2", edit=lambda doc: _set_all(
        doc, "expr_str", f"__import__('os').system('touch {markers / 'h'}')"))
    _rewrite_pt2(good, d / "operator.pt2", edit=lambda doc: _set_all(doc, "target", "torch.os.system"))
    _rewrite_pt2(good, d / "aoti.pt2", add={"data/aotinductor/model/model.so": b"\x7fELF"})
    _rewrite_pt2(good, d / "names.pt2", edit=lambda doc: _set_all(
        doc, "parameter_name", 'table") or __import__("os").system("true") or getattr(self, "x'))
    files.update({"pt2-pickled-sample-inputs": "sample.pt2", "pt2-guard-code": "guard.pt2",
                  "pt2-shape-expression": "expr.pt2", "pt2-operator": "operator.pt2",
                  "pt2-compiled-library": "aoti.pt2", "pt2-name-injection": "names.pt2"})

    save_file(model.state_dict(), str(d / "weights.safetensors"))
    files["safetensors-without-factory"] = "weights.safetensors"
    files["factory-not-a-spec"] = {"path": "weights.safetensors", "factory": "zoo.nets"}
    files["factory-missing-module"] = {"path": "weights.safetensors", "factory": "zoo.missing:lookup"}
    files["factory-other-architecture"] = {"path": "weights.safetensors", "factory": "zoo.nets:small"}
    _script(torch.nn.Linear(4, 3), d / "linear.pt")
    files["wrong-input"] = "linear.pt"

    candidates = {"good": "good.pt2", **files}
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}], base="base.onnx",
                          candidates=candidates)
    result = run_main("check", "--policy", policy, "--out", d / "out")
    return d, result, markers, files


def test_hostile_and_broken_candidates_make_exit_2_and_the_good_one_is_still_judged(hostile):
    d, result, _, _ = hostile
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result
    report = read_report(d / "out")
    good = candidate(report, "good")
    assert good["error"] is None and good["verdict"] == "pass"
    assert good["metrics"]["accuracy"]["evidence"]["b"] == B


def test_nothing_was_unpickled(hostile):
    _, _, markers, _ = hostile
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_by_content_with_the_safe_formats_named(hostile, name):
    d, _, _, files = hostile
    c = candidate(read_report(d / "out"), name)
    path = files[name]
    assert c["error"] is not None, name
    assert str(d / path) in c["error"], c["error"]
    assert HOSTILE[name] in c["error"], c["error"]
    assert "fix:" in c["error"]
    if "pickle" in HOSTILE[name].lower() or "torch.save" in HOSTILE[name] or "names the Python global" in HOSTILE[name]:
        assert PICKLE_TEXT in c["error"], c["error"]
        for fmt in SAFE_NAMED:
            assert fmt in c["error"], (fmt, c["error"])


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_torch_input_is_an_input_error_with_a_fix(hostile, name):
    d, _, _, _ = hostile
    c = candidate(read_report(d / "out"), name)
    assert c["error"] is not None and BROKEN[name] in c["error"], c["error"]
    assert "fix:" in c["error"]


def test_a_pickled_base_is_exit_2_before_anything_loads(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "base.onnx").write_bytes(pickle.dumps(_Marker(markers / "base")))
    s = make_scenario(50, 45, 0, 0)
    lookup_model(tmp_path / "cand.onnx", logits_for(s.cand, 3))
    write_npz(tmp_path / "data.npz", s.y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}],
                          candidates={"cand": "cand.onnx"})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out")
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'base.onnx'}: is a Python pickle" in result.stderr, result
    assert "fix: save it in a format without Python objects" in result.stderr
    assert list(markers.iterdir()) == []


def test_a_model_over_max_file_mb_is_refused_before_loading(tmp_path):
    _torch()
    s = make_scenario(N, BASE_RIGHT, B, C, k=K)
    lookup_model(tmp_path / "base.onnx", logits_for(s.base, K))
    _export(_lookup(logits_for(s.cand, K)), tmp_path / "big.pt2")
    write_npz(tmp_path / "data.npz", s.y)
    limit = (tmp_path / "big.pt2").stat().st_size / 1e6 * 0.9
    assert (tmp_path / "base.onnx").stat().st_size / 1e6 < limit and (tmp_path / "data.npz").stat().st_size / 1e6 < limit
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.05}],
                          candidates={"big": "big.pt2"}, max_file_mb=limit)
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out")
    assert result.code == 2, result
    c = candidate(read_report(tmp_path / "out"), "big")
    assert "over the limit" in c["error"] and "max_file_mb" in c["error"]


def test_a_realistic_export_passes_the_checks_and_runs_the_same(tmp_path):
    """Batch norm, padding='same', tanh GELU, einsum, an embedding, a non-persistent buffer, two inputs
    sharing a dynamic batch (torch writes guard code for it) and a dict output: accepted, unchanged."""
    torch = _torch()
    from gate.models.torch import _weights_only

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding="same")
            self.bn = torch.nn.BatchNorm2d(8)
            self.norm = torch.nn.LayerNorm(8)
            self.emb = torch.nn.Embedding(10, 8)
            self.lin = torch.nn.Linear(8, 5)
            self.register_buffer("scale", torch.tensor(2.0), persistent=False)

        def forward(self, x, tok):
            h = torch.nn.functional.gelu(self.bn(self.conv(x)), approximate="tanh")
            h = self.norm(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1) + self.emb(tok).mean(1))
            h = torch.einsum("bi,ji->bj", h, self.lin.weight) * self.scale
            return {"logits": h, "floor": torch.div(h, 3, rounding_mode="floor")}

    torch.manual_seed(0)
    net = Net().eval()
    x, tok = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4, 5))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (x, tok), dynamic_shapes={"x": {0: batch}, "tok": {0: batch}})
    assert program._guards_code, "the shared dynamic batch should give guard code to check"
    torch.export.save(program, str(tmp_path / "net.pt2"))
    assert safety.identify(tmp_path / "net.pt2", 100) == safety.TORCH_EXPORT
    checked = safety.export_archive(tmp_path / "net.pt2", 100)
    with _weights_only(torch):
        loaded = torch.export.load(io.BytesIO(checked)).module()
    x, tok = torch.randn(7, 3, 8, 8), torch.randint(0, 10, (7, 5))
    with torch.inference_mode():
        got, want = loaded(x, tok), net(x, tok)
    assert torch.equal(got["logits"], want["logits"]) and torch.equal(got["floor"], want["floor"])


# ------------------------------------------------------------------------------------------
# the pickle scanner and the weights_only guard, in process
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_scanner_finds_the_global_of_every_protocol_without_running_it(tmp_path, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps([_Marker(marker), {"x": _Marker(marker)}], protocol=protocol)  # memo reuse too
    assert safety.looks_like_pickle(data[:64])
    with pytest.raises(safety._Unsafe, match="the Python global (io|builtins|__builtin__).open"):
        safety.scan_pickle(data, safety.tensor_global)
    assert not marker.exists()


def test_scanner_accepts_a_tensor_pickle_and_refuses_a_module(tmp_path):
    torch = _torch()
    model = torch.nn.Linear(3, 2)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(model, tmp_path / "module.pt")
    with zipfile.ZipFile(tmp_path / "state.pt") as z:
        safety.scan_pickle(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))), safety.tensor_global)
    with zipfile.ZipFile(tmp_path / "module.pt") as z, pytest.raises(safety._Unsafe, match="Python global"):
        safety.scan_pickle(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))), safety.tensor_global)


def test_torch_load_inside_the_export_loader_is_forced_to_weights_only(tmp_path):
    torch = _torch()
    from gate.models.torch import _weights_only

    marker = tmp_path / "marker"
    buf = io.BytesIO()
    torch.save(_Marker(marker), buf)
    original = torch.load
    with _weights_only(torch), pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(buf.getvalue()), weights_only=False)  # what torch.export.load asks for
    assert torch.load is original
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# torch stays optional
# ------------------------------------------------------------------------------------------

def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_onnx_only_check_never_imports_torch(tmp_path):
    s = make_scenario(100, 90, 0, 0)
    lookup_model(tmp_path / "base.onnx", logits_for(s.base, 3))
    lookup_model(tmp_path / "cand.onnx", logits_for(s.cand, 3))
    write_npz(tmp_path / "data.npz", s.y)
    write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.2}],
                 candidates={"cand": "cand.onnx"})
    proc = _python("""
        import sys
        import gate.pipeline, gate.models, gate.safety, gate.cli
        assert "torch" not in sys.modules, "importing the gate imported torch"
        code = gate.cli.main(["check", "--policy", "policy.yaml", "--out", "out"])
        print("exit", code, "torch imported:", "torch" in sys.modules)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exit 0 torch imported: False" in proc.stdout, proc.stdout + proc.stderr


def test_missing_torch_is_exit_2_with_the_install_hint(formats):
    d, _, _ = formats
    proc = _python("""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed: `import torch` raises ImportError
        import gate.cli
        sys.exit(gate.cli.main(["check", "--policy", "policy.yaml", "--out", "out-no-torch"]))
    """, d)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{d / 'base.pt2'}: is a torch.export program, and PyTorch is not installed" in proc.stderr, proc.stderr
    assert "pip install 'gate[torch]'" in proc.stderr
