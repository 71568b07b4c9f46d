"""`gate check --cache DIR` with a warm cache, against the bare pass of both models.

The issue: "warm-cache `gate check` at most 0.6x the bare pass of both models". Same assets and method as
test_quality_speed.py (100,000 samples, MLP 784-512-512-10 and its int8 twin, whole processes interleaved
with the bare onnxruntime script, medians, no wall-clock assertion): a cold run fills the cache untimed,
then each round times the bare script (batched) and a warm `gate check`.

    python -m pytest benchmarks/test_cache_speed.py --benchmark-only
"""

from __future__ import annotations

import json

from test_quality_speed import _env, _gate_executable, _load, _run, bare_batched, paired_rounds, ratio_summary

TARGET = 0.6


def test_warm_cache_gate_check_vs_bare_onnxruntime(benchmark, mlp_assets, tmp_path):
    a = mlp_assets
    env, cwd = _env(tmp_path), a.root
    out, cache = tmp_path / "report", tmp_path / "cache"
    bare = bare_batched(a)
    gate = [*_gate_executable(), "check", "--policy", str(a.policy), "--out", str(out), "--no-progress",
            "--cache", str(cache)]
    cold_s, _, proc = _run(gate, env, cwd)  # untimed in the ratio: fills the cache (and the page cache)
    assert proc.returncode in (0, 1), proc.stderr
    _run(bare, env, cwd)
    load_before = _load()
    times, _ = paired_rounds(benchmark, bare, gate, env, cwd, out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["provenance"]["cache"]["status"] == "hit"
    print("\n" + ratio_summary(benchmark, "warm cache", a, times, TARGET, load_before, gate_cold_s=cold_s))
