"""Raw model outputs -> small per-sample vectors, one batch at a time.

Nothing here keeps a model's whole output unless a metric needs it (a record
of gate/measure/registry.py whose `needs` names `probs`, as roc_auc's does);
everything else is a few numbers per sample.

Class indices are stored in the narrowest signed integer type that holds them
(index_dtype): a predicted class and the rank of the true class of a 10-class
model take one byte each instead of eight and four, the labels one instead of
eight, so a million samples cost 27 MB less. Code that combines them
arithmetically (label * k + prediction, codes of cells or bins) widens to
int64 first: in int8, label * 10 + prediction overflows from label 12 on.

The per-sample scores (probability of the true class, top probability, sum of
squared probabilities; KL, cosine and max |diff| against the base) are
computed in float64 and stored in float32 (SCORES): 36 MB less at 1M samples.
Every sum and mean over them is taken in float64 and a value beyond float32's
range keeps its vector in float64; what this moves in a report is in
docs/statistics.md ("Per-sample scores in float32").
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from gate.errors import GateInputError

FIRST_SHOWN = 10  # sample indices named when outputs are not finite
SCORES = np.float32  # the stored type of every per-sample score (computed in float64; see above)
_SCORES_MAX = float(np.finfo(SCORES).max)

LABELS, PROBABILITIES, LOGITS, BINARY_PROBABILITY, BINARY_LOGIT, VALUES = (
    "labels", "probabilities", "logits", "binary_probability", "binary_logit", "values")


@dataclass(frozen=True, kw_only=True)
class Predictions:
    """What the metrics read for one model."""
    kind: str
    pred: np.ndarray | None  # predicted class (classification)
    values: np.ndarray | None  # outputs (regression), (n, m)
    true_prob: np.ndarray | None  # probability of the true class (float32: SCORES)
    true_rank: np.ndarray | None  # how many classes scored above the true one
    probs: np.ndarray | None  # (n, k), only when a metric needs every score
    n_classes: int | None
    top_prob: np.ndarray | None = None  # highest class probability: the model's confidence (calibration)
    sum_sq_prob: np.ndarray | None = None  # sum of the squared class probabilities (Brier score)

    def take(self, idx: np.ndarray) -> Predictions:
        """The same predictions for the samples idx only (every per-sample vector cut alike)."""
        cut = {f.name: getattr(self, f.name)[idx] for f in fields(self)
               if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **cut)


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """Per-sample closeness of a candidate's outputs to the base's."""
    kl: np.ndarray | None
    cosine: np.ndarray | None
    max_abs: np.ndarray | None


def _log_softmax(x: np.ndarray) -> np.ndarray:
    # rows with NaN or inf are flagged by Collector._check_finite and never judged: no warning for them
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - x.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _squeeze(raw: np.ndarray) -> np.ndarray:
    out = raw.reshape(raw.shape[0], -1) if raw.ndim > 2 and all(d == 1 for d in raw.shape[2:]) else raw
    return out


def classify_kind(raw: np.ndarray, scores: str, where: str) -> str:
    raw = _squeeze(raw)
    if raw.ndim == 0 or raw.ndim > 2:
        raise GateInputError(f"gives an output of shape {raw.shape}; a classifier must give (batch,), (batch, 1) "
                             f"or (batch, classes)", path=where, fix="choose another output with `output:`")
    if np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_:
        if raw.ndim == 2 and raw.shape[1] != 1:
            raise GateInputError(f"gives integer outputs of shape {raw.shape}", path=where,
                                 fix="choose a label or score output with `output:`")
        return LABELS
    if not np.issubdtype(raw.dtype, np.floating):
        raise GateInputError(f"gives {raw.dtype} outputs", path=where, fix="choose a numeric output with `output:`")
    binary = raw.ndim == 1 or raw.shape[1] == 1
    in_unit = bool(np.all((raw >= 0) & (raw <= 1)))
    if binary:
        if scores == "probabilities" or (scores == "auto" and in_unit):
            return BINARY_PROBABILITY
        return BINARY_LOGIT
    sums_to_one = in_unit and bool(np.allclose(raw.sum(axis=1), 1.0, atol=1e-3))
    if scores == "probabilities" or (scores == "auto" and sums_to_one):
        return PROBABILITIES
    return LOGITS


def log_probs(raw: np.ndarray, kind: str) -> np.ndarray | None:
    """(batch, classes) log-probabilities, or None for label outputs."""
    raw = _squeeze(raw).astype(np.float64, copy=False)
    if kind == LABELS:
        return None
    if kind in (BINARY_PROBABILITY, BINARY_LOGIT):
        flat = raw.reshape(-1)
        if kind == BINARY_LOGIT:
            logits = np.stack([np.zeros_like(flat), flat], axis=1)
            return _log_softmax(logits)
        p = np.clip(flat, 1e-12, 1 - 1e-12)
        return np.log(np.stack([1 - p, p], axis=1))
    if kind == LOGITS:
        return _log_softmax(raw)
    return np.log(np.clip(raw, 1e-12, None))


def index_dtype(high: int, low: int = 0) -> np.dtype:
    """The narrowest signed integer type holding every value in low..high (int8, int16, int32 or int64)."""
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def narrow_indices(values: np.ndarray) -> np.ndarray:
    """Integer class indices (or labels) in index_dtype of their range: the same values in fewer bytes."""
    if not values.size or not np.issubdtype(values.dtype, np.integer):
        return values
    dtype = index_dtype(int(values.max()), int(values.min()))
    return values if dtype == values.dtype else values.astype(dtype)


class Collector:
    """Accumulates one model's per-sample vectors over the batches. A score output's predicted class and the
    rank of the true class are stored in index_dtype(classes - 1); a label output's predictions in int64."""

    def __init__(self, *, n: int, task: str, scores: str, keep_probs: bool, where: str, labels_where: str,
                 classes: Classes | None = None) -> None:
        self.n, self.task, self.scores, self.keep_probs, self.where = n, task, scores, keep_probs, where
        self.labels_where = labels_where  # the data file: wrong labels are the data's fault, not the model's
        self.classes = classes  # the class names labels were mapped by: the model must score as many
        self.kind: str | None = None
        self.pred = self.values = self.true_prob = self.true_rank = self.probs = None
        self.top_prob = self.sum_sq_prob = None
        self.n_classes: int | None = None
        self.shape: tuple | None = None  # of one sample's output
        self._nonfinite = 0
        self._first_nonfinite: list[int] = []

    @property
    def nonfinite(self) -> dict | None:
        """{count, n, first}: samples whose output holds NaN or an infinity, or None."""
        if not self._nonfinite:
            return None
        return {"count": self._nonfinite, "n": self.n, "first": list(self._first_nonfinite)}

    def _check_finite(self, raw: np.ndarray, start: int) -> None:
        if not np.issubdtype(raw.dtype, np.floating):
            return
        finite = np.isfinite(raw.reshape(raw.shape[0], -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self._nonfinite += int(bad.size)
            room = FIRST_SHOWN - len(self._first_nonfinite)
            self._first_nonfinite.extend(int(start + i) for i in bad[:max(room, 0)])

    def add(self, raw: np.ndarray, labels: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
        """Store this batch; return its log-probabilities (for agreement), if any."""
        if raw.ndim == 0 or raw.shape[0] != stop - start:
            rows = raw.shape[0] if raw.ndim else "no"
            raise GateInputError(f"returned {rows} rows for a batch of {stop - start}", path=self.where,
                                 fix="the first output axis must be the batch axis")
        if self.shape is None:
            self.shape = tuple(raw.shape[1:])
        self._check_finite(raw, start)
        if self.task == "regression":
            batch = _squeeze(raw).astype(np.float64, copy=False).reshape(stop - start, -1)
            if self.values is None:
                self.kind = VALUES
                self.values = np.empty((self.n, batch.shape[1]), dtype=np.float64)
            self.values[start:stop] = batch
            return None
        if self.kind is None:
            self.kind = classify_kind(raw, self.scores, self.where)
            if self.kind == LABELS:  # the model's own label values, whatever their range
                self.pred = np.empty(self.n, dtype=np.int64)
        logp = log_probs(raw, self.kind)
        if logp is None:
            self.pred[start:stop] = _squeeze(raw).reshape(-1)
            return None
        k = logp.shape[1]
        if self.n_classes is None:
            if self.classes is not None and len(self.classes.names) != k:
                raise GateInputError(f"gives {k} class scores, but {self.classes.source} names "
                                     f"{len(self.classes.names)} classes ({listed(self.classes.names)})",
                                     path=self.where, fix="list one class name per score column, in the model's "
                                     "output order (data: classes: in the policy)")
            self.n_classes = k
            self.pred = np.empty(self.n, dtype=index_dtype(k - 1))  # argmax: 0..k-1
            self.true_prob = np.empty(self.n, dtype=SCORES)  # in [0, 1], as top_prob and sum_sq_prob
            self.true_rank = np.empty(self.n, dtype=index_dtype(k - 1))  # classes scored above the true one
            self.top_prob = np.empty(self.n, dtype=SCORES)
            self.sum_sq_prob = np.empty(self.n, dtype=SCORES)
            if self.keep_probs:
                self.probs = np.empty((self.n, k), dtype=np.float32)
        top = logp.argmax(axis=1)
        self.pred[start:stop] = top
        probs = np.exp(logp)
        self.top_prob[start:stop] = probs[np.arange(len(top)), top]
        self.sum_sq_prob[start:stop] = np.einsum("ij,ij->i", probs, probs)
        if self.probs is not None:
            self.probs[start:stop] = probs
        if labels is not None:
            y = _class_indices(labels, k, self.where, self.labels_where)
            true_logp = logp[np.arange(len(y)), y]
            self.true_prob[start:stop] = np.exp(true_logp)
            self.true_rank[start:stop] = (logp > true_logp[:, None]).sum(axis=1)
        return logp

    def result(self) -> Predictions:
        has_scores = self.n_classes is not None
        return Predictions(kind=self.kind or "none", pred=self.pred, values=self.values,
                           true_prob=self.true_prob if has_scores else None,
                           true_rank=self.true_rank if has_scores else None,
                           probs=self.probs, n_classes=self.n_classes,
                           top_prob=self.top_prob if has_scores else None,
                           sum_sq_prob=self.sum_sq_prob if has_scores else None)


def check_comparable(base: Collector, cand: Collector) -> None:
    """A candidate must answer the same question as the base: as many classes, or outputs of one shape.
    Otherwise KL, cosine and flips would be silently dropped or compare unrelated numbers."""
    if base.task == "regression":
        differ = base.values is not None and cand.values is not None and \
            base.values.shape[1] != cand.values.shape[1]
        what = "values per sample"
        b, c = (base.values.shape[1] if base.values is not None else None,
                cand.values.shape[1] if cand.values is not None else None)
    else:  # a label output against a score output is comparable: both predict one of the classes
        differ = base.n_classes is not None and cand.n_classes is not None and base.n_classes != cand.n_classes
        what = "class scores per sample"
        b, c = base.n_classes, cand.n_classes
    if differ:
        raise GateInputError(f"gives {c} {what} (output shape (batch, {', '.join(map(str, cand.shape))})), but the "
                             f"base {Path(base.where).name} gives {b} (output shape "
                             f"(batch, {', '.join(map(str, base.shape))}))", path=cand.where,
                             fix="compare models of the same task and classes; with several outputs choose the "
                                 "matching one with `output:` on the model")


def _class_indices(labels: np.ndarray, k: int, model: str, data: str) -> np.ndarray:
    name = Path(model).name
    if not np.issubdtype(labels.dtype, np.integer):
        raise GateInputError(f"holds {labels.dtype} labels, but {name} gives {k} class scores, so labels must be "
                             f"class indices 0..{k - 1}", path=data,
                             fix="store the labels as integers 0..k-1 in the order of the model's outputs, or "
                                 "name the classes in that order under data: classes: in the policy")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = int(labels.max() if labels.max() >= k else labels.min())
        raise GateInputError(f"holds the label {bad}, but {name} gives only {k} class scores", path=data,
                             fix=f"labels must lie in 0..{k - 1}, or choose the model output with all classes")
    return labels


@dataclass(frozen=True)
class Classes:
    """The class names of the model's score columns, in order, and where they come from (for messages)."""
    names: tuple
    source: str  # "data.classes in the policy" or "the base model base.onnx"

    @property
    def are_indices(self) -> bool:
        """Integer class labels 0..k-1: a label is its own index."""
        return list(self.names) == list(range(len(self.names)))


def listed(names, limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def resolve_classes(declared: tuple | None, base_classes: tuple | None, *, policy: str, base: str) -> Classes | None:
    """The class names labels are mapped by: the policy's data.classes, or the class labels stored in the base
    model (skl2onnx stores them); when both are given they must agree, name for name and in order."""
    model = Classes(tuple(base_classes), f"the base model {Path(base).name}") if base_classes else None
    if declared is None:
        return model
    given = Classes(tuple(declared), "data.classes in the policy")
    if model is not None and [str(c) for c in given.names] != [str(c) for c in model.names]:
        raise GateInputError(f"data.classes lists {listed(given.names)}, but {model.source} declares the classes "
                             f"{listed(model.names)} for its score columns", path=policy,
                             fix="list the model's classes in its output order under data: classes:, or drop "
                                 "data.classes to use the model's own")
    return given


def check_same_classes(reference: Classes | None, cand_classes: tuple | None, where: str) -> None:
    """A candidate that stores its class labels must have the reference's, in the same order: otherwise its
    score columns mean other classes than the base's."""
    if reference is None or not cand_classes or \
            [str(c) for c in cand_classes] == [str(c) for c in reference.names]:
        return
    raise GateInputError(f"declares the classes {listed(cand_classes)}, but {reference.source} has "
                         f"{listed(reference.names)}", path=where,
                         fix="train and convert the candidate with the same classes as the base (in the same order)")


def label_indices(labels: np.ndarray | None, classes: Classes | None, *, data: str, model: str) -> np.ndarray | None:
    """The data's labels as class indices in the order of the model's score columns, in the narrowest integer
    type that holds them (narrow_indices: an in-memory copy of a memory-mapped column). Text labels (and integer
    labels when the model's class labels are other integers, as 1..k) are looked up in `classes`; a label
    there is not is refused, by name. Integer labels are indices otherwise (checked against the scores later)."""
    if labels is None:
        return None
    if labels.dtype.kind == "u":  # unsigned labels meet signed predictions in sums: uint64 + int64 is float64
        if labels.size and int(labels.max()) > np.iinfo(np.int64).max:
            raise GateInputError(f"holds the label {int(labels.max())}, beyond any class index", path=data,
                                 fix="store the labels as class indices 0..k-1")
        labels = labels.astype(np.int64)
    text = labels.dtype.kind in "USO"
    if not text and not (np.issubdtype(labels.dtype, np.integer) and classes is not None and
                         not classes.are_indices and all(isinstance(c, int) for c in classes.names)):
        return narrow_indices(labels)
    if classes is None:
        shown = listed([str(v) for v in dict.fromkeys(np.asarray(labels[:1000]).astype(str).tolist())], limit=5)
        raise GateInputError(f"holds text labels ({shown}), but {Path(model).name} names no class labels to map "
                             f"them to its score columns", path=data,
                             fix="name the classes in the model's output order under data: classes: in the policy "
                                 "(e.g. classes: [cat, dog]), or store the labels as class indices 0..k-1")
    index = {str(c): i for i, c in enumerate(classes.names)}
    keys = np.asarray(labels).astype(str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    codes = np.empty(len(uniq), dtype=np.int64)
    for i, value in enumerate(uniq.tolist()):
        code = index.get(value)
        if code is None:
            row = int(np.flatnonzero(keys == value)[0])
            shown = labels[row].item() if hasattr(labels[row], "item") else labels[row]
            shown = shown.decode("utf-8", "replace") if isinstance(shown, bytes) else shown
            raise GateInputError(f"holds the label {shown!r} (first at sample {row}), which is not a class of "
                                 f"{classes.source}; the known classes are {listed(classes.names)}", path=data,
                                 fix="drop the samples of that class, or correct the label; with data.classes, "
                                     "list every class in the model's output order")
        codes[i] = code
    return narrow_indices(codes)[inverse.reshape(-1)]


def _put(vector: np.ndarray, start: int, stop: int, values) -> np.ndarray:
    """values into vector[start:stop]; a float32 vector becomes float64 first when one of them is finite but
    beyond float32's range (it would be stored as an infinity). Returns the vector (or its float64 copy)."""
    if vector.dtype == SCORES and np.any(np.isfinite(values) & (np.abs(values) > _SCORES_MAX)):
        vector = vector.astype(np.float64)
    vector[start:stop] = values
    return vector


class AgreementCollector:
    """Per-sample KL, cosine and max |diff| of a candidate against the base, batch by batch, stored in SCORES
    (float64 for KL or max |diff| once one of them is beyond float32's range)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.kl = np.full(n, np.nan, dtype=SCORES)
        self.cosine = np.full(n, np.nan, dtype=SCORES)  # in [-1, 1]
        self.max_abs = np.full(n, np.nan, dtype=SCORES)
        self.has_kl = True
        self.comparable = True

    def add(self, base_raw: np.ndarray, cand_raw: np.ndarray, base_logp, cand_logp, start: int, stop: int) -> None:
        if base_logp is None or cand_logp is None or base_logp.shape != cand_logp.shape:
            self.has_kl = False
        else:
            p = np.exp(base_logp)
            self.kl = _put(self.kl, start, stop, np.maximum((p * (base_logp - cand_logp)).sum(axis=1), 0.0))
        a = base_raw.reshape(stop - start, -1).astype(np.float64, copy=False)
        b = cand_raw.reshape(stop - start, -1).astype(np.float64, copy=False)
        if a.shape != b.shape:
            self.comparable = False
            return
        self.max_abs = _put(self.max_abs, start, stop, np.abs(a - b).max(axis=1) if a.shape[1] else 0.0)
        norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        norms = norm_a * norm_b
        dots = np.einsum("ij,ij->i", a, b)
        both_zero = (norm_a == 0) & (norm_b == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
        self.cosine[start:stop] = np.where(both_zero, 1.0, cos)

    def result(self) -> Agreement:
        return Agreement(kl=self.kl if self.has_kl else None,
                         cosine=self.cosine if self.comparable else None,
                         max_abs=self.max_abs if self.comparable else None)
