"""How often the speedup rule is wrong on this machine: false fails on identical models, detection of a
candidate made 15% slower.

The rule is `speedup: {min: 0.9}` with `inconclusive: fail` (a release policy), judged exactly as `gate
check` judges it: base and candidate timed in one process, interleaved, with the default latency settings
(batch 1, 1 thread, 20 warm-up calls, at least 100 rounds and 1 s, borderline results measured again up to
10 s). Each trial is a fresh measurement (new sessions, new warm-up).

- identical: the candidate is a byte-for-byte copy of the base (true speedup 1.0, 10% inside the bound).
  A trial that does not pass is a false alarm: "fail" is a false fail, "inconclusive" a false block.
- 15% slower: the base plus one extra MatMul by the identity (same predictions). The base's depth is
  calibrated first: for each of a few depths, a long interleaved run (5 s) measures the slowdown one extra
  layer causes on this machine, and the depth whose slowdown is nearest 15% is used (true speedup about
  1/1.15 = 0.87, 3% beyond the bound). A trial that fails detects it.

    python -m pytest benchmarks/test_speed_rule.py --benchmark-only -s
    GATE_BENCH_TRIALS=50 python -m pytest benchmarks/test_speed_rule.py --benchmark-only -s

No time limit is asserted; the figures go to benchmark.extra_info (--benchmark-json) and stdout (-s).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

TRIALS = int(os.environ.get("GATE_BENCH_TRIALS", "20"))
D, K = 256, 10
DEPTHS = (3, 4, 5, 6)
TARGET_SLOWDOWN = 1.15
BOUND = 0.9


def build(path, depth: int, extra: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(depth):
        inits.append(numpy_helper.from_array((rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32), f"W{i}"))
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"h{i}"])]
        x = f"h{i}"
    if extra:
        inits.append(numpy_helper.from_array(np.eye(D, dtype=np.float32), "I"))
        for j in range(extra):
            nodes.append(helper.make_node("MatMul", [x, "I"], [f"e{j}"]))
            x = f"e{j}"
    inits.append(numpy_helper.from_array((rng.standard_normal((D, K)) / 16).astype(np.float32), "Wo"))
    nodes.append(helper.make_node("MatMul", [x, "Wo"], ["logits"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", D])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", K])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def runners_for(paths, data_path):
    from gate.data import load_dataset
    from gate.models import open_runner
    from gate.policy import DataSpec, ModelRef

    data = load_dataset(DataSpec(path=data_path), max_mb=100)
    out = []
    for name, path in paths:
        runner = open_runner(ModelRef(name=name, path=path), output=None, inputs={}, max_mb=100)
        runner.bind(data)
        out.append((name, path, runner))
    return out


def speedup_once(models, settings, *, decide: bool):
    from gate.judge import INCONCLUSIVE, evaluate
    from gate.measure.speed import measure_on_this_machine
    from gate.policy import Rule

    rule = Rule(index=1, line=None, metric="speedup", bound_kind="min", bound=BOUND)
    cand = models[1][0]

    def settled(metrics):
        return evaluate(rule, metrics[cand]["speedup"], confidence=0.95, inconclusive="fail").status != INCONCLUSIVE

    run = measure_on_this_machine(models, settings, confidence=0.95, settled=settled if decide else None)
    m = run.metrics[cand]["speedup"]
    status = evaluate(rule, m, confidence=0.95, inconclusive="fail").status
    return status, m, run.details[cand]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from gate.measure.speed import SpeedSettings

    d = tmp_path_factory.mktemp("speed-rule")
    np.savez(d / "data.npz", input=np.random.default_rng(1).standard_normal((64, D)).astype(np.float32))
    calibration = {}
    long_run = SpeedSettings(min_runs=100, min_time_s=5.0, max_time_s=5.0)
    for depth in DEPTHS:
        build(d / f"base{depth}.onnx", depth)
        build(d / f"slower{depth}.onnx", depth, extra=1)
        models = runners_for([("base", d / f"base{depth}.onnx"), ("slower", d / f"slower{depth}.onnx")], d / "data.npz")
        _, m, _ = speedup_once(models, long_run, decide=False)
        calibration[depth] = 1.0 / m.candidate
    depth = min(DEPTHS, key=lambda k: abs(calibration[k] - TARGET_SLOWDOWN))
    build(d / "copy.onnx", depth)
    return d, depth, calibration


def test_speedup_rule_false_fail_and_detection_rates(assets, benchmark):
    from gate.measure.speed import SpeedSettings

    d, depth, calibration = assets
    settings = SpeedSettings()  # the defaults a policy gets without a latency block
    identical = runners_for([("base", d / f"base{depth}.onnx"), ("copy", d / "copy.onnx")], d / "data.npz")
    slower = runners_for([("base", d / f"base{depth}.onnx"), ("slower", d / f"slower{depth}.onnx")], d / "data.npz")
    trials = {"identical": [], "slower": []}

    def run_all():
        for _ in range(TRIALS):  # alternate, so a change in machine load hits both kinds alike
            for kind, models in (("identical", identical), ("slower", slower)):
                t0 = time.perf_counter()
                status, m, details = speedup_once(models, settings, decide=True)
                iv = m.candidate_interval
                trials[kind].append({"status": status, "speedup": m.candidate, "low": iv.low, "high": iv.high,
                                     "rounds": details["rounds"], "looks": len(details["looks"]),
                                     "seconds": time.perf_counter() - t0})

    benchmark.pedantic(run_all, rounds=1, iterations=1, warmup_rounds=0)

    def rate(kind, status):
        return sum(t["status"] == status for t in trials[kind]) / len(trials[kind])

    info = {
        "trials_each": TRIALS, "bound": BOUND, "calibration_slowdown_by_depth": calibration, "depth": depth,
        "calibrated_slowdown": calibration[depth],
        "identical_false_fail_rate": rate("identical", "fail"),
        "identical_inconclusive_rate": rate("identical", "inconclusive"),
        "identical_pass_rate": rate("identical", "pass"),
        "slower_detection_rate": rate("slower", "fail"),
        "slower_inconclusive_rate": rate("slower", "inconclusive"),
        "slower_pass_rate": rate("slower", "pass"),
        "identical_speedup_median": float(np.median([t["speedup"] for t in trials["identical"]])),
        "slower_speedup_median": float(np.median([t["speedup"] for t in trials["slower"]])),
        "slower_looks_median": float(np.median([t["looks"] for t in trials["slower"]])),
        "trial_seconds_median": float(np.median([t["seconds"] for t in trials["identical"] + trials["slower"]])),
        "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "trials": trials,
    }
    benchmark.extra_info.update(info)
    lines = [
        f"speedup min {BOUND}, inconclusive: fail, default latency settings, {TRIALS} trials of each kind, "
        f"{os.cpu_count()} CPUs, load {tuple(round(x, 2) for x in os.getloadavg())}",
        f"calibration (slowdown of one extra layer by base depth): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in calibration.items()) + f" -> depth {depth}",
        f"identical: pass {info['identical_pass_rate']:.0%}, false fail {info['identical_false_fail_rate']:.0%}, "
        f"inconclusive {info['identical_inconclusive_rate']:.0%} (median speedup "
        f"{info['identical_speedup_median']:.3f})",
        f"{calibration[depth] - 1:.0%} slower: detected (fail) {info['slower_detection_rate']:.0%}, "
        f"inconclusive {info['slower_inconclusive_rate']:.0%}, pass {info['slower_pass_rate']:.0%} (median speedup "
        f"{info['slower_speedup_median']:.3f}, median looks {info['slower_looks_median']:g})",
        f"median trial {info['trial_seconds_median']:.1f} s",
    ]
    print("\n".join(lines))
    assert len(trials["identical"]) == len(trials["slower"]) == TRIALS
