"""Input binding, written once for every backend: which data feeds which input, the sample shape check,
one fixed batch size, fixed-batch padding, and the public feed a timer or a memory worker is given.

A runner (gate/models/onnx.py, gate/models/torch.py) inherits `Binding`, resolves each input with
`_source` and `_shaped`, stores what it will feed with `_bind_input`, ends with `_set_batch`, and
runs through `_chunks`. Outside the runner only the public API is read:

- `fixed_batch`: the batch size fixed in the model file, or None for a dynamic batch axis;
- `sample(index)`: one sample's inputs as the data holds them (report.html draws image inputs of flips);
- `feed(batch_size) -> (feeds, batch)`: the first samples as one call's input, rows repeated when the data
  has fewer, each input cast to the numpy dtype the model takes (where numpy has one);
- `batches(start, stop)`: samples [start, stop) as the inputs of the calls that run them, cast the same way
  (gate/measure/tensors.py feeds them to sessions of its own);
- `float_columns()` and `transformed(transform)`: the data of the inputs the model takes as floating point,
  and a context in which `run` feeds transform(data key, rows, first sample) in place of the data's rows (the
  policy's perturbations, gate/measure/perturb.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from gate.columns import with_sample_shape
from gate.errors import GateInputError


class Binding:
    path: Path
    _mapping: dict  # the policy's data: inputs: {input name: data key, columns, or a ShapedInput}

    def _init_binding(self) -> None:
        self._feeds: dict[str, np.ndarray] = {}  # input name -> the whole data column (a view, never copied)
        self._dtypes: dict[str, object] = {}  # input name -> the dtype the backend takes (backend's own type)
        self._batch: int | None = None
        self._sources: dict[str, str] = {}  # input name -> the data key or columns feeding it, as text
        self._shapes: dict[str, tuple[int, ...]] = {}  # input name -> the sample shape the policy declares
        self._transform: Callable[[str, np.ndarray, int], np.ndarray] | None = None

    # ---------------------------------------------------------------- public

    @property
    def fixed_batch(self) -> int | None:
        return self._batch

    @property
    def input_names(self) -> list[str]:
        return list(self._feeds)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """Every input of one sample as the data holds it (views, no copy): what report.html draws of a flip."""
        return {name: array[index] for name, array in self._feeds.items()}

    def float_columns(self) -> dict[str, tuple[str, np.ndarray]]:
        """input name -> (data key, the whole bound data) of every input the model takes as floating point."""
        out = {}
        for name, array in self._feeds.items():
            want = self._numpy_dtype(name)
            if np.issubdtype(want if want is not None else array.dtype, np.floating):
                out[name] = (self._sources.get(name, name), array)
        return out

    @contextlib.contextmanager
    def transformed(self, transform: Callable[[str, np.ndarray, int], np.ndarray]):
        """Inside: `run` feeds transform(data key, rows, index of the first row's sample) for every input
        instead of the data's rows (before fixed-batch padding), so models bound to the same data see the same
        transformed samples."""
        self._transform = transform
        try:
            yield self
        finally:
            self._transform = None

    def feed(self, batch_size: int) -> tuple[dict[str, np.ndarray], int]:
        """The first `batch_size` samples of the bound data as the input of one call (the model's own size
        when its batch axis is fixed); rows repeat when the data has fewer samples. Arrays are contiguous and
        of the numpy dtype each input takes, so a timer converts them once, outside the timed call."""
        batch = self._batch or batch_size
        feeds = {}
        for name, array in self._feeds.items():
            rows = array[:batch]
            if len(rows) < batch:
                rows = np.concatenate([rows] * math.ceil(batch / max(len(rows), 1)))[:batch]
            want = self._numpy_dtype(name)
            feeds[name] = np.ascontiguousarray(rows if want is None else rows.astype(want, copy=False))
        return feeds, batch

    def batches(self, start: int, stop: int) -> Iterator[dict[str, np.ndarray]]:
        """Samples [start, stop) as the inputs of the calls that run them (chunks of the fixed batch, the last one
        padded by repeating its last sample), each input of the numpy dtype the model takes."""
        for _, chunk in self._chunks(start, stop):
            yield {k: v if self._numpy_dtype(k) is None else v.astype(self._numpy_dtype(k), copy=False)
                   for k, v in chunk.items()}

    # ---------------------------------------------------------------- for the runners

    def _numpy_dtype(self, name: str):
        """The numpy dtype input `name` is fed as (None: as the data holds it). ONNX stores numpy types."""
        return self._dtypes.get(name)

    def _source(self, name: str, names: list[str], dataset):
        """Which data feeds the input `name`: the policy's mapping, a key of the same name, the only feature,
        or every column of a CSV for a model with one input. A declared sample shape (data.inputs: {name:
        {columns, shape}}) is kept for `_shaped`; without columns the data is inferred as without it."""
        spec = self._mapping.get(name)
        shape = getattr(spec, "shape", None)
        if shape is not None:
            self._shapes[name] = tuple(shape)
            spec = spec.columns
        features = dataset.feature_keys()
        if spec is None and name in dataset.columns:
            spec = name
        elif spec is None and len(names) == 1 and len(features) == 1:
            spec = features[0]
        elif spec is None and len(names) == 1 and features and all(dataset.columns[f].ndim == 1 for f in features):
            spec = features  # a CSV of feature columns
        if spec is not None:
            self._sources[name] = spec if isinstance(spec, str) else ",".join(map(str, spec))
            return spec
        raise GateInputError(f"cannot tell which data feeds the input '{name}' of {self.path.name}",
                             path=dataset.path, fix=f"map it in the policy: data: {{inputs: {{{name}: KEY}}}} "
                             f"with KEY one of {', '.join(features)[:200]}")

    def _shaped(self, array: np.ndarray, name: str, spec, dims: list, dataset) -> np.ndarray:
        """The data for an input of declared shape `dims` (int or None per axis, batch first): samples in the
        shape the policy declares for this input (a view, or reshaped batch by batch; never a copy of the whole
        data), else one column feeding a (batch, 1) input becomes a view of that shape; samples of another shape
        are refused."""
        declared = name in self._shapes
        if declared:
            array = self._reshaped(array, name, dataset)
        elif array.ndim == 1 and len(dims) == 2 and dims[1] in (None, 1):
            array = array.reshape(-1, 1)  # one CSV column feeding a (batch, 1) input: a view, not a copy
        sample = dims[1:]
        if len(sample) != array.ndim - 1 or any(d is not None and d != a for d, a in zip(sample, array.shape[1:])):
            raise GateInputError(f"input '{name}' of {self.path.name} expects samples of shape "
                                 f"{shape_text(sample)}, but the data {self._data_text(name)} has "
                                 f"{tuple(array.shape[1:])}{' as the policy declares' if declared else ''}",
                                 path=dataset.path, fix=self._reshape_fix(name, sample, array))
        return array

    def _reshaped(self, array, name: str, dataset):
        """The data in the sample shape the policy declares for input `name` (as it is when none is declared):
        checked to hold as many values per sample, then a view, or reshaped batch by batch (never copied whole)."""
        declared = self._shapes.get(name)
        if declared is None:
            return array
        have = tuple(array.shape[1:])
        if math.prod(have) != math.prod(declared):
            raise GateInputError(f"input '{name}' of {self.path.name}: the policy declares samples of shape "
                                 f"{shape_text(declared)} ({math.prod(declared)} values), but the data "
                                 f"{self._data_text(name)} has {math.prod(have)} values per sample {have}",
                                 path=dataset.path, fix=f"make data.inputs.{name}.shape in the policy hold "
                                 f"{math.prod(have)} values (the product of its numbers), or map other columns to "
                                 "this input")
        return with_sample_shape(array, declared)

    def _data_text(self, name: str) -> str:
        text = self._sources.get(name, name)
        parts = text.split(",")
        if len(text) <= 60:
            return repr(text)
        return f"{parts[0]!r} ... {parts[-1]!r} ({len(parts)} columns)" if len(parts) > 1 else repr(text[:57] + "...")

    def _reshape_fix(self, name: str, sample: list, array) -> str:
        """How to feed data of another sample shape to this input: the policy's declared shape, when the model
        gives every axis and the values per sample agree."""
        wanted = [d for d in sample if d is not None]
        if len(wanted) == len(sample) and math.prod(wanted) == math.prod(array.shape[1:]):
            given = self._mapping.get(name)
            given = getattr(given, "columns", given)
            columns = "" if given is None else \
                f"columns: {given if isinstance(given, str) else '[' + ', '.join(map(str, given)) + ']'}, "
            return (f"declare the sample shape in the policy: data: {{inputs: {{{name}: {{{columns}shape: "
                    f"[{', '.join(map(str, wanted))}]}}}}}}, or map another key to this input")
        return (f"map another key to this input, or give data whose samples hold the {shape_text(sample)} the model "
                "takes (data.inputs: {NAME: {shape: [...]}} in the policy reshapes samples that hold as many values)")

    def _bind_input(self, name: str, array: np.ndarray, dtype) -> None:
        self._feeds[name] = array
        self._dtypes[name] = dtype

    def _set_batch(self, fixed: set[int], fix: str) -> None:
        if len(fixed) > 1:
            raise GateInputError(f"has inputs with different fixed batch sizes {sorted(fixed)}", path=self.path,
                                 fix=fix)
        self._batch = fixed.pop() if fixed else None

    def _chunks(self, start: int, stop: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(real samples, feeds) per call for samples [start, stop): one call with a dynamic batch axis, chunks
        of the fixed size otherwise, the last one padded by repeating its last sample (drop the padding from
        the output: keep the first `real` rows)."""
        if self._batch is None:
            yield stop - start, {k: self._rows(k, start, stop) for k in self._feeds}
            return
        for lo in range(start, stop, self._batch):
            hi = min(lo + self._batch, stop)
            chunk = {k: self._rows(k, lo, hi) for k in self._feeds}
            if hi - lo < self._batch:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self._batch - (hi - lo), axis=0)])
                         for k, v in chunk.items()}
            yield hi - lo, chunk

    def _rows(self, name: str, start: int, stop: int) -> np.ndarray:
        rows = self._feeds[name][start:stop]
        return rows if self._transform is None else self._transform(self._sources.get(name, name), rows, start)


def shape_text(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
