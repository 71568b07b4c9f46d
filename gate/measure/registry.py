"""Every metric the gate knows, with its direction, in one place.

Whether a change is a regression depends only on this table (higher or lower
is better), so "drop" and "increase" are never ambiguous elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# interval methods
PAIRED_PROPORTION = "paired_proportion"  # Tango score interval on the delta, Wilson on the value
PROPORTION = "proportion"  # a share of samples: Wilson interval
BOOTSTRAP = "bootstrap"  # paired bootstrap over samples
EXACT = "exact"  # a property of the file, no sampling error

QUALITY = "quality"
AGREEMENT = "agreement"
FOOTPRINT = "footprint"
SPEED = "speed"
FAIRNESS = "fairness"  # a property of a grouping (data.groups), not of one group
MEMORY = "memory"  # measured in a subprocess per model


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str
    tasks: tuple[str, ...]
    method: str
    needs_labels: bool = False
    needs_scores: bool = False
    unit: str = ""
    description: str = ""
    measured: bool = True  # False: known name, not measured by this version
    relative: bool = False  # already a ratio to the base (speedup, compression_ratio)

    @property
    def against_base(self) -> bool:
        """Agreement metrics and ratios already compare with the base: only absolute bounds fit."""
        return self.kind not in (AGREEMENT,) and not self.relative

    @property
    def device(self) -> bool:
        """Measured by running the model on a machine (depends on where: a rule may name a target)."""
        return self.kind in (SPEED, MEMORY)


CLS = ("classification",)
REG = ("regression",)
BOTH = ("classification", "regression")

_SPECS = [
    MetricSpec(name="accuracy", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=PAIRED_PROPORTION, needs_labels=True,
               description="share of samples predicted right"),
    MetricSpec(name="balanced_accuracy", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True,
               description="mean recall over classes"),
    MetricSpec(name="f1_macro", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, description="F1, unweighted mean over classes"),
    MetricSpec(name="f1_weighted", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, description="F1, mean over classes weighted by support"),
    MetricSpec(name="precision_macro", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, description="precision, unweighted mean over classes"),
    MetricSpec(name="recall_macro", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, description="recall, unweighted mean over classes"),
    MetricSpec(name="roc_auc", higher_is_better=True, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, needs_scores=True,
               description="area under the ROC curve (binary, or one-vs-rest macro)"),
    MetricSpec(name="log_loss", higher_is_better=False, kind=QUALITY, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, needs_scores=True,
               description="mean negative log-probability of the true class"),
    MetricSpec(name="mae", higher_is_better=False, kind=QUALITY, tasks=REG,
               method=BOOTSTRAP, needs_labels=True, description="mean absolute error"),
    MetricSpec(name="rmse", higher_is_better=False, kind=QUALITY, tasks=REG,
               method=BOOTSTRAP, needs_labels=True, description="root mean squared error"),
    MetricSpec(name="r2", higher_is_better=True, kind=QUALITY, tasks=REG,
               method=BOOTSTRAP, needs_labels=True, description="coefficient of determination"),
    MetricSpec(name="flip_rate", higher_is_better=False, kind=AGREEMENT, tasks=CLS,
               method=PROPORTION, description="share of samples whose predicted class changed"),
    MetricSpec(name="negative_flip_rate", higher_is_better=False, kind=AGREEMENT, tasks=CLS,
               method=PROPORTION, needs_labels=True,
               description="share of samples the base got right and the candidate wrong"),
    MetricSpec(name="positive_flip_rate", higher_is_better=True, kind=AGREEMENT, tasks=CLS,
               method=PROPORTION, needs_labels=True,
               description="share of samples the base got wrong and the candidate right"),
    MetricSpec(name="kl_divergence", higher_is_better=False, kind=AGREEMENT, tasks=CLS,
               method=BOOTSTRAP, needs_scores=True,
               description="mean KL(base || candidate) of the class probabilities, in nats"),
    MetricSpec(name="max_abs_diff", higher_is_better=False, kind=AGREEMENT, tasks=BOTH,
               method=EXACT, description="largest absolute difference of any output value"),
    MetricSpec(name="cosine_similarity", higher_is_better=True, kind=AGREEMENT, tasks=BOTH,
               method=BOOTSTRAP, description="mean cosine similarity of the output vectors"),
    MetricSpec(name="demographic_parity_difference", higher_is_better=False, kind=FAIRNESS, tasks=CLS,
               method=BOOTSTRAP, description="largest difference in positive-prediction rate between the "
               "subgroups of a group column (binary tasks)"),
    MetricSpec(name="equalized_odds_difference", higher_is_better=False, kind=FAIRNESS, tasks=CLS,
               method=BOOTSTRAP, needs_labels=True, description="larger of the between-subgroup differences in "
               "true-positive and false-positive rate (binary tasks)"),
    MetricSpec(name="model_size_mb", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH,
               method=EXACT, unit="MB", description="model file size with external data, in MB (10^6 bytes)"),
    MetricSpec(name="parameters", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH,
               method=EXACT, description="number of stored weight values (initializer elements)"),
]

# Model-file facts beyond size and parameters (gate/measure/footprint.py): exact, read from the
# ONNX initializers, always cheap.
_SPECS += [
    MetricSpec(name="nonzero_parameters", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               description="stored weight values that are not zero (initializer elements)"),
    MetricSpec(name="sparsity", higher_is_better=True, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               description="share of zero values in the weight tensors (initializers of 2 or more dimensions; "
               "a quantized weight counts as zero when it equals its zero point)"),
    MetricSpec(name="compression_ratio", higher_is_better=True, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               relative=True, description="base file size / candidate file size"),
    MetricSpec(name="macs", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH, method=EXACT,
               description="multiply-accumulates per sample of Conv, ConvTranspose, Gemm, MatMul and their "
               "quantized forms (an estimate: other ops are not counted)"),
]
# bytes of stored weights per data type: bytes_fp32, bytes_int8, ...
DTYPE_NAMES = ("fp32", "fp16", "bf16", "fp64", "fp8", "int8", "uint8", "int4", "uint4", "int16", "uint16",
               "int32", "uint32", "int64", "uint64", "bool")
for _dtype in DTYPE_NAMES:
    _SPECS.append(MetricSpec(name=f"bytes_{_dtype}", higher_is_better=False, kind=FOOTPRINT, tasks=BOTH,
                             method=EXACT, unit="bytes",
                             description=f"bytes of stored {_dtype} weights (initializers)"))

# Timed on the machine that measures (gate/measure/speed.py), base and candidate interleaved.
TIMED = "timed"  # paired rounds: block statistics over the run, see speed.py
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

_TOP_K = re.compile(r"^top_([1-9][0-9]?)_accuracy$")


def top_k_of(name: str) -> int | None:
    match = _TOP_K.match(name)
    return int(match.group(1)) if match else None


def get_metric(name: str) -> MetricSpec | None:
    if name in METRICS:
        return METRICS[name]
    k = top_k_of(name)
    if k is not None:
        return MetricSpec(name=name, higher_is_better=True, kind=QUALITY, tasks=CLS,
                          method=PAIRED_PROPORTION, needs_labels=True, needs_scores=True,
                          description=f"share of samples whose true class is among the top {k} scores")
    return None


def known_names() -> list[str]:
    return sorted(METRICS) + ["top_5_accuracy"]
