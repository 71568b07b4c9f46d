"""`gate check` with quality rules only, against the floor: one bare onnxruntime pass per model.

The issue: "The floor is one pass of every sample through every model." On
100,000 samples of an MLP 784-512-512-10 and its int8 twin, the whole `gate
check` process (imports, hashing, reports included) should take at most 1.2x
the whole process of benchmarks/bare_onnxruntime.py, which loads the same data
and runs both models once with onnxruntime.

Both are timed as separate processes, interleaved in one run (bare, gate, bare,
gate, ...) so machine noise hits both. The bare script runs two ways each round
(batches of the gate's batch size, and the whole array in one call); the faster
median is the floor. No wall-clock limit is asserted: the figures go to
benchmark.extra_info, stdout and the terminal summary.

    python -m pytest benchmarks --benchmark-only            # 3 rounds
    GATE_BENCH_ROUNDS=5 python -m pytest benchmarks --benchmark-only
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from conftest import SUMMARY

from gate.policy import DEFAULT_QUALITY_BATCH

BARE = Path(__file__).with_name("bare_onnxruntime.py")
ROUNDS = int(os.environ.get("GATE_BENCH_ROUNDS", "3"))
TARGET = 1.2
GATE_BATCH = DEFAULT_QUALITY_BATCH  # the policy sets no batch_size or latency.batch_size


def _env(tmp: Path) -> dict:
    """The subprocesses' environment.

    By default byte-code caching is on, into a private prefix (nothing is written
    into the repository): an installed gate runs from .pyc files, and a
    PYTHONDONTWRITEBYTECODE=1 shell would otherwise charge the gate for compiling
    its own sources on every run. GATE_BENCH_PYC=0 keeps the inherited setting.
    """
    env = dict(os.environ)
    if os.environ.get("GATE_BENCH_PYC", "1") != "0":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def _gate_executable() -> list[str]:
    script = Path(sys.executable).with_name("gate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gate"]


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the process and all its threads, the process)."""
    cpu, start = _cpu_children(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, _cpu_children() - cpu, proc


def bare_batched(a) -> list[str]:
    """The floor: the bare onnxruntime script over both models in batches of the gate's size."""
    return [sys.executable, str(BARE), str(a.data), str(a.base), str(a.int8), "--mode", "batched",
            "--batch-size", str(GATE_BATCH), "--input", "input", "--key", "pixels"]


def paired_rounds(benchmark, bare: list[str], gate: list[str], env: dict, cwd, out) -> tuple[dict, list]:
    """Each round: the bare script (timed in setup), then `gate` (the benchmark's measurement), as whole
    processes. -> ({"bare": [s], "gate": [s]}, the gate's completed processes)."""
    times: dict[str, list[float]] = {"bare": [], "gate": []}
    procs: list[subprocess.CompletedProcess] = []

    def setup():
        seconds, _, proc = _run(bare, env, cwd)
        assert proc.returncode == 0, proc.stderr
        times["bare"].append(seconds)
        shutil.rmtree(out, ignore_errors=True)

    def run_gate():
        seconds, _, proc = _run(gate, env, cwd)
        times["gate"].append(seconds)
        procs.append(proc)

    benchmark.pedantic(run_gate, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    for proc in procs:
        assert proc.returncode in (0, 1), f"gate check exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return times, procs


def ratio_summary(benchmark, what: str, a, times: dict, target: float, load_before: str, **extra) -> str:
    """The gate / bare ratio of medians of paired_rounds' times, into extra_info and the run's summary."""
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gate"] / med["bare"]
    pairs = [g / b for g, b in zip(times["gate"], times["bare"])]
    benchmark.extra_info.update({"n_samples": a.n_samples, "bare_s": times["bare"], "gate_s": times["gate"],
                                 "ratio_median": ratio, "ratio_per_pair": pairs, "target": target,
                                 "loadavg_before": load_before, "loadavg_after": _load(), "cpus": os.cpu_count(),
                                 **extra})
    line = (f"{what}, {a.n_samples:,} samples, {len(times['gate'])} rounds, load {load_before} -> {_load()}: "
            f"bare pass of both models median {med['bare']:.2f} s, gate check {med['gate']:.2f} s; gate / bare = "
            f"{ratio:.2f}x (per pair {', '.join(f'{p:.2f}' for p in pairs)}; target <= {target}x: "
            f"{'met' if ratio <= target else 'NOT met'})")
    SUMMARY.append(line)
    return line


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def test_gate_check_quality_only_vs_bare_onnxruntime(benchmark, mlp_assets, tmp_path):
    a = mlp_assets
    env, cwd = _env(tmp_path), a.root
    out = tmp_path / "report"
    bare = {mode: [sys.executable, str(BARE), str(a.data), str(a.base), str(a.int8), "--mode", mode,
                   "--batch-size", str(GATE_BATCH), "--input", "input", "--key", "pixels"]
            for mode in ("batched", "whole")}
    gate = [*_gate_executable(), "check", "--policy", str(a.policy), "--out", str(out), "--no-progress"]

    # untimed warm-up: page cache for the data, byte-code cache for every import
    for cmd in (*bare.values(), gate):
        _, _, proc = _run(cmd, env, cwd)
        assert proc.returncode in (0, 1), f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}"

    times: dict[str, list[float]] = {"batched": [], "whole": [], "gate": []}
    cpu: dict[str, list[float]] = {"batched": [], "whole": [], "gate": []}  # user + system, all threads
    procs: list[subprocess.CompletedProcess] = []
    load_before = _load()

    def setup():
        # alternate the order of the two bare variants so neither always runs right after the gate
        order = ("batched", "whole") if len(times["gate"]) % 2 == 0 else ("whole", "batched")
        for mode in order:
            seconds, cpu_seconds, proc = _run(bare[mode], env, cwd)
            assert proc.returncode == 0, proc.stderr
            times[mode].append(seconds)
            cpu[mode].append(cpu_seconds)
        shutil.rmtree(out, ignore_errors=True)

    def run_gate():
        seconds, cpu_seconds, proc = _run(gate, env, cwd)
        times["gate"].append(seconds)
        cpu["gate"].append(cpu_seconds)
        procs.append(proc)

    benchmark.pedantic(run_gate, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)

    for proc in procs:
        assert proc.returncode in (0, 1), f"gate check exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["verdict"] in ("pass", "fail")

    med = {k: statistics.median(v) for k, v in times.items()}
    floor_mode = min(("batched", "whole"), key=med.get)
    floor = times[floor_mode]
    ratio = med["gate"] / med[floor_mode]
    pairs = [g / b for g, b in zip(times["gate"], floor)]
    ratio_min = min(times["gate"]) / min(floor)  # least-disturbed run of each: robust when noise only adds
    info = {
        "n_samples": a.n_samples, "gate_batch_size": GATE_BATCH, "rounds": len(times["gate"]),
        "bare_batched_s": times["batched"], "bare_whole_s": times["whole"], "gate_s": times["gate"],
        "bare_batched_median_s": med["batched"], "bare_whole_median_s": med["whole"],
        "gate_median_s": med["gate"], "floor": floor_mode, "ratio_median": ratio, "ratio_min": ratio_min,
        "ratio_per_pair": pairs, "target": TARGET, "within_target": ratio <= TARGET,
        "cpu_s": cpu, "cpu_ratio_median": statistics.median(cpu["gate"]) / statistics.median(cpu[floor_mode]),
        "gate_verdict": report["verdict"], "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": _load(),
        "pyc_cache": env.get("PYTHONDONTWRITEBYTECODE") is None,
    }
    benchmark.extra_info.update(info)

    def fmt(xs):
        return ", ".join(f"{x:.2f}" for x in xs)

    lines = [
        f"{a.n_samples:,} samples, MLP 784-512-512-10 + int8 twin, {len(times['gate'])} interleaved rounds, "
        f"{os.cpu_count()} CPUs, load {load_before} -> {info['loadavg_after']}",
        f"bare onnxruntime, batches of {GATE_BATCH}: median {med['batched']:.2f} s  [{fmt(times['batched'])}]",
        f"bare onnxruntime, whole array:     median {med['whole']:.2f} s  [{fmt(times['whole'])}]",
        f"gate check (quality rules only):   median {med['gate']:.2f} s  [{fmt(times['gate'])}]  "
        f"verdict {report['verdict']}",
        f"floor = bare {floor_mode}; gate / floor = {ratio:.2f}x (medians), {ratio_min:.2f}x (minima), "
        f"per pair [{fmt(pairs)}]; target <= {TARGET}x (medians): {'met' if ratio <= TARGET else 'NOT met'}",
        f"CPU seconds (user + system, all threads), medians: bare batched {statistics.median(cpu['batched']):.2f}, "
        f"bare whole {statistics.median(cpu['whole']):.2f}, gate {statistics.median(cpu['gate']):.2f}; "
        f"gate / floor = {info['cpu_ratio_median']:.2f}x",
    ]
    SUMMARY.extend(lines)
    print("\n" + "\n".join(lines))
