"""Data formats: the same calibration data as .npz, .csv, Parquet, Arrow IPC / Feather and a folder of .npy
files gives the same verdict and the same report.json numbers; hostile files of the new formats are exit 2,
naming the file and the column.

Every run is `gate check` in this process (conftest.run_main) on real tiny ONNX lookup models.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from conftest import (candidate, logits_for, lookup_model, make_scenario, read_report, run_main, two_input_model,
                      write_csv, write_policy)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")

N, K = 120, 3
S = make_scenario(N, 96, 6, 2, k=K, seed=3)
REGIONS = np.array(["north", "south", "east", "west"])[np.random.default_rng(5).integers(0, 4, N)]
DEVICES = np.array(["phone", "tablet", "laptop"])[np.arange(N) % 3]
TIERS = (np.arange(N) // 40).astype(np.int64)  # 0, 1, 2
EMB = np.random.default_rng(7).normal(size=(N, 4)).astype(np.float32)
GROUPS = ["region", "device", "tier"]
RULES = [{"metric": "accuracy", "max_drop": 0.02},
         {"metric": "accuracy", "per": "group", "max_drop": 0.15, "min_samples": 10},
         {"metric": "flip_rate", "max": 0.2}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats_models")
    return {"base": lookup_model(d / "base.onnx", logits_for(S.base, K, seed=1)),
            "int8": lookup_model(d / "int8.onnx", logits_for(S.cand, K, seed=2)),
            "ab": two_input_model(d / "ab.onnx", K)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _table(*, idx_2d: bool, emb_fixed: bool):
    """The data as an Arrow table: idx as a 1-wide list (a 2-D column) or plain, emb as a list column, device
    as a categorical (dictionary) column, tier as integers."""
    idx = np.arange(N, dtype=np.int64)
    emb_type = pa.list_(pa.float32(), 4) if emb_fixed else pa.list_(pa.float32())
    return pa.table({
        "idx": pa.FixedSizeListArray.from_arrays(pa.array(idx), 1) if idx_2d else pa.array(idx),
        "label": pa.array(S.y),
        "region": pa.array(REGIONS),
        "device": pa.array(DEVICES).dictionary_encode(),
        "tier": pa.array(TIERS),
        "emb": pa.array(list(EMB), type=emb_type),
    })


def write_format(folder, kind: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    idx = np.arange(N, dtype=np.int64).reshape(N, 1)
    if kind == "npz":
        np.savez(folder / "data.npz", idx=idx, label=S.y, region=REGIONS, device=DEVICES, tier=TIERS, emb=EMB)
        return "data.npz"
    if kind == "csv":
        write_csv(folder / "data.csv", S.y, region=REGIONS, device=DEVICES, tier=TIERS)
        return "data.csv"
    if kind == "parquet":  # several row groups, a 2-D idx, a variable-length list column of equal lengths
        pq.write_table(_table(idx_2d=True, emb_fixed=False), folder / "data.parquet", row_group_size=32)
        return "data.parquet"
    if kind == "parquet-flat":
        pq.write_table(_table(idx_2d=False, emb_fixed=True), folder / "data.parquet", compression="zstd")
        return "data.parquet"
    if kind == "feather":  # lz4-compressed (the default), several record batches
        feather.write_feather(_table(idx_2d=True, emb_fixed=True), folder / "data.feather", chunksize=50)
        return "data.feather"
    if kind == "arrow":  # uncompressed, one batch: memory-mapped
        table = _table(idx_2d=True, emb_fixed=True)
        with pa.ipc.new_file(str(folder / "data.arrow"), table.schema) as writer:
            writer.write_table(table)
        return "data.arrow"
    if kind == "ipc-stream":
        table = _table(idx_2d=False, emb_fixed=True)
        with pa.ipc.new_stream(str(folder / "data.ipc"), table.schema) as writer:
            writer.write_table(table, max_chunksize=70)
        return "data.ipc"
    if kind == "npy":
        d = folder / "data"
        d.mkdir()
        for key, value in dict(idx=idx, label=S.y, region=REGIONS, device=DEVICES, tier=TIERS, emb=EMB).items():
            np.save(d / f"{key}.npy", value)
        (d / "README.txt").write_text("not an array: ignored\n")
        return "data"
    raise ValueError(kind)


def gate_check(folder, models, data, *, rules=RULES, base="base", cand="int8", inputs=None, groups=GROUPS, **top):
    spec = {"path": data, "labels": "label", "groups": groups}
    if inputs is not None:
        spec["inputs"] = inputs
    policy = write_policy(folder / "policy.yaml", rules, base=str(models[base]), candidates={"c": str(models[cand])},
                          data=spec, bootstrap=200, **top)
    return run_main("check", "--policy", policy, "--out", folder / "out", "--no-progress")


def numbers(folder) -> dict:
    report = read_report(folder / "out")
    cand = candidate(report, "c")
    return {"verdict": report["verdict"], "cand_verdict": cand["verdict"], "metrics": cand["metrics"],
            "groupings": cand["groupings"],
            "rules": [(r["metric"], r["status"], r["observed"], r["threshold"]) for r in cand["rules"]]}


KINDS = ["csv", "parquet", "parquet-flat", "feather", "arrow", "ipc-stream", "npy"]


def test_every_format_gives_the_npz_verdict_and_numbers(tmp_path, models):
    ref = write_format(tmp_path / "npz", "npz")
    result = gate_check(tmp_path / "npz", models, ref, inputs={"idx": "idx"})
    assert result.code in (0, 1), result
    expected = numbers(tmp_path / "npz")
    assert [g["name"] for g in expected["groupings"]] == GROUPS
    for kind in KINDS:
        folder = tmp_path / kind
        data = write_format(folder, kind)
        result = gate_check(folder, models, data, inputs={"idx": "idx"})
        assert result.code == (1 if expected["verdict"] == "fail" else 0), (kind, result)
        assert "Traceback" not in result.stderr, result
        got = numbers(folder)
        assert got == expected, kind
        data_record = read_report(folder / "out")["provenance"]["data"]
        assert len(data_record["sha256"]) == 64 and data_record["n_samples"] == N, kind
        assert data_record["path"].endswith(data)


def test_a_two_d_feature_column_feeds_a_model_the_same_in_every_format(tmp_path, models):
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(N, 2)).astype(np.float32), rng.normal(size=(N, 2)).astype(np.float32)
    rules = [{"metric": "accuracy", "max_drop": 0.02}, {"metric": "flip_rate", "max": 0.1}]
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "data.npz", a=a, b=b, label=S.y, device=DEVICES)
    table = pa.table({"a": pa.array(list(a), type=pa.list_(pa.float32(), 2)), "b": pa.array(list(b)),
                      "label": pa.array(S.y), "device": pa.array(DEVICES).dictionary_encode()})
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "data.parquet", row_group_size=50)
    (tmp_path / "fe").mkdir()
    feather.write_feather(table, tmp_path / "fe" / "data.feather")
    seen = {}
    for folder, data in [("npz", "data.npz"), ("pq", "data.parquet"), ("fe", "data.feather")]:
        result = gate_check(tmp_path / folder, models, data, rules=rules, base="ab", cand="ab", groups=["device"])
        assert result.code == 0, result
        seen[folder] = numbers(tmp_path / folder)
    assert seen["pq"] == seen["npz"] and seen["fe"] == seen["npz"]


def test_each_reader_gives_the_same_columns(tmp_path):
    from gate.data import load_dataset
    from gate.policy import DataSpec

    ref = load_dataset(DataSpec(path=tmp_path / "npz" / write_format(tmp_path / "npz", "npz"), groups=tuple(GROUPS)),
                       max_mb=10).columns
    for kind in ["parquet", "parquet-flat", "feather", "arrow", "ipc-stream", "npy"]:
        ds = load_dataset(DataSpec(path=tmp_path / kind / write_format(tmp_path / kind, kind),
                                   groups=tuple(GROUPS)), max_mb=10)
        assert sorted(ds.columns) == sorted(ref), kind
        for key, want in ref.items():
            got = ds.columns[key].reshape(want.shape) if key == "idx" else ds.columns[key]
            assert got.dtype == want.dtype and got.shape == want.shape, (kind, key, got.dtype, got.shape)
            assert np.array_equal(got, want), (kind, key)
        assert len(ds.sha256) == 64


def test_arrow_columns_are_views_of_the_memory_map(tmp_path):
    from gate.data import load_dataset
    from gate.policy import DataSpec

    ds = load_dataset(DataSpec(path=tmp_path / write_format(tmp_path, "arrow")), max_mb=10)
    for key in ("idx", "label", "tier", "emb"):
        assert not ds.columns[key].flags.owndata and not ds.columns[key].flags.writeable, key
    assert ds.columns["region"].dtype.kind == "U"  # text is decoded (numpy has no view of Arrow strings)


def test_parquet_is_read_one_column_of_one_row_group_at_a_time(tmp_path, monkeypatch):
    from gate.data import load_dataset
    from gate.policy import DataSpec

    path = tmp_path / write_format(tmp_path, "parquet")
    calls = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        calls.append((i, tuple(columns or ())))
        return real(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    ds = load_dataset(DataSpec(path=path), max_mb=10)
    assert len(calls) == 6 * 4 and all(len(cols) == 1 for _, cols in calls)  # 6 columns x 4 row groups
    assert ds.n == N


# ------------------------------------------------------------------------------------------
# hostile and broken files
# ------------------------------------------------------------------------------------------

def refused(result, file: str, *parts: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result
    assert file in result.stderr and "fix:" in result.stderr, result
    for part in parts:
        assert part in result.stderr, f"{part!r} not in:\n{result.stderr}"


def test_truncated_parquet(tmp_path, models):
    data = write_format(tmp_path, "parquet")
    path = tmp_path / data
    path.write_bytes(path.read_bytes()[:-200])
    refused(gate_check(tmp_path, models, data), "data.parquet", "not a readable Parquet file")


def test_parquet_with_a_nested_struct_column(tmp_path, models):
    table = _table(idx_2d=False, emb_fixed=True).append_column(
        "meta", pa.array([{"a": i, "b": str(i)} for i in range(N)]))
    pq.write_table(table, tmp_path / "data.parquet")
    refused(gate_check(tmp_path, models, "data.parquet"), "data.parquet", "column 'meta'", "struct")


def test_list_column_of_unequal_lengths(tmp_path, models):
    table = _table(idx_2d=False, emb_fixed=True).set_column(
        5, "emb", pa.array([[1.0] * (3 if i == 17 else 4) for i in range(N)], type=pa.list_(pa.float32())))
    pq.write_table(table, tmp_path / "data.parquet")
    refused(gate_check(tmp_path, models, "data.parquet"), "data.parquet", "column 'emb'", "row 17",
            "different lengths")


def test_missing_text_in_a_group_column_names_the_column_and_row(tmp_path, models):
    region = pa.array([None if i in (8, 30) else str(v) for i, v in enumerate(REGIONS)])
    table = _table(idx_2d=False, emb_fixed=True).set_column(2, "region", region)
    feather.write_feather(table, tmp_path / "data.feather")
    refused(gate_check(tmp_path, models, "data.feather"), "data.feather", "column 'region'", "2 missing (null)",
            "sample 8")


def test_null_integers_in_a_group_are_missing_values(tmp_path, models):
    tier = pa.array([None if i == 11 else int(v) for i, v in enumerate(TIERS)], type=pa.int64())
    pq.write_table(_table(idx_2d=False, emb_fixed=True).set_column(4, "tier", tier), tmp_path / "data.parquet")
    refused(gate_check(tmp_path, models, "data.parquet"), "data.parquet", "column 'tier'", "1 missing value",
            "sample 11")


def test_nan_in_a_parquet_feature_names_the_column(tmp_path, models):
    a = np.ones((N, 2), np.float32)
    a[13, 1] = np.nan
    table = pa.table({"a": pa.array(list(a), type=pa.list_(pa.float32(), 2)),
                      "b": pa.array(list(np.ones((N, 2), np.float32)), type=pa.list_(pa.float32(), 2)),
                      "label": pa.array(S.y)})
    pq.write_table(table, tmp_path / "data.parquet")
    refused(gate_check(tmp_path, models, "data.parquet", base="ab", cand="ab", groups=[],
                       rules=RULES[:1]), "data.parquet",
            "column 'a'", "sample 13", "nan")


def test_parquet_that_unpacks_over_the_limit(tmp_path, models):
    pq.write_table(pa.table({"idx": pa.array(np.zeros(2_000_000, np.int64)), "label": pa.array(np.zeros(2_000_000,
                   np.int64))}), tmp_path / "data.parquet")
    assert (tmp_path / "data.parquet").stat().st_size < 1_000_000
    refused(gate_check(tmp_path, models, "data.parquet", groups=[], rules=RULES[:1], max_file_mb=1), "data.parquet",
            "unpacks to", "1 MB")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, models, monkeypatch):
    data = write_format(tmp_path, "parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    refused(gate_check(tmp_path, models, data), "data.parquet", "pyarrow is not installed",
            "pip install 'gate[parquet]'")


def test_npy_folder_with_files_of_different_lengths(tmp_path, models):
    data = write_format(tmp_path, "npy")
    np.save(tmp_path / data / "label.npy", S.y[:N - 5])
    refused(gate_check(tmp_path, models, data), "data", "different lengths", f"label={N - 5}")


class _Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):  # unpickling it would create the marker file
        return (open, (self.path, "w"))


def test_npy_folder_with_a_pickled_object_array_is_never_unpickled(tmp_path, models):
    data = write_format(tmp_path, "npy")
    marker = tmp_path / "unpickled"
    np.save(tmp_path / data / "region.npy", np.array([_Marker(marker)] * N, dtype=object), allow_pickle=True)
    refused(gate_check(tmp_path, models, data), "region.npy", "pickled Python objects")
    assert not marker.exists()


def test_empty_folder(tmp_path, models):
    (tmp_path / "data").mkdir()
    refused(gate_check(tmp_path, models, "data"), "data", "no .npy files")


def test_npy_folder_with_a_symlink_outside_it(tmp_path, models):
    data = write_format(tmp_path, "npy")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    np.save(outside / "secret.npy", np.zeros(N))
    os.symlink(outside / "secret.npy", tmp_path / data / "secret.npy")
    refused(gate_check(tmp_path, models, data), "data", "'secret.npy'", "symbolic link", "outside the folder")


def test_npy_folder_with_a_symlink_inside_it_is_read(tmp_path, models):
    data = write_format(tmp_path, "npy")
    os.symlink(tmp_path / data / "emb.npy", tmp_path / data / "emb2.npy")
    result = gate_check(tmp_path, models, data, inputs={"idx": "idx"})
    assert result.code in (0, 1), result


def test_truncated_npy_file_in_a_folder(tmp_path, models):
    data = write_format(tmp_path, "npy")
    path = tmp_path / data / "emb.npy"
    path.write_bytes(path.read_bytes()[:-64])
    refused(gate_check(tmp_path, models, data), "emb.npy", "truncated")


def test_random_bytes_named_feather(tmp_path, models):
    (tmp_path / "data.feather").write_bytes(np.random.default_rng(1).bytes(4096))
    refused(gate_check(tmp_path, models, "data.feather"), "data.feather", "not a readable Arrow IPC")


def test_a_long_repeated_word_is_sized_before_it_becomes_numpy_text(tmp_path, models):
    word = "x" * 100_000
    pq.write_table(pa.table({"idx": pa.array(np.arange(N, dtype=np.int64)), "label": pa.array(S.y),
                             "note": pa.array([word] * N)}), tmp_path / "data.parquet")
    assert (tmp_path / "data.parquet").stat().st_size < 1_000_000  # N * 100k chars * 4 bytes = 48 MB as numpy
    refused(gate_check(tmp_path, models, "data.parquet", groups=[], rules=RULES[:1], max_file_mb=1), "data.parquet",
            "column 'note'", "over 1 MB")


LABEL_RULES = [{"metric": "balanced_accuracy", "max_drop": 0.05}, {"metric": "f1_macro", "max_drop": 0.05},
               {"metric": "accuracy", "per": "group", "max_drop": 0.15, "min_samples": 10}]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int32"])
def test_labels_of_any_integer_type_give_the_int64_verdict_and_numbers(tmp_path, models, dtype):
    """Review 5: uint64 labels met int64 predictions in y * k + pred, which numpy makes float64: a traceback
    (exit 3) in the confusion matrix. Every integer type of label gives the int64 labels' report."""
    runs = {}
    for kind in ("int64", dtype):
        folder = tmp_path / kind
        folder.mkdir()
        np.savez(folder / "data.npz", idx=np.arange(N, dtype=np.int64), label=S.y.astype(kind), region=REGIONS,
                 device=DEVICES, tier=TIERS)
        result = gate_check(folder, models, "data.npz", rules=LABEL_RULES, inputs={"idx": "idx"})
        assert result.code in (0, 1) and "Traceback" not in result.stderr, (kind, result)
        runs[kind] = numbers(folder)
    assert runs[dtype] == runs["int64"]


def test_a_uint64_label_beyond_any_class_index_is_refused_by_value(tmp_path, models):
    label = S.y.astype(np.uint64)
    label[7] = np.iinfo(np.uint64).max
    np.savez(tmp_path / "data.npz", idx=np.arange(N, dtype=np.int64), label=label, region=REGIONS, device=DEVICES,
             tier=TIERS)
    result = gate_check(tmp_path, models, "data.npz", rules=LABEL_RULES, inputs={"idx": "idx"})
    assert result.code == 2 and str(np.iinfo(np.uint64).max) in result.stderr, result
