"""Every metric the gate knows, one record each: the only table of metrics.

A record says everything the rest of the gate asks about a metric: its direction
(higher or lower is better, so "drop" and "increase" are never ambiguous), its
unit, the per-sample vectors it reads, the function that computes it over an
index set, its interval method, what it means inside a slice, whether a rule may
judge it per subgroup, whether it is the task's headline, and the reference the
tests hold it to. The metric table of docs/metrics.md and the metric part of
policies/schema.json are generated from these records (`python -m gate.docs`).

Adding a metric is one record here, its function in quality.py, and its
reference in tests/test_metric_records.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import partial
from importlib import import_module

# interval methods
PAIRED_PROPORTION = "paired_proportion"  # Tango score interval on the delta, Wilson on the value
PROPORTION = "proportion"  # a share of samples: Wilson interval
BOOTSTRAP = "bootstrap"  # paired bootstrap over samples
EXACT = "exact"  # a property of the file, no sampling error
TIMED = "timed"  # paired rounds: block statistics over the run, see speed.py

QUALITY = "quality"
AGREEMENT = "agreement"
FOOTPRINT = "footprint"
SPEED = "speed"
FAIRNESS = "fairness"  # a property of a grouping (data.groups), not of one group
MEMORY = "memory"  # measured in a subprocess per model

# what a metric means inside a slice (a subgroup, a true class)
SAME = "same"  # the same definition over the slice's samples
SLICE_CLASSES = "slice_classes"  # an average over classes, taken over the slice's own true classes

# per-sample vectors a Predictions holds (gate/predictions.py), which `needs` names
VECTORS = {
    "pred": "predicted class",
    "true_prob": "probability of the true class",
    "true_rank": "rank of the true class",
    "top_prob": "highest class probability (the confidence)",
    "sum_sq_prob": "sum of squared class probabilities",
    "probs": "every class probability (n x k, kept only when a rule needs it)",
    "values": "regression outputs",
}


@dataclass(frozen=True)
class QualityFn:
    """A metric function of gate/measure/quality.py, by name: the registry stays importable without numpy
    (`gate policy check` never loads it). Called as fn(predictions, y, idx=None, **keywords)."""
    attr: str
    keywords: tuple[tuple[str, object], ...] = ()

    def __call__(self, p, y, idx=None, **more) -> float:
        return getattr(import_module("gate.measure.quality"), self.attr)(p, y, idx, **dict(self.keywords), **more)


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str
    tasks: tuple[str, ...]
    method: str  # interval method
    needs_labels: bool = False
    needs_scores: bool = False  # class scores, not only labels
    unit: str = ""
    description: str = ""
    measured: bool = True  # False: known name, not measured by this version
    relative: bool = False  # already a ratio to the base (speedup, compression_ratio)
    count: bool = False  # a whole number (parameters, bytes, MACs): shown without decimals
    fn: QualityFn | None = None  # (Predictions, y, idx) -> float; None: not a function of per-sample vectors
    needs: tuple[str, ...] = ()  # the Predictions vectors fn reads (keys of VECTORS)
    in_slice: str = SAME  # SAME or SLICE_CLASSES
    per_group: bool | None = None  # may be judged per subgroup (None: quality and agreement metrics may)
    headline: bool = False  # the metric shown per subgroup and in charts for its tasks
    default: bool = False  # reported in every run, judged or not
    reference: str = ""  # what the tests hold the value to (tests/test_metric_records.py)
    definition: str = ""  # the formula, for the docs
    # how a BOOTSTRAP interval is drawn (gate/measure/fast.py): "cells" (multinomial over the joint
    # (label, base, candidate) table; for fairness metrics (subgroup, label, base, candidate)), "delong"
    # (roc_auc), "mean" (Poisson weights over a per-sample vector), "moments" (the same weights over several
    # per-sample columns, the metric a function of their means: rmse, r2), "bins" (Poisson sums per
    # confidence bin: ece); "" resamples sample indices and calls fn on each
    resample: str = ""

    def __post_init__(self) -> None:
        if self.per_group is None:
            object.__setattr__(self, "per_group", self.kind in (QUALITY, AGREEMENT))
        unknown = set(self.needs) - set(VECTORS)
        if unknown or self.in_slice not in (SAME, SLICE_CLASSES):
            raise ValueError(f"metric record {self.name}: unknown vectors {sorted(unknown)} or in_slice "
                             f"{self.in_slice!r}")

    @property
    def against_base(self) -> bool:
        """Agreement metrics and ratios already compare with the base: only absolute bounds fit."""
        return self.kind not in (AGREEMENT,) and not self.relative

    @property
    def device(self) -> bool:
        """Measured by running the model on a machine (depends on where: a rule may name a target)."""
        return self.kind in (SPEED, MEMORY)

    def function(self, classes=None):
        """fn, or None; `classes`: inside a slice, its true classes (class averages are taken over them)."""
        if self.fn is not None and self.in_slice == SLICE_CLASSES and classes is not None:
            return partial(self.fn, classes=classes)
        return self.fn


CLS = ("classification",)
REG = ("regression",)
BOTH = ("classification", "regression")

SK = "sklearn.metrics."


def _quality(name: str, *, higher_is_better: bool, tasks=CLS, method=BOOTSTRAP, needs=("pred",),
             needs_scores: bool = False, **more) -> MetricSpec:
    """A metric of the task computed from each model's own per-sample vectors and the labels."""
    return MetricSpec(name=name, higher_is_better=higher_is_better, kind=QUALITY, tasks=tasks, method=method,
                      needs_labels=True, needs_scores=needs_scores, fn=QualityFn(name), needs=needs, **more)


_TOP_K = re.compile(r"^top_([1-9][0-9]?)_accuracy$")
TOP_K_PATTERN = _TOP_K.pattern


def _top_k(k: int, *, default: bool = False) -> MetricSpec:
    return MetricSpec(name=f"top_{k}_accuracy", higher_is_better=True, kind=QUALITY, tasks=CLS,
                      method=PAIRED_PROPORTION, needs_labels=True, needs_scores=True, default=default,
                      fn=QualityFn("top_k_accuracy", (("k", k),)), needs=("true_rank",),
                      reference=SK + "top_k_accuracy_score",
                      description=f"share of samples whose true class is among the top {k} scores")


_SPECS = [
    _quality("accuracy", higher_is_better=True, method=PAIRED_PROPORTION, headline=True, default=True,
             reference=SK + "accuracy_score", description="share of samples predicted right"),
    _quality("balanced_accuracy", higher_is_better=True, default=True,
             resample="cells", reference=SK + "balanced_accuracy_score",
             description="mean recall over classes"),
    _quality("f1_macro", resample="cells", higher_is_better=True, in_slice=SLICE_CLASSES, default=True,
             reference=SK + "f1_score(average='macro')", description="F1, unweighted mean over classes"),
    _quality("f1_weighted", higher_is_better=True, default=True,
             resample="cells", reference=SK + "f1_score(average='weighted')",
             description="F1, mean over classes weighted by support"),
    _quality("precision_macro", resample="cells", higher_is_better=True, in_slice=SLICE_CLASSES, default=True,
             reference=SK + "precision_score(average='macro')",
             description="precision, unweighted mean over classes"),
    _quality("recall_macro", resample="cells", higher_is_better=True, in_slice=SLICE_CLASSES, default=True,
             reference=SK + "recall_score(average='macro')", description="recall, unweighted mean over classes"),
    _top_k(5, default=True),
    _quality("roc_auc", resample="delong", higher_is_better=True, needs=("probs",), needs_scores=True,
             reference=SK + "roc_auc_score(multi_class='ovr', average='macro')",
             description="area under the ROC curve (binary, or one-vs-rest macro)"),
    _quality("log_loss", resample="mean", higher_is_better=False, needs=("true_prob",), needs_scores=True, default=True,
             reference=SK + "log_loss", description="mean negative log-probability of the true class"),
    _quality("ece", resample="bins", higher_is_better=False, needs=("pred", "top_prob"), needs_scores=True,
             reference="numpy (Guo et al. 2017)",
             description="expected calibration error: top-label confidence against accuracy in 15 equal-width "
                         "bins",
             definition="sum over the 15 bins (m-1)/15 < confidence <= m/15 of (samples in bin / n) x "
                        "|accuracy in bin - mean confidence in bin|; confidence = the highest class probability"),
    _quality("brier_score", higher_is_better=False, needs=("true_prob", "sum_sq_prob"),
             resample="mean", needs_scores=True,
             reference=SK + "brier_score_loss(scale_by_half=False)",
             description="mean over samples of the squared distance between the class probabilities and the "
                         "one-hot true class (0 to 2; for two classes twice the positive-class form)",
             definition="mean over samples of sum_k (p_k - [k = y])^2; for two classes this is 2 x "
                        "mean (p_1 - y)^2, scikit-learn's binary brier_score_loss"),
    _quality("mae", resample="mean", higher_is_better=False, tasks=REG, needs=("values",), headline=True, default=True,
             reference=SK + "mean_absolute_error", description="mean absolute error"),
    _quality("rmse", resample="moments", higher_is_better=False, tasks=REG, needs=("values",), default=True,
             reference=SK + "root_mean_squared_error", description="root mean squared error"),
    _quality("r2", resample="moments", higher_is_better=True, tasks=REG, needs=("values",), default=True,
             reference=SK + "r2_score", description="coefficient of determination"),
    MetricSpec(name="flip_rate", higher_is_better=False, kind=AGREEMENT, tasks=CLS, default=True, needs=("pred",),
               method=PROPORTION, description="share of samples whose predicted class changed"),
    MetricSpec(name="negative_flip_rate", higher_is_better=False, kind=AGREEMENT, tasks=CLS, default=True,
               method=PROPORTION, needs_labels=True, needs=("pred",),
               description="share of samples the base got right and the candidate wrong"),
    MetricSpec(name="positive_flip_rate", higher_is_better=True, kind=AGREEMENT, tasks=CLS, default=True,
               method=PROPORTION, needs_labels=True, needs=("pred",),
               description="share of samples the base got wrong and the candidate right"),
    MetricSpec(name="kl_divergence", resample="mean", higher_is_better=False, kind=AGREEMENT, tasks=CLS, default=True,
               method=BOOTSTRAP, needs_scores=True, unit="nats",
               description="mean KL(base || candidate) of the class probabilities, in nats"),
    MetricSpec(name="max_abs_diff", higher_is_better=False, kind=AGREEMENT, tasks=BOTH, default=True,
               method=EXACT, description="largest absolute difference of any output value"),
    MetricSpec(name="cosine_similarity", higher_is_better=True, kind=AGREEMENT, tasks=BOTH,
               resample="mean", default=True,
               method=BOOTSTRAP, description="mean cosine similarity of the output vectors"),
    MetricSpec(name="demographic_parity_difference", higher_is_better=False, kind=FAIRNESS, tasks=CLS,
               method=BOOTSTRAP, resample="cells", description="largest difference in positive-prediction rate "
               "between the subgroups of a group column (binary tasks)"),
    MetricSpec(name="equalized_odds_difference", higher_is_better=False, kind=FAIRNESS, tasks=CLS,
               method=BOOTSTRAP, resample="cells", needs_labels=True, description="larger of the between-subgroup "
               "differences in true-positive and false-positive rate (binary tasks)"),
    MetricSpec(name="model_size_mb", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, default=True,
               method=EXACT, unit="MB", description="model file size with external data, in MB (10^6 bytes)"),
    MetricSpec(name="parameters", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, default=True,
               method=EXACT, count=True, description="number of stored weight values (initializer elements)"),
]

# Model-file facts beyond size and parameters (gate/measure/footprint.py): exact, read from the
# ONNX initializers, always cheap.
_SPECS += [
    MetricSpec(name="nonzero_parameters", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               default=True, count=True, description="stored weight values that are not zero (initializer elements)"),
    MetricSpec(name="sparsity", higher_is_better=True, kind=FOOTPRINT, tasks=BOTH, method=EXACT, default=True,
               description="share of zero values in the weight tensors (initializers of 2 or more dimensions; "
               "a quantized weight counts as zero when it equals its zero point)"),
    MetricSpec(name="compression_ratio", higher_is_better=True, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               relative=True, description="base file size / candidate file size"),
    MetricSpec(name="macs", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, method=EXACT, default=True,
               count=True, description="multiply-accumulates per sample of Conv, ConvTranspose, Gemm, MatMul and their "
               "quantized forms (an estimate: other ops are not counted)"),
]
# bytes of stored weights per data type: bytes_fp32, bytes_int8, ...
DTYPE_NAMES = ("fp32", "fp16", "bf16", "fp64", "fp8", "int8", "uint8", "int4", "uint4", "int16", "uint16",
               "int32", "uint32", "int64", "uint64", "bool")
for _dtype in DTYPE_NAMES:
    _SPECS.append(MetricSpec(name=f"bytes_{_dtype}", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH,
                             method=EXACT, unit="bytes", count=True,
                             description=f"bytes of stored {_dtype} weights (initializers)"))

# Timed on the machine that measures (gate/measure/speed.py), base and candidate interleaved.
PERCENTILES = {"latency_p50_ms": 0.50, "latency_p90_ms": 0.90, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
for _name, _q in PERCENTILES.items():
    _SPECS.append(MetricSpec(name=_name, higher_is_better=False, kind=SPEED, tasks=BOTH, method=TIMED, unit="ms",
                             description=f"{round(_q * 100)}th percentile of the time of one inference call "
                             "at the latency batch size"))
_SPECS += [
    MetricSpec(name="latency_mean_ms", higher_is_better=False, kind=SPEED, tasks=BOTH, method=TIMED, unit="ms",
               description="mean time of one inference call at the latency batch size"),
    MetricSpec(name="throughput", higher_is_better=True, kind=SPEED, tasks=BOTH, method=TIMED, unit="samples/s",
               description="samples per second at the latency batch size, one call at a time"),
    MetricSpec(name="speedup", higher_is_better=True, kind=SPEED, tasks=BOTH, method=TIMED, relative=True,
               description="base latency / candidate latency, from interleaved pairs of calls"),
    MetricSpec(name="energy_per_inference_mj", higher_is_better=False, kind=SPEED, tasks=BOTH, method=TIMED,
               unit="mJ", description="CPU package energy per inference call (RAPL), where the machine exposes it"),
    MetricSpec(name="peak_memory_mb", higher_is_better=False, kind=MEMORY, tasks=BOTH, method=EXACT, unit="MB",
               description="high-water resident memory of a process that loads the model and runs it, minus the "
                           "same process without the model (MB = 10^6 bytes)"),
]

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}


def top_k_of(name: str) -> int | None:
    match = _TOP_K.match(name)
    return int(match.group(1)) if match else None


def get_metric(name: str) -> MetricSpec | None:
    if name in METRICS:
        return METRICS[name]
    k = top_k_of(name)
    return _top_k(k) if k is not None else None


def known_names() -> list[str]:
    return sorted(METRICS)


def default_metrics(task: str) -> list[str]:
    """The metrics reported in every run of a task, in registry order."""
    return [spec.name for spec in _SPECS if spec.default and task in spec.tasks]


def headline_for(task: str) -> str | None:
    """The metric shown per subgroup and in the charts for a task (accuracy, mae)."""
    return next((spec.name for spec in _SPECS if spec.headline and task in spec.tasks), None)


def sample_metrics() -> list[MetricSpec]:
    """Every metric computed by a function of per-sample vectors (what the registry-driven tests run)."""
    return [spec for spec in _SPECS if spec.fn is not None]


# ---- generated text: docs/metrics.md and the metric part of policies/schema.json --------------

DOCS_START, DOCS_END = "<!-- metrics:start -->", "<!-- metrics:end -->"
_INTERVALS = {PAIRED_PROPORTION: "paired score (Tango), Wilson", PROPORTION: "Wilson",
              BOOTSTRAP: "paired bootstrap", EXACT: "exact", TIMED: "paired timing blocks"}
_RESAMPLES = {"cells": "paired bootstrap of the (label, base, candidate) table",
              "delong": "DeLong (paired, midranks)", "mean": "paired Poisson bootstrap (or its normal limit)",
              "moments": "paired Poisson bootstrap of per-sample moments (or their normal limit)",
              "bins": "paired Poisson bootstrap of per-bin sums"}
# a fairness metric's cells are also keyed by the subgroup
_FAIRNESS_CELLS = "paired bootstrap of the (subgroup, label, base, candidate) table"


def _doc_rows() -> list[MetricSpec]:
    """Records in registry order; the top-k family once, as its pattern."""
    rows, top_k_done = [], False
    for spec in _SPECS:
        if top_k_of(spec.name) is not None:
            if top_k_done:
                continue
            top_k_done = True
            spec = replace(spec, name="top_K_accuracy", default=False, description="share of samples whose true "
                           "class is among the top K scores (K = 1 to 99; top_5_accuracy is reported in every run)")
        rows.append(spec)
    return rows


def _interval_text(spec: MetricSpec) -> str:
    if spec.kind == FAIRNESS and spec.resample == "cells":
        return _FAIRNESS_CELLS
    return _RESAMPLES.get(spec.resample) or _INTERVALS[spec.method]


def metrics_markdown() -> str:
    """The metric table of docs/metrics.md (between DOCS_START and DOCS_END)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| metric | better | kind | task | unit | reads | interval | in a slice | per group | default "
             "| meaning |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for spec in _doc_rows():
        reads = ", ".join(f"`{v}`" for v in spec.needs) or "–"
        if spec.needs_labels:
            reads = "labels" if reads == "–" else reads + ", labels"
        slice_text = ("over the slice's classes" if spec.in_slice == SLICE_CLASSES else "same") \
            if spec.per_group else "–"
        meaning = spec.description + (f". Definition: {spec.definition}" if spec.definition else "")
        if spec.headline:
            meaning += " (headline: shown per subgroup and in the charts)"
        lines.append(f"| `{spec.name}` | {'higher' if spec.higher_is_better else 'lower'} | {spec.kind} | "
                     f"{' / '.join(spec.tasks)} | {spec.unit or '–'} | {reads} | "
                     f"{_interval_text(spec)} | "
                     f"{slice_text} | {'yes' if spec.per_group else 'no'} | {'yes' if spec.default else 'no'} | "
                     f"{cell(meaning)} |")
    return "\n".join(lines) + "\n"


def metric_name_schema() -> dict:
    """JSON Schema of a rule's metric: every registered name, or top_K_accuracy."""
    return {"type": "string",
            "anyOf": [{"enum": [name for name in known_names() if top_k_of(name) is None]},
                      {"pattern": TOP_K_PATTERN}],
            "description": "metric name: one of docs/metrics.md, or top_K_accuracy for K = 1 to 99"}
