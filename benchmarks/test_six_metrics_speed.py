"""`gate check` judging six metrics with intervals, against the bare pass of both models.

The issue: "`gate check` judging accuracy, f1_macro, balanced_accuracy, roc_auc, log_loss and kl_divergence on
100k samples (MLP 784-512-512-10 and its int8 twin) at most 1.5x the bare pass". Same assets and method as
test_cache_speed.py (whole processes interleaved with the bare onnxruntime script, medians, no wall-clock
assertion); the policy is the assets' with those six rules instead of the quality-only three.

    python -m pytest benchmarks/test_six_metrics_speed.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import statistics

from conftest import SUMMARY
from test_quality_speed import _env, _gate_executable, _load, _run, bare_batched, paired_rounds

TARGET = 1.5
RULES = """rules:
  - {metric: accuracy, max_drop: 0.01}
  - {metric: f1_macro, max_drop: 0.02}
  - {metric: balanced_accuracy, max_drop: 0.02}
  - {metric: roc_auc, max_drop: 0.01}
  - {metric: log_loss, max_increase: 0.1}
  - {metric: kl_divergence, max: 0.1}
"""


def test_six_metrics_gate_check_vs_bare_onnxruntime(benchmark, mlp_assets, tmp_path):
    a = mlp_assets
    text = a.policy.read_text(encoding="utf-8")
    policy = a.root / "policy-six.yaml"
    policy.write_text(text[:text.index("rules:")] + RULES, encoding="utf-8")
    env, cwd = _env(tmp_path), a.root
    out = tmp_path / "report"
    bare = bare_batched(a)
    gate = [*_gate_executable(), "check", "--policy", str(policy), "--out", str(out), "--no-progress"]
    for cmd in (bare, gate):  # untimed warm-up: page cache, byte-code cache
        _, _, proc = _run(cmd, env, cwd)
        assert proc.returncode in (0, 1), proc.stderr
    load_before = _load()
    times, _ = paired_rounds(benchmark, bare, gate, env, cwd, out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    judged = {r["metric"] for c in report["candidates"] for r in c["rules"]}
    assert judged == {"accuracy", "f1_macro", "balanced_accuracy", "roc_auc", "log_loss", "kl_divergence"}, judged
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gate"] / med["bare"]
    pairs = [g / b for g, b in zip(times["gate"], times["bare"])]
    benchmark.extra_info.update({"n_samples": a.n_samples, "bare_s": times["bare"], "gate_s": times["gate"],
                                 "ratio_median": ratio, "ratio_per_pair": pairs, "target": TARGET,
                                 "loadavg_before": load_before, "loadavg_after": _load(), "cpus": os.cpu_count()})
    lines = [f"six metrics judged, {a.n_samples:,} samples, {len(times['gate'])} rounds, load {load_before} -> "
             f"{_load()}: bare pass of both models median {med['bare']:.2f} s, gate check {med['gate']:.2f} s; "
             f"gate / bare = {ratio:.2f}x (per pair {', '.join(f'{p:.2f}' for p in pairs)}; target <= {TARGET}x: "
             f"{'met' if ratio <= TARGET else 'NOT met'})"]
    SUMMARY.extend(lines)
    print("\n" + "\n".join(lines))
