"""The timed loop: base and candidates called in rounds, interleaved, with looks that may measure again.

How a run goes (`time_interleaved`):
- every model gets `warmup` untimed calls first, interleaved like the timed ones;
- then rounds: each round calls every model once on the same input batch, the
  base and every candidate, in an order that changes from round to round, so
  every model takes every position and follows every other one equally often
  on average (`_orders`);
- the first look comes when both `min_runs` rounds and `min_time_s` are done;
  when a caller gives a `decide` function (in the end the judge's stopping rule,
  handed in by the CLI: is every speed rule decided?), an undecided result is
  measured again: the rounds double before the next look, until `max_time_s`,
  which caps the whole timed loop;
- each look spends part of the error rate (alpha-spending, look k uses
  alpha / 2^k) when re-measurement is possible, so measuring a borderline case
  again cannot turn noise into a failure more often than the confidence level
  says: the intervals are wider, and `interval_confidence` says how wide.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gate.measure.settings import SpeedSettings


@dataclass(frozen=True, kw_only=True)
class Timing:
    names: tuple[str, ...]
    batches: tuple[int, ...]
    ms: np.ndarray  # [models, rounds], milliseconds per call
    looks: tuple[dict, ...]  # {rounds, elapsed_s, interval_confidence, settled}
    elapsed_s: float
    stopped: str  # "min_reached", "settled" or "max_time"
    sequential: bool

    @property
    def rounds(self) -> int:
        return int(self.ms.shape[1])


def look_confidence(confidence: float, look: int, sequential: bool) -> float:
    """Two-sided level of the intervals at look k: alpha-spending alpha_k = alpha / 2^k when the run may
    look again (the sum over looks stays within alpha), the plain level when it looks once."""
    alpha = (1.0 - confidence) / 2.0
    a_k = alpha / (2 ** look) if sequential else alpha
    return 1.0 - 2.0 * a_k


def time_interleaved(runs: list[Callable[[], object]], names: list[str], batches: list[int],
                     settings: SpeedSettings, *, confidence: float,
                     decide: Callable[[np.ndarray, float, int], bool] | None = None,
                     clock: Callable[[], int] = time.perf_counter_ns) -> Timing:
    """Time every callable in rounds (see the module docstring). decide(ms, interval_confidence, look)
    returns True when the numbers so far settle every rule; it is only asked when re-measuring is possible."""
    m = len(runs)
    orders = _orders(m)
    for w in range(settings.warmup):
        for i in orders[w % len(orders)]:
            runs[i]()
    sequential = decide is not None and settings.max_time_s > settings.min_time_s
    times: list[list[int]] = [[] for _ in range(m)]
    looks: list[dict] = []
    next_look = max(settings.min_runs, 1)
    stopped = "max_time"
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one call would be charged to that model alone
    start = clock()
    max_ns, min_ns = settings.max_time_s * 1e9, settings.min_time_s * 1e9
    rounds = 0
    try:
        while True:
            for i in orders[rounds % len(orders)]:
                t0 = clock()
                runs[i]()
                times[i].append(clock() - t0)
            rounds += 1
            elapsed = clock() - start
            if elapsed >= max_ns:
                stopped = "max_time"
                break
            if rounds >= next_look and elapsed >= min_ns:
                look = len(looks) + 1
                level = look_confidence(confidence, look, sequential)
                if not sequential:
                    looks.append({"rounds": rounds, "elapsed_s": elapsed / 1e9, "interval_confidence": level,
                                  "settled": None})
                    stopped = "min_reached"
                    break
                gc.enable()
                settled = bool(decide(_as_ms(times), level, look))
                gc.disable()
                looks.append({"rounds": rounds, "elapsed_s": elapsed / 1e9, "interval_confidence": level,
                              "settled": settled})
                if settled:
                    stopped = "settled"
                    break
                next_look = 2 * rounds
    finally:
        if gc_was_enabled:
            gc.enable()
    elapsed_s = (clock() - start) / 1e9
    if stopped == "max_time":
        look = len(looks) + 1
        looks.append({"rounds": rounds, "elapsed_s": elapsed_s,
                      "interval_confidence": look_confidence(confidence, look, sequential), "settled": None})
    return Timing(names=tuple(names), batches=tuple(batches), ms=_as_ms(times), looks=tuple(looks),
                  elapsed_s=elapsed_s, stopped=stopped, sequential=sequential)


def _orders(m: int, rounds: int = 4096, seed: int = 0) -> list[list[int]]:
    """The call order of each round (cycled). Two models: A B | B A, so each runs after itself and after the
    other equally often. More: a seeded random order per round, so every model takes every position and
    follows every other model equally often on average. (A fixed forward/backward order made the middle
    model of three look ~10% slower than its identical twin: the end models ran twice in a row, with warm
    caches and thread pools; a plain rotation still left a 2-4% bias from who runs before whom.)"""
    if m <= 2:
        return [list(range(m)), list(range(m))[::-1]]
    rng = np.random.Generator(np.random.PCG64(seed))
    return [list(rng.permutation(m)) for _ in range(rounds)]


def _as_ms(times: list[list[int]]) -> np.ndarray:
    n = min(len(t) for t in times)
    return np.maximum(np.array([t[:n] for t in times], dtype=np.float64), 1.0) / 1e6
