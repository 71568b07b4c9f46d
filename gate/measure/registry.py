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

    @property
    def against_base(self) -> bool:
        """Agreement metrics already compare with the base: only absolute bounds fit."""
        return self.kind not in (AGREEMENT,)


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

# Known names from DESIGN.md that this version does not measure yet: a rule on
# them is an explicit `error`, never a silent pass.
_NOT_YET = ["latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
            "latency_mean_ms", "throughput", "speedup", "peak_memory_mb",
            "compression_ratio", "sparsity", "nonzero_parameters",
            "energy_per_inference_mj"]
_LOWER_BETTER_SPEED = {"throughput": False, "speedup": False, "compression_ratio": False,
                       "sparsity": False}
for _name in _NOT_YET:
    _SPECS.append(MetricSpec(name=_name, higher_is_better=not _LOWER_BETTER_SPEED.get(_name, True),
                             kind=SPEED, tasks=BOTH, method=EXACT, measured=False,
                             description="not measured by this version of the gate"))

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
