"""The interval type every measurement carries: a plain value, imported by producers and readers alike.

It imports nothing of the gate, so the result types (gate/measurements.py) can use it without
importing the code that computes intervals (gate/measure/stats.py re-exports it for that code).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Interval:
    low: float
    high: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        return {"low": self.low, "high": self.high, "method": self.method}
