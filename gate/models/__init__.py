"""Backends, chosen by a model file's content (gate/safety/), each behind one small interface.

A backend is a module (gate/models/onnx.py, gate/models/torch.py) imported only when a model of its
kind is opened, so an ONNX-only run never imports torch. It gives:

- a runner (`open_runner`): `bind(dataset)`, `run(start, stop)`, and the public feed API of
  gate/models/binding.py (`feed(batch_size) -> (feeds, batch)`, `fixed_batch`), written once for all;
- `timer(runner, feeds, threads, settings) -> (zero-argument call, provider name)`: what the timed loop
  calls, its input prepared once outside the call;
- `pinned(threads)`: a context the timed loop runs in (torch's process-wide thread count; ONNX sessions
  carry their own);
- `memory_spec(runner)`: a JSON-able description the memory worker (gate/measure/memory.py, a
  subprocess of its own) hands back to `memory_call(spec, feeds, threads, provider)`, which loads the
  model through the same checks and loaders; `memory_baseline(feeds, threads)` is the same worker
  without the model (the backend's libraries imported, the input held);
- `has_op_profile`: whether gate/measure/profile.py can break its time down by op (onnxruntime's
  profiler: ONNX only).

A new backend (TFLite, ...) is one module with these functions and one entry in BACKENDS.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gate.policy import ModelRef


class Runner(Protocol):
    name: str
    path: Path
    backend: str  # a key of BACKENDS

    def bind(self, dataset) -> None:
        """Resolve and check every input against the data, before any sample runs."""

    def run(self, start: int, stop: int) -> np.ndarray:
        """The selected output for samples [start, stop)."""

    @property
    def fixed_batch(self) -> int | None:
        """The batch size fixed in the model file, None for a dynamic batch axis."""

    def feed(self, batch_size: int) -> tuple[dict[str, np.ndarray], int]:
        """The first samples of the bound data as one call's input, and its batch size."""


@dataclass(frozen=True)
class Backend:
    name: str
    kinds: tuple[str, ...]  # gate.safety.identify's answers this backend runs
    module: str  # imported when first needed
    runner: str  # the runner class in that module
    has_op_profile: bool
    label: str  # in notes: "onnxruntime", "torch"

    def _impl(self):
        return importlib.import_module(self.module)

    def open_runner(self, ref: ModelRef, *, kind: str, output: str | None, inputs: dict, max_mb: float,
                    threads: int | None = None) -> Runner:
        cls = getattr(self._impl(), self.runner)
        extra = {"kind": kind} if len(self.kinds) > 1 else {}
        return cls(ref, output=output, inputs=inputs, max_mb=max_mb, threads=threads, **extra)

    def timer(self, runner: Runner, feeds: dict[str, np.ndarray], threads: int, settings) -> tuple:
        """(zero-argument call, provider name) for the timed loop."""
        return self._impl().timer(runner, feeds, threads, settings)

    def pinned(self, threads: int):
        hook = getattr(self._impl(), "pinned_threads", None)
        return hook(threads) if hook is not None else contextlib.nullcontext()

    def memory_spec(self, runner: Runner) -> dict:
        return self._impl().memory_spec(runner)

    def memory_baseline(self, feeds: dict, threads: int) -> object:
        return self._impl().memory_baseline(feeds, threads)

    def memory_call(self, spec: dict, feeds: dict, threads: int, provider: str):
        return self._impl().memory_call(spec, feeds, threads, provider)


def _backends() -> dict[str, Backend]:
    from gate import safety

    return {b.name: b for b in (
        Backend(name="onnx", kinds=(safety.ONNX,), module="gate.models.onnx", runner="OnnxRunner",
                has_op_profile=True, label="onnxruntime"),
        Backend(name="torch", kinds=(safety.TORCH_EXPORT, safety.TORCHSCRIPT, safety.SAFETENSORS),
                module="gate.models.torch", runner="TorchRunner", has_op_profile=False, label="torch"),
    )}


BACKENDS: dict[str, Backend] = _backends()


def backend_for_kind(kind: str) -> Backend:
    for backend in BACKENDS.values():
        if kind in backend.kinds:
            return backend
    raise KeyError(kind)  # gate.safety.identify answers only kinds some backend runs


def backend_of(runner: Runner) -> Backend:
    return BACKENDS[runner.backend]


def open_runner(ref: ModelRef, *, output: str | None, inputs: dict, max_mb: float, threads: int | None = None) -> Runner:
    """The runner for a model file, chosen by its content (gate/safety/), never by its extension:
    pickles are refused here, before any backend is imported."""
    from gate import safety

    kind = safety.identify(ref.path, max_mb)
    # torch is imported only by its backend's runner, with an install hint
    return backend_for_kind(kind).open_runner(ref, kind=kind, output=output, inputs=inputs, max_mb=max_mb,
                                              threads=threads)
