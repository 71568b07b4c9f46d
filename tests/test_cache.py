"""The base outputs cache (`--cache DIR`): a warm run reads the base's outputs instead of running it, gives the
same report, and never trusts an entry that does not check out."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (candidate, logits_for, lookup_model, make_scenario, read_report, rule_of, run_main,
                      write_npz, write_policy)
from test_properties import first_difference

RULES = [{"metric": "accuracy", "max_drop": 0.05}, {"metric": "flip_rate", "max": 0.2},
         {"metric": "kl_divergence", "max": 5.0}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """500 samples; the candidate loses exactly 12 of the base's right answers and wins 3."""
    root = tmp_path_factory.mktemp("cache")
    s = make_scenario(500, 400, 12, 3, k=3, seed=5)
    write_npz(root / "data.npz", s.y)
    lookup_model(root / "base.onnx", logits_for(s.base, 3, seed=1))
    lookup_model(root / "cand.onnx", logits_for(s.cand, 3, seed=2))
    write_policy(root / "policy.yaml", RULES, candidates={"cand": "cand.onnx"}, batch_size=64)
    return root


def _check(root: Path, out: str, cache: Path | None, code: int = 0) -> dict:
    args = ["check", "--policy", root / "policy.yaml", "--out", root / out, "--no-progress"]
    if cache is not None:
        args += ["--cache", cache]
    result = run_main(*args)
    assert result.code == code and "Traceback" not in result.stderr, result
    return read_report(root / out)


def _same_numbers(a: dict, b: dict) -> str | None:
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731
    return first_difference(strip(a), strip(b))


def _entry(cache: Path) -> tuple[Path, Path]:
    [record] = cache.glob("base-*.json")
    return record, record.with_suffix(".npz")


def test_a_warm_run_reads_the_base_and_gives_the_same_report(tmp_path, lab):
    cache = tmp_path / "cache"
    plain = _check(lab, "plain", None)
    cold = _check(lab, "cold", cache)
    warm = _check(lab, "warm", cache)
    assert "cache" not in plain["provenance"]
    assert cold["provenance"]["cache"]["status"] == "stored" and warm["provenance"]["cache"]["status"] == "hit"
    assert _same_numbers(plain, cold) is None and _same_numbers(cold, warm) is None
    acc = rule_of(candidate(warm, "cand"), "accuracy")
    assert acc["observed"] == pytest.approx((12 - 3) / 500)
    assert "read from the cache" in (lab / "warm" / "report.html").read_text()


def test_the_base_is_not_run_when_the_entry_matches(tmp_path, lab):
    """Outputs rewritten with a matching sha256 (as a valid entry would be) are what the warm run judges, past
    the first batch, which is checked against the model: the base was not run on the rest. Here the rewritten
    base is right on every sample after the first batch of 64."""
    from gate.files import sha256_of

    cache = tmp_path / "cache"
    _check(lab, "cold2", cache)
    record_path, outputs = _entry(cache)
    y = np.load(lab / "data.npz")["label"]
    raw = np.load(outputs)["raw"].copy()
    first_right = int((raw[:64].argmax(axis=1) == y[:64]).sum())
    raw[64:] = logits_for(y, 3, seed=9)[64:]
    np.savez(outputs, raw=raw)
    record = json.loads(record_path.read_text())
    record["outputs_sha256"] = sha256_of(outputs)
    record_path.write_text(json.dumps(record))
    warm = _check(lab, "warm2", cache, code=1)  # against a near-perfect base the candidate now fails
    assert warm["provenance"]["cache"]["status"] == "hit"
    assert warm["base"]["metrics"]["accuracy"] == pytest.approx((first_right + 500 - 64) / 500)
    raw[:64] = logits_for(y, 3, seed=9)[:64]  # now the first batch disagrees with the model too: not used
    np.savez(outputs, raw=raw)
    record["outputs_sha256"] = sha256_of(outputs)
    record_path.write_text(json.dumps(record))
    again = _check(lab, "warm3", cache)
    assert again["provenance"]["cache"]["status"] == "refreshed"
    assert "differ from the base's own on its first 64 samples" in again["provenance"]["cache"]["note"]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "other key", "not json", "outputs missing",
                                    "a fifo", "a 0-d array"])
def test_a_damaged_entry_is_recomputed_with_a_note_never_trusted(tmp_path, lab, damage):
    cache = tmp_path / "cache"
    cold = _check(lab, f"c-{damage}", cache)
    record, outputs = _entry(cache)
    if damage == "flipped byte":
        data = bytearray(outputs.read_bytes())
        data[len(data) // 2] ^= 0xFF
        outputs.write_bytes(bytes(data))
    elif damage == "truncated":
        outputs.write_bytes(outputs.read_bytes()[:100])
    elif damage == "other key":
        doc = json.loads(record.read_text())
        doc["key"]["batch"] = 1
        record.write_text(json.dumps(doc))
    elif damage == "not json":
        record.write_text("{not json")
    elif damage == "a fifo":  # reading it would wait forever
        outputs.unlink()
        os.mkfifo(outputs)
    elif damage == "a 0-d array":  # consistent with its record's sha256, but not one row per sample
        from gate.files import sha256_of

        np.savez(outputs, raw=np.float32(1.0))
        doc = json.loads(record.read_text())
        doc["outputs_sha256"] = sha256_of(outputs)
        record.write_text(json.dumps(doc))
    else:
        outputs.unlink()
    again = _check(lab, f"a-{damage}", cache)
    state = again["provenance"]["cache"]
    assert state["status"] == "refreshed" and "were not used" in state["note"], state
    assert _same_numbers(cold, again) is None
    assert _check(lab, f"b-{damage}", cache)["provenance"]["cache"]["status"] == "hit"  # rewritten


def test_another_data_file_or_batch_size_is_another_entry(tmp_path, lab):
    root = tmp_path / "lab"
    shutil.copytree(lab, root)
    cache = tmp_path / "cache"
    _check(root, "one", cache)
    write_policy(root / "policy.yaml", RULES, candidates={"cand": "cand.onnx"}, batch_size=32)
    assert _check(root, "two", cache)["provenance"]["cache"]["status"] == "stored"
    y = np.load(root / "data.npz")["label"]
    write_npz(root / "data.npz", y, extra=np.zeros(len(y)))
    assert _check(root, "three", cache)["provenance"]["cache"]["status"] == "stored"
    assert len(list(cache.glob("base-*.json"))) == 3


def test_a_cache_that_is_a_file_is_refused_before_anything_runs(tmp_path, lab):
    (tmp_path / "afile").write_text("x")
    result = run_main("check", "--policy", lab / "policy.yaml", "--out", tmp_path / "r", "--cache", tmp_path / "afile")
    assert result.code == 2 and "afile" in result.stderr and "--cache" in result.stderr
    result = run_main("measure", "--policy", lab / "policy.yaml", "--out", tmp_path / "m.json", "--cache",
                      tmp_path / "c")
    assert result.code == 0 and json.loads((tmp_path / "m.json").read_text())["gate_results"]["provenance"][
        "cache"]["status"] == "stored"


def test_the_data_hash_started_early_is_used_only_for_the_unchanged_file(tmp_path):
    """gate.files.prefetch_sha256 starts the data's sha256 once the policy names it (while the pipeline
    imports); the run takes that hash only if the file is still the one hashed (inode, size, mtime)."""
    import hashlib
    import os

    from gate import files

    path = tmp_path / "data.bin"
    first, second = os.urandom(3 << 20), os.urandom(3 << 20)
    path.write_bytes(first)
    files.prefetch_sha256(path)
    early = files._STARTED[os.path.abspath(path)][1]
    taken = files.sha256_in_background(path)
    assert taken is early and taken.result() == hashlib.sha256(first).hexdigest()

    files.prefetch_sha256(path)
    stale = files._STARTED[os.path.abspath(path)][1]
    stale.result()
    path.write_bytes(second)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a coarse clock must not hide it
    fresh = files.sha256_in_background(path)
    assert fresh is not stale and fresh.result() == hashlib.sha256(second).hexdigest()
    assert files.sha256_of(path) == hashlib.sha256(second).hexdigest()

    # rewritten in place with its mtime put back, as cp -p, rsync -t and tar x do: the ctime still moves
    files.prefetch_sha256(path)
    files._STARTED[os.path.abspath(path)][1].result()
    st = os.stat(path)
    time.sleep(0.05)  # file times come from a coarse clock (a few ms): let it tick past the prefetch's stat
    path.write_bytes(first)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files.sha256_in_background(path).result() == hashlib.sha256(first).hexdigest()


def test_sequential_looks_read_and_fill_the_cache_in_the_files_order(tmp_path):
    """The entry holds the base's outputs in the file's order. A run in sequential looks reads it in the looks'
    order and gives the report it gives without a cache; a run that went to the last look stores its outputs
    in the file's order, which a fixed-sample run then reads; a run that stopped early stores nothing, and
    says why."""
    s = make_scenario(2000, 1800, 36, 0, k=3, seed=1)  # 1.8 points against a bound of 2: every look is needed
    write_npz(tmp_path / "data.npz", s.y)
    lookup_model(tmp_path / "base.onnx", logits_for(s.base, 3, seed=1))
    lookup_model(tmp_path / "close.onnx", logits_for(s.cand, 3, seed=2))
    lookup_model(tmp_path / "same.onnx", logits_for(s.base, 3, seed=2))
    rules = [{"metric": "accuracy", "max_drop": 0.02}]

    def run(name: str, cand: str, cache: Path | None, **top) -> dict:
        policy = write_policy(tmp_path / f"{name}.yaml", rules, candidates={cand: f"{cand}.onnx"}, batch_size=100,
                              inconclusive="warn", **top)
        args = ["check", "--policy", policy, "--out", tmp_path / name, "--no-progress"]
        result = run_main(*args, *(["--cache", cache] if cache else []))
        assert result.code in (0, 1) and "Traceback" not in result.stderr, result
        return read_report(tmp_path / name)

    filled_by_fixed = tmp_path / "from-fixed"
    assert run("fixed-cold", "close", filled_by_fixed)["provenance"]["cache"]["status"] == "stored"
    plain = run("looks-plain", "close", None, sequential=True)
    warm = run("looks-warm", "close", filled_by_fixed, sequential=True)
    assert warm["provenance"]["cache"]["status"] == "hit"
    assert _same_numbers(plain, warm) is None, _same_numbers(plain, warm)

    filled_by_looks = tmp_path / "from-looks"
    cold = run("looks-cold", "close", filled_by_looks, sequential=True)
    assert cold["provenance"]["sequential"]["look"] == 5 and cold["provenance"]["cache"]["status"] == "stored"
    fixed_plain, fixed_warm = run("fixed-plain", "close", None), run("fixed-warm", "close", filled_by_looks)
    assert fixed_warm["provenance"]["cache"]["status"] == "hit"
    assert _same_numbers(fixed_plain, fixed_warm) is None, _same_numbers(fixed_plain, fixed_warm)

    early = run("looks-early", "same", tmp_path / "early", sequential=True)
    assert early["provenance"]["sequential"]["stopped_early"]
    assert early["provenance"]["cache"]["status"] == "off" and "stopped after" in early["provenance"]["cache"]["note"]
    assert not list((tmp_path / "early").glob("base-*.json"))
