"""onnxruntime backend: the runner (dynamic batch axis -> batches, fixed batch -> chunks of that size), its
timer and its memory worker. The session is built by gate.measure.machine.open_session, the one builder.

Classifiers converted by skl2onnx (and the like) give a label output and a score output, the scores as a
tensor or as a ZipMap (a sequence of {class: probability} maps). Without `output:` the runner judges the
scores, reads a ZipMap as a (batch, classes) array in the model's class order, and checks that the label output
is the scores' argmax (`notes` says where it is not). `classes` is the model's class labels in the order of its
score columns (None when the graph names none); a label output is returned as indices in that order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gate.checks import check_input_names
from gate.errors import GateInputError
from gate.files import check_readable
from gate.models.binding import Binding
from gate.policy import ModelRef
from gate.predictions import listed
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
        outputs = self.session.get_outputs()
        outs = [o.name for o in outputs]
        types = {o.name: o.type for o in outputs}
        chosen = ref.output or output
        self.label_output: str | None = None  # a label output checked against the chosen scores' argmax
        if chosen is None:
            pair = label_and_scores(outputs)
            if pair is not None:  # a classifier's label and its scores (skl2onnx): judge the scores
                self.label_output, chosen = pair
            elif len(outs) != 1:
                scores = [o.name for o in outputs if _is_scores(o)]
                suggest = scores[0] if scores else outs[0]
                why = "; a score output gives every metric, a label output only label metrics" if scores else ""
                raise GateInputError(f"has {len(outs)} outputs ({', '.join(outs)}); the gate needs to know which to "
                                     f"judge", path=self.path,
                                     fix=f"set `output: {suggest}` in the policy (top level or on this model){why}")
            else:
                chosen = outs[0]
        elif chosen not in outs:
            raise GateInputError(f"has no output named {chosen!r}", path=self.path,
                                 fix=f"choose one of: {', '.join(outs)}")
        self.output = chosen
        self._zipmap = types[chosen].startswith("seq(map(")
        # the model's class labels in the order of its score columns (skl2onnx stores them), or None
        self.classes: tuple | None = None
        if any(t not in _FLOAT_TENSORS for t in types.values()):  # a float-only graph has no label output
            labels = [self.label_output] if self.label_output else [o.name for o in outputs if _is_label(o)]
            self.classes = model_classes(self.path, chosen, labels)
        if self._zipmap and self.classes is None:
            raise GateInputError(f"gives its output {chosen!r} as a sequence of maps, but names no class labels "
                                 "for it", path=self.path,
                                 fix="convert the model without ZipMap (skl2onnx: options={'zipmap': False})")
        self._class_index = _class_index(self.classes)
        self._disagree = 0  # samples whose label output is not the scores' argmax
        self._disagree_first: list[int] = []
        self._checked = 0
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
        parts = [self._run(chunk, real) for real, chunk in self._chunks(start, stop)]
        out = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        if self.label_output:
            labels = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            self._check_labels(out, labels, start)
        return out

    def _run(self, feeds: dict[str, np.ndarray], real: int) -> tuple[np.ndarray, np.ndarray | None]:
        # cast per batch: a whole-column cast would copy the data once per model
        feeds = {k: v.astype(self._dtypes[k], copy=False) for k, v in feeds.items()}
        names = [self.output] + ([self.label_output] if self.label_output else [])
        got = self.session.run(names, feeds)
        out = self._as_array(got[0], self.output)[:real]
        labels = self._as_indices(np.asarray(got[1]).reshape(-1), self.label_output)[:real] if len(got) > 1 else None
        return out, labels

    def _as_array(self, raw, name: str) -> np.ndarray:
        if self._zipmap:  # a ZipMap: one {class: probability} per sample -> (batch, classes) in the model's order
            return zipmap_array(raw, self.classes, self.path)
        out = np.asarray(raw)
        if (out.dtype.kind in "OUS" or np.issubdtype(out.dtype, np.integer)) and \
                (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            return self._as_indices(out.reshape(-1), name)  # a label output -> class indices
        return out

    def _as_indices(self, labels: np.ndarray, name: str) -> np.ndarray:
        """A label output's values -> indices in the model's class order (as they are, without class labels)."""
        if self._class_index is None:
            return labels
        keys = labels.astype(str) if labels.dtype.kind in "OSU" else labels
        uniq, inverse = np.unique(keys, return_inverse=True)
        codes = np.empty(len(uniq), dtype=np.int64)
        for i, value in enumerate(uniq.tolist()):
            code = self._class_index.get(str(value))
            if code is None:
                raise GateInputError(f"gives the label {value!r} in its output {name!r}, which is not one of the "
                                     f"class labels it declares ({listed(self.classes)})", path=self.path,
                                     fix="check the conversion of the model, or judge its score output with "
                                         "`output:`")
            codes[i] = code
        return codes[inverse.reshape(-1)]

    def _check_labels(self, scores: np.ndarray, labels: np.ndarray, start: int) -> None:
        if scores.ndim != 2 or scores.shape[1] < 2 or not np.issubdtype(labels.dtype, np.integer):
            return
        finite = np.isfinite(scores).all(axis=1)  # NaN rows are reported as such (gate/predictions.py)
        differ = np.flatnonzero((scores.argmax(axis=1) != labels) & finite)
        self._checked += len(labels)
        self._disagree += int(differ.size)
        room = 5 - len(self._disagree_first)
        self._disagree_first.extend(int(start + i) for i in differ[:max(room, 0)])

    @property
    def notes(self) -> tuple[str, ...]:
        """What the run found worth saying about the outputs: a label output that disagrees with the scores."""
        if not self._disagree:
            return ()
        first = ", ".join(map(str, self._disagree_first)) + (" ..." if self._disagree > len(self._disagree_first) else "")
        return (f"{self.path.name}: its label output '{self.label_output}' differs from the class with the highest "
                f"score in '{self.output}' on {self._disagree:,} of {self._checked:,} samples (samples {first}); "
                f"the gate judges the highest score as the predicted class (ties go to the first class in the "
                f"model's order).",)


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


# ---------------------------------------------------------------- classifier outputs (skl2onnx and the like)

_FLOAT_TENSORS = ("tensor(float)", "tensor(double)", "tensor(float16)")
_LABEL_TENSORS = ("tensor(int64)", "tensor(int32)", "tensor(string)")
_PASSTHROUGH = ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
# classifier ops of ai.onnx.ml and their class label attributes (strings, integers)
_CLASSIFIERS = {"TreeEnsembleClassifier": ("classlabels_strings", "classlabels_int64s"),
                "LinearClassifier": ("classlabels_strings", "classlabels_ints"),
                "SVMClassifier": ("classlabels_strings", "classlabels_ints"),
                "ZipMap": ("classlabels_strings", "classlabels_int64s")}


def _is_label(out) -> bool:
    shape = out.shape if isinstance(out.shape, list) else []
    return out.type in _LABEL_TENSORS and (len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, None)))


def _is_scores(out) -> bool:
    return out.type.startswith("seq(map(") or (out.type in _FLOAT_TENSORS and len(out.shape or []) == 2)


def label_and_scores(outputs) -> tuple[str, str] | None:
    """(label output, score output) of a model with exactly these two outputs (a classifier converted by
    skl2onnx: `label` and `probabilities`, or `output_label` and a ZipMap `output_probability`), else None."""
    if len(outputs) != 2:
        return None
    a, b = outputs
    for label, scores in ((a, b), (b, a)):
        if _is_label(label) and _is_scores(scores):
            return label.name, scores.name
    return None


def _attr_labels(node) -> tuple | None:
    from onnx import helper

    for name in _CLASSIFIERS.get(node.op_type, ()):
        for attr in node.attribute:
            if attr.name == name:
                values = helper.get_attribute_value(attr)
                if values:
                    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else int(v) for v in values)
    return None


def model_classes(path: Path, output: str, label_outputs: list[str]) -> tuple | None:
    """The class labels of a classifier, in the order of its score columns: from the ZipMap or classifier node
    giving `output`, else from what gives a label output: a classifier node or the constant table the label is
    looked up in (skl2onnx's MLP: ArrayFeatureExtractor(classes, argmax)), else the one classifier node of the
    graph. None when the graph names no classes."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnxruntime loaded it; a file onnx cannot parse has no labels the gate can read
        return None
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    constants = {t.name: t for t in graph.initializer}
    constants.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})

    def traced(name: str | None):
        node = producer.get(name) if name else None
        while node is not None and node.op_type in _PASSTHROUGH:
            node = producer.get(node.input[0])
        return node

    for name in (output, *label_outputs):
        node = traced(name)
        if node is None:
            continue
        labels = _attr_labels(node)
        if labels:
            return labels
        if node.op_type == "ArrayFeatureExtractor" and node.input[0] in constants:
            try:
                table = numpy_helper.to_array(constants[node.input[0]]).reshape(-1).tolist()
            except Exception:  # a malformed constant: no class labels, the labels are indices
                return None
            if all(isinstance(v, (bytes, str)) for v in table) or all(isinstance(v, int) for v in table):
                return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in table)
    found = {labels for n in graph.node if (labels := _attr_labels(n))}
    return found.pop() if len(found) == 1 else None


def _class_index(classes: tuple | None) -> dict[str, int] | None:
    """str(class label) -> its column; None when there are no labels or they are the indices 0..k-1."""
    if classes is None or list(classes) == list(range(len(classes))):
        return None
    return {str(c): i for i, c in enumerate(classes)}


def zipmap_array(maps, classes: tuple, path: Path) -> np.ndarray:
    """ZipMap's list of {class: probability} -> (batch, classes) float32, columns in the order of `classes`."""
    try:
        return np.array([[m[c] for c in classes] for m in maps], dtype=np.float32).reshape(len(maps), len(classes))
    except (KeyError, TypeError) as exc:
        raise GateInputError(f"gives a map of class probabilities without the class {exc}", path=path,
                             fix="convert the model without ZipMap (skl2onnx: options={'zipmap': False})") from None
