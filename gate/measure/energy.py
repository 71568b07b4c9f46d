"""Energy per inference from RAPL package counters, in interleaved blocks (where the machine has them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gate.intervals import Interval
from gate.measure.latency import t_interval
from gate.measurements import MetricResult

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True, kw_only=True)
class RaplCounter:
    name: str
    energy: Path  # energy_uj
    max_range_uj: int


def rapl_counters(root: Path = POWERCAP) -> tuple[list[RaplCounter], str | None]:
    """The package-level RAPL counters (intel-rapl:N, not their sub-zones), or why there are none."""
    if not root.is_dir():
        return [], f"no RAPL energy counters on this machine ({root} is absent)"
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # sub-zones (core, dram) are inside the package's count
        energy = zone / "energy_uj"
        try:
            int(energy.read_text())
            max_range = int((zone / "max_energy_range_uj").read_text())
        except PermissionError:
            return [], f"the RAPL counters in {root} are not readable by this user (they usually need root)"
        except (OSError, ValueError):
            continue
        name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
        found.append(RaplCounter(name=name, energy=energy, max_range_uj=max_range))
    if not found:
        return [], f"no readable RAPL package counters under {root}"
    return found, None


def read_energy_uj(counters: list[RaplCounter]) -> list[int]:
    return [int(c.energy.read_text()) for c in counters]


def energy_delta_uj(before: list[int], after: list[int], counters: list[RaplCounter]) -> int:
    """Energy between two reads, over every package, across a counter wrap-around."""
    total = 0
    for b, a, c in zip(before, after, counters):
        total += a - b if a >= b else a + c.max_range_uj - b
    return total


def energy_blocks(runs: list[Callable[[], object]], counters: list[RaplCounter], *, blocks: int = 6,
                  block_s: float = 0.25, clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """mJ per call of each model in interleaved blocks ([models, blocks]): RAPL counts the whole package at
    about millisecond resolution, so a model is run alone for a block and the blocks alternate."""
    out = np.zeros((len(runs), blocks))
    for k in range(blocks):
        order = range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            before, calls, t0 = read_energy_uj(counters), 0, clock()
            while clock() - t0 < block_s * 1e9:
                runs[i]()
                calls += 1
            out[i, k] = energy_delta_uj(before, read_energy_uj(counters), counters) / 1000.0 / calls
    return out


def energy_metric(per_block: np.ndarray | None, j: int, *, confidence: float, reason: str | None) -> MetricResult:
    name = "energy_per_inference_mj"
    if per_block is None:
        # a property of the machine, not of the model: the judge warns instead of failing
        return MetricResult(metric=name, n=0, unavailable=reason or "energy was not measured",
                            evidence={"not_on_this_machine": True})
    base, cand = per_block[0], per_block[j]
    k = len(cand)
    vb, vc = float(base.mean()), float(cand.mean())
    lo, hi, _ = t_interval(vc, cand, confidence)
    d_lo, d_hi, _ = t_interval(vc - vb, cand - base, confidence)
    return MetricResult(metric=name, n=k, base=vb, candidate=vc, delta=vc - vb,
                        candidate_interval=Interval(low=lo, high=hi, method="block_t"),
                        delta_interval=Interval(low=d_lo, high=d_hi, method="block_t"),
                        evidence={"blocks": k, "interval_confidence": confidence, "package_energy": True})
