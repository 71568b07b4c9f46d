"""Peak memory of `gate check` on 100,000 and 1,000,000 samples, against the bare pass (issue 12, flat memory).

The issue: "peak memory of gate check on 1M samples at most 1.3x that on 100k, and at most the bare pass's
peak plus 200 MB". The same data judged by the six-metric policy of test_six_metrics_speed.py (intervals for
roc_auc, the means, the cell metrics) is measured beside it. Both data sets have the MLP 784-512-512-10 and its int8 twin of test_quality_speed.py; the
1M set is 3.1 GB on disk (uncompressed npz, memory-mapped by the gate). Each process is run under GNU time,
whose %M is the peak resident set of the process it runs (a fork of a small process, so no parent's pages
are counted). Before the measured runs one unmeasured `gate check` (the six-metric policy on the 100k set)
writes the byte code into the runs' private cache, as an installed gate has it, and reads the 100k data once:
otherwise the first measured run, the 100k one, also compiles every module it imports (29 Nov, same code: 157
MB at 100k in a run without the warm-up, 142-143 MB in three runs with it; the cold figure flattered the
ratio). No limit is asserted: the figures go to the summary.

    GATE_BENCH_BIG=1000000 python -m pytest benchmarks/test_memory_scale.py --benchmark-only -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SUMMARY, build_assets
from test_quality_speed import BARE, GATE_BATCH, _env, _gate_executable
from test_six_metrics_speed import RULES as SIX_RULES

BIG = int(os.environ.get("GATE_BENCH_BIG", "1000000"))
TIME = shutil.which("time") or "/usr/bin/time"


def _peak_mb(cmd: list[str], env: dict, cwd: Path) -> float:
    proc = subprocess.run([TIME, "-f", "%M", *cmd], env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


@pytest.fixture(scope="module")
def big_assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("gate-bench-big"), BIG)


def test_peak_memory_of_gate_check_at_100k_and_1m_samples(benchmark, mlp_assets, big_assets, tmp_path):
    if not os.path.exists(TIME):
        pytest.fail("GNU time is missing (apt-get install time)")
    env = _env(tmp_path)
    peaks = {}
    six = {}
    for label, a in (("100k", mlp_assets), ("1M", big_assets)):  # the six-metric policy beside each data set
        text = a.policy.read_text(encoding="utf-8")
        six[label] = a.root / "policy-six.yaml"
        six[label].write_text(text[:text.index("rules:")] + SIX_RULES, encoding="utf-8")

    # warm-up: byte code compiled and cached before anything is measured (see the module's docstring)
    _peak_mb([*_gate_executable(), "check", "--policy", str(six["100k"]), "--out", str(tmp_path / "warm-up"),
              "--no-progress"], env, mlp_assets.root)

    def measure():
        for label, a in (("100k", mlp_assets), ("1M", big_assets)):
            bare = [sys.executable, str(BARE), str(a.data), str(a.base), str(a.int8), "--mode", "batched",
                    "--batch-size", str(GATE_BATCH), "--input", "input", "--key", "pixels"]
            for kind, policy in (("gate", a.policy), ("gate six", six[label])):
                gate = [*_gate_executable(), "check", "--policy", str(policy), "--out", str(tmp_path / label),
                        "--no-progress"]
                peaks[f"{kind} {label}"] = _peak_mb(gate, env, a.root)
            peaks[f"bare {label}"] = _peak_mb(bare, env, a.root)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    ratio = peaks["gate 1M"] / peaks["gate 100k"]
    over_bare = peaks["gate 1M"] - peaks["bare 1M"]
    benchmark.extra_info.update({**peaks, "ratio_1m_100k": ratio, "gate_minus_bare_1m_mb": over_bare})
    line = (f"peak memory (MB): gate {peaks['gate 100k']:.0f} at 100k, {peaks['gate 1M']:.0f} at {BIG:,} "
            f"({ratio:.2f}x; target <= 1.3x); bare pass {peaks['bare 100k']:.0f} and {peaks['bare 1M']:.0f} "
            f"(gate - bare at {BIG:,}: {over_bare:+.0f} MB; target <= +200 MB); six metrics judged: "
            f"{peaks['gate six 100k']:.0f} and {peaks['gate six 1M']:.0f}")
    SUMMARY.append(line)
    print("\n" + line)
