"""How one speed run is measured: the policy's latency block (and a named target's entry) over the defaults.

The policy parses the block into gate.policy.LatencySettings (None where it is silent); this module only
reads it, so the measurement never sees a threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gate.policy import LatencySettings


@dataclass(frozen=True, kw_only=True)
class SpeedSettings:
    batch_size: int = 1
    threads: int = 1
    warmup: int = 20
    min_runs: int = 100
    min_time_s: float = 1.0
    max_time_s: float = 10.0
    provider: str = "CPUExecutionProvider"
    target: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def settings_for(latency: LatencySettings | None, target: str | None = None) -> SpeedSettings:
    """The policy's latency block (and a named target's overrides) over the defaults."""
    values: dict = latency.given() if latency is not None else {}
    if target is not None:
        if latency is None or target not in latency.targets:
            raise KeyError(target)  # the policy checks rule targets, and measure_target the --target name
        values.update(latency.targets[target].given(), target=target)
    return SpeedSettings(**values)
