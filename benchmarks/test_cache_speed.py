"""`gate check --cache DIR` with a warm cache, against the bare pass of both models.

The issue: "warm-cache `gate check` at most 0.6x the bare pass of both models". Same assets and method as
test_quality_speed.py (100,000 samples, MLP 784-512-512-10 and its int8 twin, whole processes interleaved
with the bare onnxruntime script, medians, no wall-clock assertion): a cold run fills the cache untimed,
then each round times the bare script (batched) and a warm `gate check`.

    python -m pytest benchmarks/test_cache_speed.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import statistics

from conftest import SUMMARY
from test_quality_speed import _env, _gate_executable, _load, _run, bare_batched, paired_rounds

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
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gate"] / med["bare"]
    benchmark.extra_info.update({"n_samples": a.n_samples, "bare_s": times["bare"], "gate_warm_s": times["gate"],
                                 "gate_cold_s": cold_s, "ratio_median": ratio, "target": TARGET,
                                 "loadavg_before": load_before, "loadavg_after": _load(), "cpus": os.cpu_count()})
    lines = [f"warm cache, {a.n_samples:,} samples, {len(times['gate'])} rounds, load {load_before} -> {_load()}: "
             f"bare pass of both models median {med['bare']:.2f} s, gate check (warm) {med['gate']:.2f} s, "
             f"cold {cold_s:.2f} s; warm / bare = {ratio:.2f}x (target <= {TARGET}x: "
             f"{'met' if ratio <= TARGET else 'NOT met'})"]
    SUMMARY.extend(lines)
    print("\n" + "\n".join(lines))
