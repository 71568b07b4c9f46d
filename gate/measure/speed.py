"""Latency, throughput, speedup, memory and energy of base and candidates on this machine.

`measure_on_this_machine` runs one speed measurement; the parts live next to it:
- gate/measure/settings.py     SpeedSettings: the policy's latency block (or a target's) over the defaults
- gate/measure/machine.py      usable CPUs (affinity, cgroup quota), the one onnxruntime session builder
- gate/models/                 the backends (ONNX, torch): each model's timer, its input batch (the runner's
                               public feed), its memory worker and whether it has an op profiler
- gate/measure/timing.py       the interleaved timed loop, its looks and alpha-spending
- gate/measure/latency.py      statistics of the rounds: percentiles, mean, throughput, paired speedup
- gate/measure/percentiles.py  order-statistic intervals and MLPerf's minimum runs
- gate/measure/profile.py      onnxruntime's per-op profile (backends with has_op_profile)
- gate/measure/energy.py       RAPL energy counters
- gate/measure/memory.py       peak memory, each model in its own subprocess

The thresholds never reach this code: a caller that wants a borderline result measured again hands in
`settled`, a stopping rule (the CLI builds it from the judge); without it the run looks once.
This module re-exports the names other modules and tests use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gate.intervals import Interval
from gate.measure.energy import (POWERCAP, RaplCounter, energy_blocks, energy_delta_uj, energy_metric,
                                 rapl_counters, read_energy_uj)
from gate.measure.latency import (MAX_BLOCKS, MIN_ROUNDS_FOR_INTERVAL, NOISY_SPREAD, SPEED_METRICS, speed_metrics,
                                  summary, t_interval, t_quantile, variance_notes)
from gate.measure.machine import feeds_for, open_session, threads_to_use, usable_cpus
from gate.measure.percentiles import PERCENTILE_CONFIDENCE, binom_cdf, min_runs_for, quantile_interval
from gate.measure.profile import compare_profiles, op_profile
from gate.measure.settings import SpeedSettings, settings_for
from gate.measure.timing import Timing, look_confidence, time_interleaved
from gate.measurements import MetricResult

__all__ = [
    "SpeedSettings", "settings_for", "usable_cpus", "threads_to_use", "open_session", "feeds_for",
    "Timing", "look_confidence", "time_interleaved", "min_runs_for", "quantile_interval", "binom_cdf",
    "PERCENTILE_CONFIDENCE", "t_quantile", "t_interval", "speed_metrics", "summary", "variance_notes",
    "MIN_ROUNDS_FOR_INTERVAL", "MAX_BLOCKS", "SPEED_METRICS", "NOISY_SPREAD", "op_profile", "compare_profiles",
    "POWERCAP", "RaplCounter", "rapl_counters", "read_energy_uj", "energy_delta_uj", "energy_blocks",
    "energy_metric", "SpeedRun", "measure_on_this_machine",
]


@dataclass(frozen=True, kw_only=True)
class SpeedRun:
    """Everything one speed measurement produced, for every candidate."""
    settings: dict
    metrics: dict[str, dict[str, MetricResult]] = field(default_factory=dict)  # candidate -> metric -> result
    details: dict[str, dict] = field(default_factory=dict)  # candidate -> report details
    base_metrics: dict[str, float] = field(default_factory=dict)


def measure_on_this_machine(models: list[tuple[str, Path, object]], settings: SpeedSettings, *, confidence: float,
                            timed: bool = True, memory: bool = False, energy: bool = False,
                            settled: Callable[[dict[str, dict[str, MetricResult]]], bool] | None = None,
                            host: dict | None = None) -> SpeedRun:
    """Speed (and memory, energy) of the base (models[0]) and every candidate on this machine.

    models: (name, path, bound runner) with the runner's data binding giving the input batch.
    settled(candidate -> metrics): True when every rule on these metrics is decided; without it the run
    looks once (min_runs and min_time_s), with it a borderline result is measured again up to max_time_s.
    """
    import contextlib

    from gate.measure.memory import peak_memory
    from gate.models import backend_of

    threads, clamp_note = threads_to_use(settings.threads)
    usable, usable_why = usable_cpus()
    names = [m[0] for m in models]
    backends = [backend_of(runner) for _, _, runner in models]
    fed = [runner.feed(settings.batch_size) for _, _, runner in models]
    batches = [b for _, b in fed]
    run_settings = dict(settings.to_dict(), threads_used=threads, usable_cpus=usable, usable_cpus_why=usable_why)
    notes = [clamp_note] if clamp_note else []
    if len(set(batches)) > 1:
        notes.append(f"the models run different batch sizes ({', '.join(f'{n}: {b}' for n, b in zip(names, batches))},"
                     " fixed in their files): speedup compares time per sample, latencies are per call")
    out_metrics: dict[str, dict[str, MetricResult]] = {n: {} for n in names[1:]}
    details: dict[str, dict] = {n: {"target": settings.target, "host": host or {}, "settings": run_settings,
                                    "notes": list(notes)} for n in names[1:]}
    base_metrics: dict[str, float] = {}

    with contextlib.ExitStack() as pinned:
        for backend in {b.name: b for b in backends}.values():  # torch's thread count is per process
            pinned.enter_context(backend.pinned(threads))
        _time_and_profile(models, backends, fed, batches, names, settings, threads, confidence=confidence,
                          timed=timed, energy=energy, settled=settled, out_metrics=out_metrics, details=details,
                          base_metrics=base_metrics)
    if memory:
        peaks = peak_memory({str(i): (backend.memory_spec(runner), f)
                             for i, ((_, _, runner), backend, (f, _)) in enumerate(zip(models, backends, fed))},
                            threads=threads, provider=settings.provider)
        base_peak = peaks["0"]
        if "peak_mb" in base_peak:
            base_metrics["peak_memory_mb"] = base_peak["peak_mb"]
        for j, name in enumerate(names[1:], start=1):
            got = peaks[str(j)]
            details[name]["memory"] = {"base": base_peak, "candidate": got}
            if "error" in got or "error" in base_peak:
                out_metrics[name]["peak_memory_mb"] = MetricResult(
                    metric="peak_memory_mb", n=1, unavailable=got.get("error") or base_peak.get("error"))
                continue
            b, c = base_peak["peak_mb"], got["peak_mb"]
            out_metrics[name]["peak_memory_mb"] = MetricResult(
                metric="peak_memory_mb", n=1, base=b, candidate=c, delta=c - b,
                delta_interval=Interval(low=c - b, high=c - b, method="exact"),
                candidate_interval=Interval(low=c, high=c, method="exact"),
                evidence={"method": got["method"], "baseline_mb": got.get("baseline_mb"), "runs": got["runs"]})
    return SpeedRun(settings=run_settings, metrics=out_metrics, details=details, base_metrics=base_metrics)


def _time_and_profile(models, backends, fed, batches, names, settings: SpeedSettings, threads: int, *,
                      confidence: float, timed: bool, energy: bool, settled, out_metrics: dict, details: dict,
                      base_metrics: dict) -> None:
    """The timed loop (and energy) on every backend's timer, then the per-op profile where there is one.
    Every timer (a session, a module and its prepared tensors) is released on return, before memory runs."""
    timers = [backend.timer(runner, f, threads, settings) for (_, _, runner), backend, (f, _) in
              zip(models, backends, fed)]
    calls = [call for call, _ in timers]
    providers = [provider for _, provider in timers]
    if timed:
        import scipy.special  # noqa: F401 - the statistics' distributions, loaded before the clock starts: the
        # first look must not spend max_time_s on an import

        def decide(ms: np.ndarray, level: float, look: int) -> bool:
            so_far = {n: speed_metrics(ms, batches, j, confidence=level, look=look)
                      for j, n in enumerate(names[1:], start=1)}
            return settled(so_far)

        timing = time_interleaved(calls, names, batches, settings, confidence=confidence,
                                  decide=decide if settled is not None else None)
        level, look = timing.looks[-1]["interval_confidence"], len(timing.looks)
        base_summary = summary(timing.ms[0], batches[0])
        base_notes = variance_notes(names[0], base_summary)
        for j, name in enumerate(names[1:], start=1):
            metrics = speed_metrics(timing.ms, batches, j, confidence=level, look=look)
            out_metrics[name].update(metrics)
            cand_summary = summary(timing.ms[j], batches[j])
            sp = metrics["speedup"]
            iv = sp.candidate_interval
            details[name].update({
                "rounds": timing.rounds, "elapsed_s": timing.elapsed_s, "looks": list(timing.looks),
                "stopped": timing.stopped, "sequential": timing.sequential, "interval_confidence": level,
                "providers": {"base": providers[0], "candidate": providers[j]},
                "base": base_summary, "candidate": cand_summary,
                "speedup": {"value": sp.candidate, "low": iv.low if iv else None, "high": iv.high if iv else None},
            })
            cand_notes = variance_notes(name, cand_summary)
            details[name]["notes"] += base_notes + cand_notes
            details[name]["high_variance"] = bool(base_notes or cand_notes)
            if timing.stopped == "max_time" and timing.rounds < settings.min_runs:
                details[name]["notes"].append(f"max_time_s {settings.max_time_s:g} s ran out after "
                                              f"{timing.rounds:,} of min_runs {settings.min_runs:,} rounds")
        first = out_metrics[names[1]] if len(names) > 1 else {}
        for key in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                    "throughput"):
            if key in first and first[key].base is not None:
                base_metrics[key] = first[key].base
        _profile(models, backends, fed, names, settings, threads, details)
    if energy:
        counters, reason = rapl_counters()
        per_block = energy_blocks(calls, counters) if counters else None
        for j, name in enumerate(names[1:], start=1):
            m = energy_metric(per_block, j, confidence=confidence, reason=reason)
            out_metrics[name][m.metric] = m
            details[name]["energy"] = {"available": per_block is not None, "reason": reason,
                                       "counters": [c.name for c in counters]}
        if per_block is not None:
            base_metrics["energy_per_inference_mj"] = float(per_block[0].mean())


def _profile(models, backends, fed, names, settings: SpeedSettings, threads: int, details: dict) -> None:
    """onnxruntime's per-op profile of base and candidate, compared op type by op type, where both backends have
    an op profiler; a note where one has none."""
    import tempfile

    def missing(j: int) -> str | None:
        without = [f"{'the base' if i == 0 else names[i]} ({backends[i].label})" for i in (0, j)
                   if not backends[i].has_op_profile]
        if not without:
            return None
        return (f"no per-op profile: {' and '.join(without)} {'has' if len(without) == 1 else 'have'} no op "
                "profiler in the gate (onnxruntime's profiler covers ONNX models only)")

    with tempfile.TemporaryDirectory(prefix="gate-profile-") as tmp:
        base_prof = None
        try:
            for j, name in enumerate(names[1:], start=1):
                note = missing(j)
                if note is not None:
                    details[name]["op_profile"] = None
                    details[name]["notes"].append(note)
                    continue
                if base_prof is None:
                    base_prof = op_profile(models[0][1], fed[0][0], settings, threads, Path(tmp))
                cand_prof = op_profile(models[j][1], fed[j][0], settings, threads, Path(tmp))
                details[name]["op_profile"] = dict(compare_profiles(base_prof, cand_prof), runs=20)
        except Exception as exc:  # the profile is an aid: its failure must not lose the timings
            for name in names[1:]:
                if "op_profile" not in details[name]:
                    details[name]["op_profile"] = None
                    details[name]["notes"].append(f"the per-op profile failed: {type(exc).__name__}: {exc}"[:300])
