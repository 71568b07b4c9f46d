"""onnxruntime runner: dynamic batch axis -> batches, fixed batch -> chunks of that size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gate.checks import check_input_names
from gate.errors import GateInputError
from gate.files import check_readable
from gate.policy import ModelRef
from gate.safety import check_external_data

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class OnnxRunner:
    def __init__(self, ref: ModelRef, *, output: str | None, inputs: dict, max_mb: float,
                 threads: int | None = None) -> None:
        self.name = ref.name
        self.path = ref.path
        self._mapping = inputs
        check_readable(self.path, "model", max_mb)
        check_external_data(self.path, max_mb=max_mb)  # before onnxruntime reads any external weights
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # keep onnxruntime's own warnings out of the report
        ort.set_default_logger_severity(4)  # errors raised at run time reach the user as messages already
        if threads:
            options.intra_op_num_threads = threads
        # base and candidates take turns batch by batch: a session whose idle pool keeps spinning
        # burns the cores the running one needs (about 2x the wall time on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
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
        self._feeds: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, type] = {}
        self._batch: int | None = None

    def bind(self, dataset) -> None:
        model_inputs = self.session.get_inputs()
        check_input_names(self._mapping, [inp.name for inp in model_inputs], self.path)
        features = dataset.feature_keys()
        fixed_batches = set()
        for inp in model_inputs:
            want = _ORT_TYPES.get(inp.type)
            if want is None:
                raise GateInputError(f"input '{inp.name}' has the type {inp.type}, which the gate cannot feed",
                                     path=self.path, fix="export the model with numeric tensor inputs")
            spec = self._mapping.get(inp.name)
            if spec is None:
                if inp.name in dataset.columns:
                    spec = inp.name
                elif len(model_inputs) == 1 and len(features) == 1:
                    spec = features[0]
                elif len(model_inputs) == 1 and all(dataset.columns[f].ndim == 1 for f in features) and features:
                    spec = features  # a CSV of feature columns
                else:
                    raise GateInputError(f"cannot tell which data feeds the input '{inp.name}' of {self.path.name}",
                                         path=dataset.path, fix=f"map it in the policy: data: {{inputs: {{{inp.name}: KEY}}}} "
                                         f"with KEY one of {', '.join(features)[:200]}")
            array = dataset.column(spec, for_input=inp.name, model=self.path)
            if array.ndim == 1 and len(inp.shape) == 2 and not (isinstance(inp.shape[1], int) and inp.shape[1] != 1):
                array = array.reshape(-1, 1)  # one CSV column feeding a (batch, 1) input: a view, not a copy
            if array.dtype != want:
                if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or \
                        not np.can_cast(array.dtype, want, casting="same_kind"):
                    raise GateInputError(f"input '{inp.name}' of {self.path.name} expects {np.dtype(want).name}, "
                                         f"but the data {spec!r} holds {array.dtype}", path=dataset.path,
                                         fix=f"store {spec!r} as {np.dtype(want).name}")
                dataset.check_cast(spec, want, for_input=inp.name, model=self.path)
            dims = list(inp.shape)
            sample_dims = dims[1:]
            if len(sample_dims) != array.ndim - 1 or any(
                    isinstance(d, int) and d != a for d, a in zip(sample_dims, array.shape[1:])):
                raise GateInputError(f"input '{inp.name}' of {self.path.name} expects samples of shape "
                                     f"{_shape_text(sample_dims)}, but the data {spec!r} has {tuple(array.shape[1:])}",
                                     path=dataset.path, fix="reshape the data or map another key to this input")
            if dims and isinstance(dims[0], int) and dims[0] > 0:
                fixed_batches.add(dims[0])
            self._feeds[inp.name] = array
            self._dtypes[inp.name] = want
        if len(fixed_batches) > 1:
            raise GateInputError(f"has inputs with different fixed batch sizes {sorted(fixed_batches)}",
                                 path=self.path, fix="export with one batch size or a dynamic batch axis")
        self._batch = fixed_batches.pop() if fixed_batches else None

    def run(self, start: int, stop: int) -> np.ndarray:
        if self._batch is None:
            return self._run({k: v[start:stop] for k, v in self._feeds.items()})
        parts = []
        for lo in range(start, stop, self._batch):
            hi = min(lo + self._batch, stop)
            chunk = {k: v[lo:hi] for k, v in self._feeds.items()}
            if hi - lo < self._batch:  # pad the last chunk of a fixed-batch model, drop the padding after
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self._batch - (hi - lo), axis=0)])
                         for k, v in chunk.items()}
            parts.append(self._run(chunk)[: hi - lo])
        return np.concatenate(parts)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # cast per batch: a whole-column cast would copy the data once per model
        feeds = {k: v.astype(self._dtypes[k], copy=False) for k, v in feeds.items()}
        return np.asarray(self.session.run([self.output], feeds)[0])


def _shape_text(dims: list) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in dims) + ")"
