"""Two copies of one model pass `speedup min 0.9` in five fresh measurements in a row.

Moved here from tests/test_speed.py (test_two_copies_of_one_model_pass_in_repeated_runs): an identical copy
sits only 10% inside the bound, so whether five runs in a row all pass depends on how busy the machine is
(on a loaded 2-core runner it failed now and then). tests/test_speed.py keeps the verdicts with a 2x margin
(`speedup min 0.5`, copy against an 11x-MACs twin); benchmarks/test_speed_rule.py gives the false-fail rate
over many trials. The assertion is the original one, so this fails when a copy is ever judged slower:

    python -m pytest benchmarks/test_identical_copies.py --benchmark-only

The model is the tests' MLP (4 x MatMul 256x256 + Relu, then 256 -> 10), 1,000 samples, batch 1, 1 thread.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from test_speed_rule import build, runners_for

RUNS = int(os.environ.get("GATE_BENCH_COPY_RUNS", "5"))
BOUND = 0.9


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    d = tmp_path_factory.mktemp("identical-copies")
    build(d / "base.onnx", 4)
    build(d / "same.onnx", 4)
    np.savez(d / "data.npz", input=np.random.default_rng(1).standard_normal((1000, 256)).astype(np.float32))
    return runners_for([("base", d / "base.onnx"), ("same", d / "same.onnx")], d / "data.npz")


def test_two_copies_of_one_model_pass_in_repeated_runs(copies, benchmark):
    from gate.judge import evaluate
    from gate.measure import speed
    from gate.measure.speed import SpeedSettings
    from gate.policy import Rule

    settings = SpeedSettings(min_runs=100, min_time_s=0.1, max_time_s=5.0, warmup=10)
    r = Rule(index=1, line=None, metric="speedup", bound_kind="min", bound=BOUND)
    runs = []

    def status(m):
        return evaluate(r, m, confidence=0.95, inconclusive="fail").status

    def run_all():
        for _ in range(RUNS):
            run = speed.measure_on_this_machine(copies, settings, confidence=0.95,
                                                settled=lambda m: status(m["same"]["speedup"]) != "inconclusive")
            m = run.metrics["same"]["speedup"]
            runs.append({"status": status(m), "speedup": m.candidate, "low": m.candidate_interval.low,
                         "high": m.candidate_interval.high})

    benchmark.pedantic(run_all, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({"bound": BOUND, "runs": runs, "cpus": os.cpu_count(), "loadavg": os.getloadavg()})
    print(f"speedup min {BOUND}, {RUNS} runs, load {tuple(round(x, 2) for x in os.getloadavg())}: "
          + ", ".join(f"{x['status']} {x['speedup']:.3f} [{x['low']:.3f}, {x['high']:.3f}]" for x in runs))
    assert [x["status"] for x in runs] == ["pass"] * RUNS, runs
