"""onnxruntime backend: the runner (dynamic batch axis -> batches, fixed batch -> chunks of that size), its
timer and its memory worker. The session is built by gate.measure.machine.open_session, the one builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gate.checks import check_input_names
from gate.errors import GateInputError
from gate.files import check_readable
from gate.models.binding import Binding
from gate.policy import ModelRef
from gate.safety import check_external_data

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class OnnxRunner(Binding):
    backend = "onnx"

    def __init__(self, ref: ModelRef, *, output: str | None, inputs: dict, max_mb: float,
                 threads: int | None = None) -> None:
        from gate.measure.machine import open_session

        self.name = ref.name
        self.path = ref.path
        self._mapping = inputs
        check_readable(self.path, "model", max_mb)
        check_external_data(self.path, max_mb=max_mb)  # before onnxruntime reads any external weights
        try:
            # base and candidates take turns batch by batch: open_session turns the idle pool's spinning off
            self.session = open_session(self.path, None, threads)
        except Exception as exc:  # onnxruntime raises its own types for every malformed file
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise GateInputError(f"cannot be loaded by onnxruntime: {first}", path=self.path,
                                 fix="check that it is a valid ONNX model (python -m onnx.checker)") from None
        outs = [o.name for o in self.session.get_outputs()]
        chosen = ref.output or output
        if chosen is None:
            if len(outs) != 1:
                raise GateInputError(f"has {len(outs)} outputs ({', '.join(outs)}); the gate needs to know which to judge",
                                     path=self.path, fix=f"set `output: {outs[0]}` in the policy (top level or on this model)")
            chosen = outs[0]
        elif chosen not in outs:
            raise GateInputError(f"has no output named {chosen!r}", path=self.path,
                                 fix=f"choose one of: {', '.join(outs)}")
        self.output = chosen
        self._init_binding()

    def bind(self, dataset) -> None:
        model_inputs = self.session.get_inputs()
        names = [inp.name for inp in model_inputs]
        check_input_names(self._mapping, names, self.path)
        fixed_batches = set()
        for inp in model_inputs:
            want = _ORT_TYPES.get(inp.type)
            if want is None:
                raise GateInputError(f"input '{inp.name}' has the type {inp.type}, which the gate cannot feed",
                                     path=self.path, fix="export the model with numeric tensor inputs")
            spec = self._source(inp.name, names, dataset)
            array = dataset.column(spec, for_input=inp.name, model=self.path)
            dims = [d if isinstance(d, int) else None for d in inp.shape]  # a named axis is free
            array = self._shaped(array, inp.name, spec, dims, dataset)
            if array.dtype != want:
                if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or \
                        not np.can_cast(array.dtype, want, casting="same_kind"):
                    raise GateInputError(f"input '{inp.name}' of {self.path.name} expects {np.dtype(want).name}, "
                                         f"but the data {spec!r} holds {array.dtype}", path=dataset.path,
                                         fix=f"store {spec!r} as {np.dtype(want).name}")
                dataset.check_cast(spec, want, for_input=inp.name, model=self.path)
            if dims and dims[0] is not None and dims[0] > 0:
                fixed_batches.add(dims[0])
            self._bind_input(inp.name, array, want)
        self._set_batch(fixed_batches, "export with one batch size or a dynamic batch axis")

    def run(self, start: int, stop: int) -> np.ndarray:
        parts = [self._run(chunk)[:real] for real, chunk in self._chunks(start, stop)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # cast per batch: a whole-column cast would copy the data once per model
        feeds = {k: v.astype(self._dtypes[k], copy=False) for k, v in feeds.items()}
        return np.asarray(self.session.run([self.output], feeds)[0])


# ---------------------------------------------------------------- the backend's measurement hooks

def timer(runner: OnnxRunner, feeds: dict, threads: int, settings) -> tuple:
    """(zero-argument call, provider) timing this model: a session of its own with the target's threads and
    execution provider, fed the prepared batch."""
    from gate.measure.machine import open_session

    session = open_session(runner.path, settings, threads)
    return (lambda: session.run(None, feeds)), session.get_providers()[0]


def memory_spec(runner: OnnxRunner) -> dict:
    return {"backend": "onnx", "path": str(runner.path)}


def memory_baseline(feeds: dict, threads: int) -> object:
    """What the worker holds without the model: onnxruntime imported, the input loaded."""
    import onnxruntime  # noqa: F401

    return feeds


def memory_call(spec: dict, feeds: dict, threads: int, provider: str):
    """In the memory worker: the session and a zero-argument inference call."""
    from gate.measure.machine import open_session

    session = open_session(Path(spec["path"]), None, threads, provider=provider)
    return lambda: session.run(None, feeds)
