"""One runner per backend behind one small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from gate.errors import GateInputError
from gate.policy import ModelRef


class Runner(Protocol):
    name: str
    path: Path

    def bind(self, dataset) -> None:
        """Resolve and check every input against the data, before any sample runs."""

    def run(self, start: int, stop: int) -> np.ndarray:
        """The selected output for samples [start, stop)."""


def open_runner(ref: ModelRef, *, output: str | None, inputs: dict, max_mb: float, threads: int | None = None) -> Runner:
    suffix = ref.path.suffix.lower()
    if suffix == ".onnx":
        from gate.models.onnx import OnnxRunner
        return OnnxRunner(ref, output=output, inputs=inputs, max_mb=max_mb, threads=threads)
    raise GateInputError(f"has the unsupported model format {suffix or '(no extension)'}", path=ref.path,
                         fix="give an .onnx model (torch formats arrive with the torch backend)")
