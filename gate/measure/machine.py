"""The machine a speed run measures on: the CPUs this process may use, sessions opened with the target's
threads and execution provider, and the input batch every timed call is fed."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gate.errors import GateInputError

if TYPE_CHECKING:
    from gate.measure.settings import SpeedSettings


def usable_cpus() -> tuple[int, str]:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v1 or v2)."""
    try:
        count = len(os.sched_getaffinity(0))
        why = f"{count} CPU(s) in the affinity mask"
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
        why = f"{count} CPU(s)"
    quota = _cgroup_quota()
    if quota is not None and quota < count:
        count = max(1, math.floor(quota))
        why += f", capped by a cgroup CPU quota of {quota:g}"
    return count, why


def _cgroup_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
        try:
            quota = int(Path(root, "cpu.cfs_quota_us").read_text())
            period = int(Path(root, "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def threads_to_use(requested: int) -> tuple[int, str | None]:
    usable, why = usable_cpus()
    if requested > usable:
        return usable, (f"threads: {requested} asked, but this process may use {usable} ({why}); measured with "
                        f"{usable}: more threads than cores doubles the noise and measures the scheduler")
    return requested, None


def open_session(path: Path | bytes, settings: SpeedSettings | None, threads: int | None, *,
                 profile_prefix: str | None = None, provider: str | None = None):
    """The one onnxruntime session builder: the ONNX runner's (settings None: CPU, onnxruntime's own thread
    count unless `threads`), the timer's and the profiler's (the target's settings and threads) and the
    memory worker's (`provider` named directly). `path` may be a serialized model (gate/measure/tensors.py:
    a checked model with its intermediate tensors exposed)."""
    import onnxruntime as ort

    provider = provider or (settings.provider if settings is not None else "CPUExecutionProvider")
    available = ort.get_available_providers()
    if provider not in available:
        if settings is None:
            where = "latency.provider"
        else:
            where = f"latency.targets.{settings.target}.provider" if settings.target else "latency.provider"
        raise GateInputError(f"asks for the execution provider {provider}, which this onnxruntime does "
                             f"not have (it has {', '.join(available)})", path=where,
                             fix="install the onnxruntime build for that provider on this machine, or measure "
                                 "this target on the device it names")
    ort.set_default_logger_severity(4)  # errors raised at run time reach the user as messages already
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's own warnings out of the report
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads != 1:
        # idle pool threads spinning between calls would steal the core the other model runs on (base and
        # candidates take turns batch by batch: about 2x the wall time on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=providers)


def feeds_for(runner, batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """The first `batch_size` samples of the bound data as a feed (the model's own size when its batch
    axis is fixed); rows repeat when the data has fewer samples. The runner's public feed API
    (gate/models/binding.py)."""
    return runner.feed(batch_size)
