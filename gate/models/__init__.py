"""One runner per backend behind one small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from gate.policy import ModelRef


class Runner(Protocol):
    name: str
    path: Path

    def bind(self, dataset) -> None:
        """Resolve and check every input against the data, before any sample runs."""

    def run(self, start: int, stop: int) -> np.ndarray:
        """The selected output for samples [start, stop)."""


def open_runner(ref: ModelRef, *, output: str | None, inputs: dict, max_mb: float, threads: int | None = None) -> Runner:
    """The runner for a model file, chosen by its content (gate/safety/), never by its extension:
    pickles are refused here, before any backend is imported."""
    from gate import safety

    kind = safety.identify(ref.path, max_mb)
    if kind == safety.ONNX:
        from gate.models.onnx import OnnxRunner
        return OnnxRunner(ref, output=output, inputs=inputs, max_mb=max_mb, threads=threads)
    from gate.models.torch import TorchRunner  # torch is imported only now, with an install hint
    return TorchRunner(ref, kind=kind, output=output, inputs=inputs, max_mb=max_mb, threads=threads)
