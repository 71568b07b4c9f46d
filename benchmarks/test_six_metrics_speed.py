"""`gate check` judging six metrics with intervals, against the bare pass of both models.

The issue: "`gate check` judging accuracy, f1_macro, balanced_accuracy, roc_auc, log_loss and kl_divergence on
100k samples (MLP 784-512-512-10 and its int8 twin) at most 1.5x the bare pass". Same assets and method as
test_cache_speed.py (whole processes interleaved with the bare onnxruntime script, medians, no wall-clock
assertion); the policy is the assets' with those six rules instead of the quality-only three.

    python -m pytest benchmarks/test_six_metrics_speed.py --benchmark-only
"""

from __future__ import annotations

import json

from test_quality_speed import _env, _gate_executable, _load, _run, bare_batched, paired_rounds, ratio_summary

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
    print("\n" + ratio_summary(benchmark, "six metrics judged", a, times, TARGET, load_before))
