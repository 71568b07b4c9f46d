"""Data and model inputs that are wrong in ways numpy or onnxruntime would not say (or say badly).

Each case runs `gate check` in this process (gate.cli.main, output through capsys) on real tiny ONNX
models and asserts the CLI contract: exit 2, no traceback, the offending file named, and where there
is one, the line, column / key, sample and value. The input checker (gate/checks.py) is also tested
directly where a property is easier to see there (chunked reads, one check per column).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest

from conftest import (logits_for, lookup_model, make_scenario, point_external_data, two_input_model, write_npz,
                      write_policy)
from gate import checks
from gate.cli import main  # imported at collection: cli's _print_summary binds sys.stdout when imported
from gate.errors import GateInputError

N, K = 40, 3
S = make_scenario(N, 30, 2, 1, k=K, seed=1)
RULES = [{"metric": "accuracy", "max_drop": 0.5}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs_models")
    table = logits_for(S.base, K)
    return {
        "int": lookup_model(d / "int" / "base.onnx", table),
        "float": lookup_model(d / "float" / "base.onnx", table, input_dtype="float32"),
        "ab": two_input_model(d / "ab" / "base.onnx", K),
        "regression": lookup_model(d / "reg" / "base.onnx", np.linspace(0, 1, N), kind="regression"),
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing written outside the test's folder


def check(capsys, tmp_path, model, data, *, rules=RULES, base_name: str = "base.onnx", **policy) -> tuple[int, str]:
    """`gate check` on a policy next to the data: base and one candidate (the same model by default)."""
    if model is not None and not (tmp_path / base_name).exists():
        os.symlink(model, tmp_path / base_name)
    cand = policy.pop("candidate", base_name)
    path = write_policy(tmp_path / "policy.yaml", rules, base=base_name, candidates={"c": cand}, data=data,
                        bootstrap=100, **policy)
    capsys.readouterr()
    code = main(["check", "--policy", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    return code, err


def refused(code: int, err: str, file: str, *parts: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert file in err, err
    assert "fix:" in err, err
    for part in parts:
        assert part in err, f"{part!r} not in:\n{err}"


def npz(tmp_path, name="data.npz", **arrays) -> str:
    np.savez(tmp_path / name, **arrays)
    return name


def csv_text(tmp_path, text: str, name="data.csv", *, bom: bool = False) -> str:
    (tmp_path / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return name


# ------------------------------------------------------------------------------------------
# 1. NaN / Inf in features, labels, regression targets
# ------------------------------------------------------------------------------------------

def test_nan_in_a_feature_names_key_count_sample_and_value(capsys, tmp_path, models):
    a = np.ones((N, 2), np.float32)
    b = np.zeros((N, 2), np.float32)
    b[7, 1] = np.nan
    b[20, 0] = np.inf
    data = npz(tmp_path, a=a, b=b, label=S.y)
    code, err = check(capsys, tmp_path, models["ab"], data)
    refused(code, err, "data.npz", "key 'b'", "input 'b'", "2 non-finite values", "sample 7", "nan",
            "position (1,)")


def test_inf_in_a_float_index_column(capsys, tmp_path, models):
    idx = np.arange(N, dtype=np.float32).reshape(N, 1)
    idx[12] = -np.inf
    code, err = check(capsys, tmp_path, models["float"], npz(tmp_path, idx=idx, label=S.y))
    refused(code, err, "data.npz", "key 'idx'", "1 non-finite value", "-inf at sample 12")


def test_nan_labels_and_inf_regression_targets(capsys, tmp_path, models):
    y = S.y.astype(np.float64)
    y[3] = np.nan
    code, err = check(capsys, tmp_path, models["int"], npz(tmp_path, idx=np.arange(N).reshape(N, 1), label=y))
    refused(code, err, "data.npz", "label", "nan at sample 3")

    target = np.linspace(0, 1, N)
    target[4] = np.inf
    (tmp_path / "r").mkdir()
    code, err = check(capsys, tmp_path / "r", models["regression"],
                      npz(tmp_path / "r", idx=np.arange(N).reshape(N, 1), label=target),
                      rules=[{"metric": "mae", "max_increase": 0.5}], task="regression")
    refused(code, err, "data.npz", "label", "inf at sample 4")


def test_each_column_is_checked_once_not_per_model(capsys, tmp_path, models, monkeypatch):
    import gate.data

    seen = []
    real = gate.data.check_feature

    def spy(array, name, where, **kw):
        seen.append(name)
        return real(array, name, where, **kw)

    monkeypatch.setattr(gate.data, "check_feature", spy)
    os.symlink(models["ab"], tmp_path / "other.onnx")
    data = npz(tmp_path, a=np.ones((N, 2), np.float32), b=np.ones((N, 2), np.float32), label=S.y)
    code, err = check(capsys, tmp_path, models["ab"], data, candidate="other.onnx")
    assert code in (0, 1), err
    assert sorted(seen) == ["a", "b"]  # base and candidate bind the same columns: checked once each


def test_the_check_reads_a_memory_map_in_chunks(tmp_path, monkeypatch):
    path = tmp_path / "big.npy"
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(3000, 784))
    mapped[:] = 1.0
    mapped[2999, 783] = np.nan
    mapped[2500, 5] = np.inf
    mapped.flush()
    array = np.load(path, mmap_mode="r")
    monkeypatch.setattr(checks, "CHUNK_ELEMENTS", 784 * 100)  # 30 chunks of 100 rows
    sizes = []
    real = np.isfinite

    def counting(chunk, *a, **kw):
        sizes.append(chunk.shape[0])
        return real(chunk, *a, **kw)

    monkeypatch.setattr(checks.np, "isfinite", counting)
    count, first, value = checks.nonfinite(array)
    monkeypatch.undo()
    assert (count, first, value) == (2, (2500, 5), float("inf"))
    assert max(sizes) == 100 and len(sizes) == 30  # never the whole column at once


def test_nonfinite_ignores_integer_and_text_columns():
    assert checks.nonfinite(np.arange(5)) is None
    assert checks.nonfinite(np.array(["nan", "x"])) is None
    assert checks.nonfinite(np.ones((4, 3))) is None


# ------------------------------------------------------------------------------------------
# 2. data.inputs keys that match no model input
# ------------------------------------------------------------------------------------------

def test_unknown_inputs_key_lists_the_inputs_with_did_you_mean(capsys, tmp_path, models):
    write_npz(tmp_path / "data.npz", S.y)
    code, err = check(capsys, tmp_path, models["int"], {"path": "data.npz", "inputs": {"idz": "idx"}})
    refused(code, err, "base.onnx", "'idz'", "its inputs are: 'idx'", "did you mean 'idx'")


def test_unknown_inputs_key_beside_valid_ones(capsys, tmp_path, models):
    data = npz(tmp_path, a=np.ones((N, 2), np.float32), b=np.ones((N, 2), np.float32), label=S.y)
    code, err = check(capsys, tmp_path, models["ab"], {"path": data, "inputs": {"a": "a", "b": "b", "pixels": "a"}})
    refused(code, err, "base.onnx", "'pixels'", "'a', 'b'")


def test_unknown_inputs_key_of_a_torch_model(capsys, tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, features):
            return features * 2.0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Net()).save(str(tmp_path / "net.pt"))
    data = npz(tmp_path, x=np.ones((N, K), np.float32), label=S.y)
    code, err = check(capsys, tmp_path, None, {"path": data, "inputs": {"feature": "x"}}, base_name="net.pt")
    refused(code, err, "net.pt", "'feature'", "'features'", "did you mean 'features'")

    # and the torch path runs the same feature check
    x = np.ones((N, K), np.float32)
    x[9, 2] = np.nan
    (tmp_path / "nan").mkdir()
    os.symlink(tmp_path / "net.pt", tmp_path / "nan" / "net.pt")
    data = npz(tmp_path / "nan", x=x, label=S.y)
    code, err = check(capsys, tmp_path / "nan", None, data, base_name="net.pt")
    refused(code, err, "data.npz", "key 'x'", "nan at sample 9")


# ------------------------------------------------------------------------------------------
# 3. empty files
# ------------------------------------------------------------------------------------------

def test_empty_model_file(capsys, tmp_path, models):
    (tmp_path / "base.onnx").write_bytes(b"")
    write_npz(tmp_path / "data.npz", S.y)
    code, err = check(capsys, tmp_path, None, "data.npz")
    refused(code, err, "base.onnx", "empty (0 bytes)")
    assert "onnxruntime" not in err


@pytest.mark.parametrize("name", ["data.npz", "data.csv"])
def test_empty_data_file(capsys, tmp_path, models, name):
    (tmp_path / name).write_bytes(b"")
    code, err = check(capsys, tmp_path, models["int"], name)
    refused(code, err, name, "empty (0 bytes)")


# ------------------------------------------------------------------------------------------
# 4. CSV: text in a numeric column, byte-order mark, nan/inf cells
# ------------------------------------------------------------------------------------------

def test_csv_text_cell_in_a_feature_column_names_line_column_and_value(capsys, tmp_path, models):
    lines = ["idx,label"] + [f"{i},{S.y[i]}" for i in range(N)]
    lines[6] = f"abc,{S.y[5]}"  # sample 5, line 7
    code, err = check(capsys, tmp_path, models["float"], csv_text(tmp_path, "\n".join(lines) + "\n"))
    refused(code, err, "data.csv:7", "column 'idx'", "line 7", "'abc'", "not a number")
    assert "<U" not in err


def test_csv_empty_cell_after_blank_lines_keeps_the_file_line(capsys, tmp_path, models):
    lines = ["idx,label", ""] + [f"{i},{S.y[i]}" for i in range(N)]  # a blank line 2: sample i on line i + 3
    lines[2 + 10] = f",{S.y[10]}"
    code, err = check(capsys, tmp_path, models["float"], csv_text(tmp_path, "\n".join(lines) + "\n"))
    refused(code, err, "data.csv:13", "column 'idx'", "sample 10", "is empty")


def test_csv_nan_cell_is_caught_by_the_finite_check(capsys, tmp_path, models):
    lines = ["idx,label"] + [f"{i},{S.y[i]}" for i in range(N)]
    lines[9] = f"nan,{S.y[8]}"
    code, err = check(capsys, tmp_path, models["float"], csv_text(tmp_path, "\n".join(lines) + "\n"))
    refused(code, err, "data.csv:10", "column 'idx'", "1 non-finite value", "line 10 (sample 8)")


def test_csv_with_a_byte_order_mark_reads_as_utf8(capsys, tmp_path, models):
    from gate.data import load_dataset
    from gate.policy import DataSpec

    text = "\n".join(["idx,label"] + [f"{i},{S.y[i]}" for i in range(N)]) + "\n"
    name = csv_text(tmp_path, text, bom=True)
    code, err = check(capsys, tmp_path, models["int"], {"path": name, "inputs": {"idx": "idx"}, "labels": "label"})
    assert code == 0, err
    dataset = load_dataset(DataSpec(path=tmp_path / name), max_mb=10)
    assert list(dataset.columns) == ["idx", "label"]
    assert dataset.sha256  # the background hash finishes


# ------------------------------------------------------------------------------------------
# 5. ONNX external data: checked by the gate before onnxruntime or the footprint reads it
# ------------------------------------------------------------------------------------------

def _external(folder, location: str | None = None):
    path = lookup_model(folder / "base.onnx", logits_for(S.base, K), external=True)
    return point_external_data(path, location) if location is not None else path


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "truncated"])
def test_external_data_outside_the_folder_or_truncated(capsys, tmp_path, case):
    folder = tmp_path / "m"
    folder.mkdir()
    path = _external(folder)
    data = folder / "base.onnx.data"
    if case == "dotdot":
        (tmp_path / "secret").write_bytes(data.read_bytes())  # a real copy: only the location check stops it
        _external(folder, "../secret")
        expect = ("'../secret'", "'..'")
    elif case == "absolute":
        _external(folder, "/etc/passwd")
        expect = ("'/etc/passwd'", "absolute path")
    elif case == "symlink":
        outside = tmp_path / "outside.bin"
        outside.write_bytes(data.read_bytes())
        os.symlink(outside, folder / "link.data")
        _external(folder, "link.data")
        expect = ("'link.data'", "symbolic link", "outside")
    else:
        data.write_bytes(data.read_bytes()[:100])
        expect = ("'base.onnx.data'", "100 bytes", "truncated")
    write_npz(folder / "data.npz", S.y)
    code, err = check(capsys, folder, None, "data.npz")
    refused(code, err, "base.onnx", "tensor 'table'", *expect)

    from gate.measure.footprint import model_facts  # the footprint reads locations through the same check

    with pytest.raises(GateInputError) as caught:
        model_facts(path)
    assert "tensor 'table'" in caught.value.message and caught.value.path == str(path)


def test_external_data_inside_the_folder_runs(capsys, tmp_path):
    _external(tmp_path)
    write_npz(tmp_path / "data.npz", S.y)
    code, err = check(capsys, tmp_path, None, "data.npz")
    assert code == 0, err
    from gate.safety import check_external_data

    files = check_external_data(tmp_path / "base.onnx")
    assert [(p.name, size) for p, size in files] == [("base.onnx.data", (tmp_path / "base.onnx.data").stat().st_size)]


# ------------------------------------------------------------------------------------------
# 6. odd arrays: 0-d keys, one-hot or column labels, group columns, casts that change values
# ------------------------------------------------------------------------------------------

def test_zero_d_array_in_npz(capsys, tmp_path, models):
    code, err = check(capsys, tmp_path, models["int"],
                      npz(tmp_path, idx=np.arange(N).reshape(N, 1), label=S.y, scale=np.array(2.0)))
    refused(code, err, "data.npz", "'scale'", "0-d")


def test_labels_as_a_column_vector_work_and_one_hot_labels_are_refused(capsys, tmp_path, models):
    idx = np.arange(N).reshape(N, 1)
    code, err = check(capsys, tmp_path, models["int"], npz(tmp_path, idx=idx, label=S.y.reshape(N, 1)))
    assert code in (0, 1) and "Traceback" not in err, err

    (tmp_path / "hot").mkdir()
    code, err = check(capsys, tmp_path / "hot", models["int"],
                      npz(tmp_path / "hot", idx=idx, label=np.eye(K, dtype=np.int64)[S.y]))
    refused(code, err, "data.npz", "one-hot", "np.argmax")


GROUP_RULES = [{"metric": "accuracy", "per": "group", "max_drop": 0.5, "min_samples": 1}]


def test_group_column_with_nan(capsys, tmp_path, models):
    g = np.zeros(N)
    g[5::4] = np.nan
    data = npz(tmp_path, idx=np.arange(N).reshape(N, 1), label=S.y, region=g)
    code, err = check(capsys, tmp_path, models["int"], {"path": data, "groups": ["region"]}, rules=GROUP_RULES)
    refused(code, err, "data.npz", "group key 'region'", "9 missing values", "sample 5", "'unknown'")


def test_group_column_of_two_dimensions(capsys, tmp_path, models):
    data = npz(tmp_path, idx=np.arange(N).reshape(N, 1), label=S.y, region=np.zeros((N, 2)))
    code, err = check(capsys, tmp_path, models["int"], {"path": data, "groups": ["region"]}, rules=GROUP_RULES)
    refused(code, err, "data.npz", "'region'", f"({N}, 2)")


def test_float64_beyond_float32_is_not_cast_silently(capsys, tmp_path, models):
    idx = np.arange(N, dtype=np.float64).reshape(N, 1)
    idx[6] = 1e40
    code, err = check(capsys, tmp_path, models["float"], npz(tmp_path, idx=idx, label=S.y))
    refused(code, err, "data.npz", "key 'idx'", "sample 6", "1e+40", "float32")


def test_text_array_in_npz_feeding_a_number_input(capsys, tmp_path, models):
    cells = [[str(i)] for i in range(N)]
    cells[11] = ["eleven"]
    idx = np.array(cells)
    code, err = check(capsys, tmp_path, models["float"], npz(tmp_path, idx=idx, label=S.y))
    refused(code, err, "data.npz", "key 'idx'", "sample 11", "'eleven'")
