"""What was measured: one result type, read by the judge and every report.

Format history of results.json (`format`):
  1 - first version: base, candidates[metrics, groupings], data, provenance.
      Later additions with defaults (format 1 files without them still read):
      model footprint (weights by dtype, sparsity, MACs); candidates[speed, targets];
      provenance.target (a `gate measure --target` file);
      metrics[].relative_interval and evidence.relative_grid (relative bounds judged on a
      paired ratio, not on the delta scaled by |base|); candidates[flips, calibration] (changed
      predictions for flips.csv, reliability tables); groupings[].kind (group | class | perturbation:
      what a per: rule judges; before it, a grouping named "class" was the classes) and
      groups[].parameters (a perturbation's kind and parameters); candidates[layers] (where the
      error enters: tensor by tensor agreement with the base).

The format is described by the JSON Schema gate/schemas/results.schema.json (SCHEMA; a change of shape
changes it, and FORMAT when old readers would misread the file) and read only through gate/contract.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from gate.intervals import Interval

FORMAT = 1
SCHEMA = Path(__file__).resolve().parent / "schemas" / "results.schema.json"  # of {"gate_results": ...}


def _interval(d: dict | None) -> Interval | None:
    return Interval(**d) if d else None


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    metric: str
    n: int
    base: float | None = None
    candidate: float | None = None
    delta: float | None = None  # candidate - base
    delta_interval: Interval | None = None
    candidate_interval: Interval | None = None
    # interval of the relative change candidate / base - 1 (for max_relative_drop / _increase), built
    # with the base's own sampling error; never below -1 for a non-negative metric. None in files
    # written before it existed (the judge then scales the delta interval by |base|)
    relative_interval: Interval | None = None
    discordant_rate: float | None = None  # paired proportions: share of samples that differ
    unavailable: str | None = None  # why it could not be measured
    # what the judge needs to test this metric against any bound at any level:
    # counts for proportions ({b, c, n, k}), quantile grids for bootstrap ({delta_grid, candidate_grid});
    # relative_grid: quantiles (at stats.QUANTILE_LEVELS) of the relative change, for both kinds;
    # relative_unavailable: why a relative bound cannot be judged (a base not distinguishable from 0)
    evidence: dict | None = None

    def to_dict(self) -> dict:
        # by hand rather than dataclasses.asdict, which deep-copies: a report of 10,000 subgroups has
        # tens of thousands of these
        return {k: (v.to_dict() if isinstance(v, Interval) else v)
                for k, v in ((k, getattr(self, k)) for k in self.__dataclass_fields__)}

    @classmethod
    def from_dict(cls, d: dict) -> MetricResult:
        d = dict(d)
        d["delta_interval"] = _interval(d.get("delta_interval"))
        d["candidate_interval"] = _interval(d.get("candidate_interval"))
        d["relative_interval"] = _interval(d.get("relative_interval"))  # absent before it existed
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    name: str
    path: str
    sha256: str | None = None
    size_bytes: int | None = None
    files: list = field(default_factory=list)  # [{path, size_bytes}] model and external data
    parameters: int | None = None
    output: str | None = None
    output_kind: str | None = None
    # stored weights: parameters_by_dtype, bytes_by_dtype, nonzero_parameters, sparsity, macs, ...
    footprint: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _metrics(d: dict) -> dict[str, MetricResult]:
    return {k: MetricResult.from_dict(v) for k, v in d.items()}


@dataclass(frozen=True, kw_only=True)
class GroupResult:
    """One subgroup: "overall" is the same computation over a smaller mask."""
    key: str  # "EU" or "EU × phone"
    n: int
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    flips: int | None = None
    negative_flips: int | None = None
    parameters: dict | None = None  # a perturbation's {kind, its parameters, seed}; None for a subgroup

    def to_dict(self) -> dict:
        return {"key": self.key, "n": self.n, "flips": self.flips, "negative_flips": self.negative_flips,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, d: dict) -> GroupResult:
        return cls(key=d["key"], n=d["n"], flips=d.get("flips"), negative_flips=d.get("negative_flips"),
                   metrics=_metrics(d["metrics"]), parameters=d.get("parameters"))


@dataclass(frozen=True, kw_only=True)
class GroupingResult:
    """Every subgroup of one group column (or intersection of columns, or the true class), or every
    perturbation of the inputs (each "group" is then all samples, perturbed)."""
    name: str  # "region", "region × device", "class", "perturbation"
    columns: tuple[str, ...]
    groups: tuple[GroupResult, ...]
    gaps: dict[str, MetricResult] = field(default_factory=dict)  # metric -> best-minus-worst gap
    fairness: dict[str, MetricResult] = field(default_factory=dict)  # e.g. demographic_parity_difference
    min_samples: int = 0  # groups below it were left out of the gaps
    kind: str = "group"  # group | class | perturbation (contract.GROUPING_KINDS): the per: rules that judge it

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "columns": list(self.columns), "min_samples": self.min_samples,
                "groups": [g.to_dict() for g in self.groups],
                "gaps": {k: v.to_dict() for k, v in self.gaps.items()},
                "fairness": {k: v.to_dict() for k, v in self.fairness.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> GroupingResult:
        # files from before `kind` existed: the true classes were the grouping named "class"
        kind = d.get("kind") or ("class" if d["name"] == "class" else "group")
        return cls(name=d["name"], kind=kind, columns=tuple(d["columns"]), min_samples=d.get("min_samples", 0),
                   groups=tuple(GroupResult.from_dict(g) for g in d["groups"]),
                   gaps=_metrics(d.get("gaps", {})), fairness=_metrics(d.get("fairness", {})))


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    """Speed and memory of one candidate measured on a named target (`gate measure --target NAME`)."""
    name: str
    host: dict
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    speed: dict | None = None  # settings, run-time summaries, op profile, memory, notes (see speed.py)

    def to_dict(self) -> dict:
        return {"name": self.name, "host": self.host, "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "speed": self.speed}

    @classmethod
    def from_dict(cls, d: dict) -> TargetResult:
        return cls(name=d["name"], host=d.get("host") or {}, metrics=_metrics(d.get("metrics", {})),
                   speed=d.get("speed"))


@dataclass(frozen=True, kw_only=True)
class ReleaseComparison:
    """A candidate against a blessed release (`vs: baseline` / `vs: first_baseline`), paired on the release's
    stored per-sample outputs. status: compared | missing (nothing blessed yet) | different_data (blessed on
    other samples: undecidable) | damaged (the record or its outputs failed their checks: never used)."""
    status: str
    release: dict | None = None  # the blessed release: index, name, model_sha256, blessed_at, forced, reason, ...
    reason: str | None = None
    metrics: dict[str, MetricResult] = field(default_factory=dict)  # delta = candidate - release

    def to_dict(self) -> dict:
        return {"status": self.status, "release": self.release, "reason": self.reason,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ReleaseComparison:
        return cls(status=d["status"], release=d.get("release"), reason=d.get("reason"),
                   metrics=_metrics(d.get("metrics") or {}))


@dataclass(frozen=True, kw_only=True)
class CandidateMeasurements:
    info: ModelInfo
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    groupings: tuple[GroupingResult, ...] = ()
    change_matrix: dict | None = None  # {classes, counts[base][candidate]}
    error: str | None = None  # this candidate could not be measured; the others still are
    error_kind: str | None = None  # "input" (a user mistake: exit 2) or "crash"
    speed: dict | None = None  # details of the speed run on this machine (metrics are in `metrics`)
    targets: dict[str, TargetResult] = field(default_factory=dict)  # measured on named targets
    # NaN or infinite outputs: {count, n, first: [sample indices]}; nothing computed from outputs is judged
    nonfinite: dict | None = None
    notes: tuple[str, ...] = ()  # facts a reader should know (e.g. outputs that depend on the batch size)
    releases: dict[str, ReleaseComparison] = field(default_factory=dict)  # "baseline" / "first_baseline"
    # classification: the changed predictions (gate/measure/flips.py: counts, rows negative first, the largest
    # changes, thumbnails of image inputs), written to flips.csv; None for regression and files before it existed
    flips: dict | None = None
    # reliability tables of base and candidate in the 15 bins of `ece` (gate/measure/calibration.py), or None
    calibration: dict | None = None
    # where the error enters: base and candidate compared tensor by tensor (gate/measure/tensors.py,
    # LayerAgreement.to_dict()); None when the policy turns it off. A diagnosis: the judge never reads it
    layers: dict | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def to_dict(self) -> dict:
        return {"info": self.info.to_dict(), "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "groupings": [g.to_dict() for g in self.groupings],
                "change_matrix": self.change_matrix, "error": self.error, "error_kind": self.error_kind,
                "speed": self.speed, "targets": {k: v.to_dict() for k, v in self.targets.items()},
                "nonfinite": self.nonfinite, "notes": list(self.notes),
                "releases": {k: v.to_dict() for k, v in self.releases.items()},
                "flips": self.flips, "calibration": self.calibration, "layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict) -> CandidateMeasurements:
        return cls(info=ModelInfo(**d["info"]), metrics=_metrics(d["metrics"]),
                   groupings=tuple(GroupingResult.from_dict(g) for g in d.get("groupings", [])),
                   change_matrix=d.get("change_matrix"), error=d.get("error"), error_kind=d.get("error_kind"),
                   speed=d.get("speed"), nonfinite=d.get("nonfinite"), notes=tuple(d.get("notes") or ()),
                   targets={k: TargetResult.from_dict(v) for k, v in (d.get("targets") or {}).items()},
                   releases={k: ReleaseComparison.from_dict(v) for k, v in (d.get("releases") or {}).items()},
                   flips=d.get("flips"), calibration=d.get("calibration"), layers=d.get("layers"))


@dataclass(frozen=True, kw_only=True)
class Measurements:
    task: str
    n_samples: int
    confidence: float
    seed: int
    bootstrap: int
    base: ModelInfo
    candidates: tuple[CandidateMeasurements, ...]
    data: dict  # path, sha256, size_bytes, labels, inputs
    provenance: dict  # versions, host, started, finished, command
    base_metrics: dict[str, float] = field(default_factory=dict)
    format: int = FORMAT

    def to_dict(self) -> dict:
        return {"format": self.format, "task": self.task, "n_samples": self.n_samples,
                "confidence": self.confidence, "seed": self.seed, "bootstrap": self.bootstrap,
                "base": self.base.to_dict(), "base_metrics": self.base_metrics,
                "candidates": [c.to_dict() for c in self.candidates],
                "data": self.data, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict) -> Measurements:
        return cls(format=d["format"], task=d["task"], n_samples=d["n_samples"], confidence=d["confidence"],
                   seed=d["seed"], bootstrap=d["bootstrap"], base=ModelInfo(**d["base"]),
                   base_metrics=d.get("base_metrics", {}),
                   candidates=tuple(CandidateMeasurements.from_dict(c) for c in d["candidates"]),
                   data=d["data"], provenance=d["provenance"])
