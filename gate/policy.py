"""Policy YAML -> Policy: validated in full, every error with file and line."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gate.errors import GateInputError
from gate.measure.registry import FAIRNESS, FOOTPRINT, MEMORY, QUALITY, SPEED, get_metric, known_names
from gate.resources import policies_dir
from gate.schema import AnyOf, DictOf, ListOf, Num, Obj, Problem, Str, where

ABSOLUTE_BOUNDS = ("min", "max")
DROP_BOUNDS = ("max_drop", "max_relative_drop")
INCREASE_BOUNDS = ("max_increase", "max_relative_increase")
BOUNDS = ABSOLUTE_BOUNDS + DROP_BOUNDS + INCREASE_BOUNDS

_MODEL = AnyOf((
    Str(description="path to the model file, relative to the policy file"),
    Obj({"path": Str(description="path to the model file"),
         "output": Str(description="name of the model output to judge, when it has several"),
         "factory": Str(description="for .safetensors weights: package.module:function that builds the "
                        "torch model, imported from the policy file's directory (trusted repository code)")},
        required=("path",)),
), description="a model: a path, or {path, output, factory}")

_COLUMNS = AnyOf((Str(), ListOf(Str(), min_items=1)),
                 description="a data key or column, or a list of columns")

_RULE_FIELDS: dict = {
    "metric": Str(description="metric name, e.g. accuracy, flip_rate, model_size_mb"),
    "name": Str(description="optional label shown in reports"),
    "min": Num(description="candidate value must be >= min"),
    "max": Num(description="candidate value must be <= max"),
    "max_drop": Num(minimum=0, description="higher-is-better metrics: base - candidate <= max_drop (metric units)"),
    "max_relative_drop": Num(minimum=0, maximum=1, description="higher-is-better metrics: (base - candidate) / base <= this fraction"),
    "max_increase": Num(minimum=0, description="lower-is-better metrics: candidate - base <= max_increase (metric units)"),
    "max_relative_increase": Num(minimum=0, description="lower-is-better metrics: (candidate - base) / base <= this fraction"),
    "severity": Str(enum=("fail", "warn"), description="what breaking this rule does (default fail)"),
    "per": Str(enum=("group", "class"), description="apply to every subgroup of every data.groups column, "
               "or to every true class"),
    "scope": Str(enum=("each", "worst_group", "gap"), description="with per: each subgroup (default), the worst "
                 "subgroup's value, or the best-minus-worst gap"),
    "min_samples": Num(minimum=1, integer=True, description="subgroups smaller than this are reported as too "
                       "small to judge (default 30)"),
    "target": Str(description="speed and memory metrics: judge the numbers measured on this latency.targets "
                  "entry (`gate measure --target NAME` on that device)"),
}

_LATENCY_FIELDS: dict = {
    "batch_size": Num(minimum=1, integer=True, description="samples per timed inference call (default 1)"),
    "threads": Num(minimum=1, integer=True, description="intra-op threads (default 1); never more than the CPUs "
                   "the process may use"),
    "warmup": Num(minimum=0, integer=True, description="untimed calls per model before timing (default 20)"),
    "min_runs": Num(minimum=1, integer=True, description="timed calls per model before the first look "
                    "(default 100)"),
    "min_time_s": Num(minimum=0, description="seconds of timed calls before the first look (default 1)"),
    "max_time_s": Num(minimum=0, description="cap on the timed calls, in seconds; a borderline result is "
                      "measured again until then (default 10)"),
    "provider": Str(description="onnxruntime execution provider (default CPUExecutionProvider)"),
}

SCHEMA = Obj(
    {
        "version": Num(minimum=1, maximum=1, integer=True, description="policy format version (1)"),
        "base": _MODEL,
        "candidates": DictOf(_MODEL, description="candidate name -> model"),
        "data": Obj({
            "path": Str(description="calibration data: .npz or .csv, relative to the policy file"),
            "inputs": DictOf(_COLUMNS, description="model input name -> data key or column(s); inferred when the model has one input"),
            "labels": Str(description="data key or column with the true labels / targets"),
            "groups": ListOf(_COLUMNS, description="subgroup columns (per-group rules arrive with a later version)"),
        }, required=("path",), description="the calibration data"),
        "task": Str(enum=("classification", "regression"), description="what the model predicts (default classification)"),
        "output": Str(description="model output to judge when models have several outputs"),
        "scores": Str(enum=("auto", "logits", "probabilities"), description="how to read classifier score outputs (default auto)"),
        "confidence": Num(exclusive_minimum=0.5, exclusive_maximum=1, description="confidence level of every interval (default 0.95)"),
        "inconclusive": Str(enum=("fail", "warn"), description="what a rule the data cannot decide does (default fail)"),
        "bootstrap": Num(minimum=100, maximum=100000, integer=True, description="bootstrap resamples for non-proportion metrics (default 1000)"),
        "seed": Num(minimum=0, integer=True, description="seed of every random choice (default 0)"),
        "batch_size": Num(minimum=1, integer=True, description="samples per inference batch for models with a dynamic batch axis (default 1024)"),
        "correction": Str(enum=("none", "bonferroni", "holm"), description="family-wise error control over the "
                          "subgroups of a per-group rule (default holm)"),
        "small_groups": Str(enum=("warn", "fail"), description="what a subgroup below min_samples does "
                            "(default warn)"),
        "max_file_mb": Num(exclusive_minimum=0, description="refuse model and data files larger than this, before loading (default 4096)"),
        "latency": Obj({**_LATENCY_FIELDS,
                        "targets": DictOf(Obj(dict(_LATENCY_FIELDS), description="a device profile: settings "
                                              "over the latency block's"),
                                          description="named device profiles, measured with `gate measure "
                                                      "--target NAME` on that device")},
                       description="how speed and memory are measured (only when a rule asks for them)"),
        "rules": ListOf(Obj(_RULE_FIELDS, required=("metric",)), min_items=1, description="the rules every candidate must meet"),
    },
    required=("version", "rules"),
    description="compression gate policy",
)


def json_schema() -> dict:
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema",
           "title": "compression gate policy"}
    out.update(SCHEMA.schema())
    return out


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    name: str
    path: Path
    output: str | None = None
    factory: str | None = None  # package.module:function for .safetensors weights
    factory_root: Path | None = None  # the policy file's directory, where the factory is imported from


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    path: Path
    inputs: dict[str, Any] = field(default_factory=dict)
    labels: str | None = None
    groups: tuple = ()


@dataclass(frozen=True, kw_only=True)
class Rule:
    index: int  # 1-based, as users count
    line: int | None
    metric: str
    bound_kind: str
    bound: float
    severity: str = "fail"
    label: str | None = None
    per: str | None = None  # "group" | "class"
    scope: str = "each"  # "each" | "worst_group" | "gap"
    min_samples: int = 30
    target: str | None = None  # a latency.targets name: judged on what was measured there

    @property
    def text(self) -> str:
        if self.label:
            return self.label
        what = f"{self.metric} {self.scope}" if self.scope != "each" else self.metric
        where = f" per {self.per}" if self.per else ""
        on = f" on {self.target}" if self.target else ""
        return f"{what} {self.bound_kind} {self.bound:g}{where}{on}"

    @property
    def grouped(self) -> bool:
        """Judged over subgroups rather than over all samples at once."""
        spec = get_metric(self.metric)
        return self.per is not None or (spec is not None and spec.kind == FAIRNESS)


@dataclass(frozen=True, kw_only=True)
class Policy:
    source: str  # file path or "preset:NAME"
    text: str
    sha256: str
    base: ModelRef | None
    candidates: tuple[ModelRef, ...]
    data: DataSpec | None
    rules: tuple[Rule, ...]
    task: str = "classification"
    output: str | None = None
    scores: str = "auto"
    confidence: float = 0.95
    inconclusive: str = "fail"
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 1024
    correction: str = "holm"
    small_groups: str = "warn"
    max_file_mb: float = 4096.0
    latency: dict = field(default_factory=dict)


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None,
              problems: list | None = None) -> dict:
    """path -> 1-based line, and duplicate keys (which PyYAML silently merges)."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen and problems is not None:
                problems.append(Problem(path + (key,), f"duplicate key '{key}' (line {key_node.start_mark.line + 1})."))
            seen.add(key)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_map(item, path + (i,), out, problems)
    return out


def _line_of(lines: dict, path: tuple) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _raise(problems: list[Problem], source: str, lines: dict) -> None:
    if not problems:
        return
    ordered = sorted(problems, key=lambda p: (_line_of(lines, p.path) or 0))
    first = ordered[0]
    rest = [f"{source}:{_line_of(lines, p.path) or '?'}: {where(p.path)} {p.message}" for p in ordered[1:]]
    message = f"{where(first.path)} {first.message}"
    if rest:
        message += "\n" + "\n".join(rest)
    raise GateInputError(message, path=source, line=_line_of(lines, first.path),
                         fix="edit the policy; `gate policy schema` prints every allowed key")


def _group_problems(raw: dict, spec, bound: str, path: tuple, has_groups: bool | None) -> list[Problem]:
    problems = []
    per, scope, name = raw.get("per"), raw.get("scope"), raw.get("metric")
    if spec.kind == FAIRNESS:
        if per == "class":
            problems.append(Problem(path + ("per",), f"'{name}' compares the subgroups of data.groups; drop per: class."))
        if scope:
            problems.append(Problem(path + ("scope",), f"'{name}' is already a difference between subgroups; drop scope."))
    elif scope and not per:
        problems.append(Problem(path + ("scope",), "needs per: group or per: class to say which subgroups."))
    if (per or spec.kind == FAIRNESS) and spec.kind in (FOOTPRINT, SPEED, MEMORY):
        problems.append(Problem(path + ("per",), f"'{name}' is a property of the model, not of a subgroup; drop per."))
    if scope == "gap":
        if spec.kind != QUALITY:
            problems.append(Problem(path + ("scope",), f"a gap is taken of quality metrics; '{name}' is not one."))
        if bound not in ("max", "max_increase", "max_relative_increase"):
            problems.append(Problem(path + (bound,), "a gap is lower-is-better: use max, max_increase or "
                                    "max_relative_increase."))
    if (per == "group" or spec.kind == FAIRNESS) and has_groups is False:
        problems.append(Problem(path, f"judges subgroups, but data.groups names no group column. Add e.g. "
                                "groups: [region] under data:."))
    if "min_samples" in raw and not (per or spec.kind == FAIRNESS):
        problems.append(Problem(path + ("min_samples",), "only applies to per-group rules; add per: group."))
    return problems


def _target_problems(raw: dict, spec, path: tuple, targets: dict) -> list[Problem]:
    target, name = raw.get("target"), raw.get("metric")
    if target is None or not isinstance(target, str):
        return []
    if not spec.device:
        return [Problem(path + ("target",), f"'{name}' does not depend on the device it runs on; drop target "
                        "(only speed and memory metrics are measured per target).")]
    if target not in targets:
        hint = difflib.get_close_matches(target, list(targets), n=1)
        if hint:
            extra = f" Did you mean '{hint[0]}'?"
        elif targets:
            extra = f" Defined: {', '.join(targets)}."
        else:
            extra = f" Define it under latency: targets: {{{target}: {{threads: 1}}}}."
        return [Problem(path + ("target",), f"names the target '{target}', which latency.targets does not "
                        f"define.{extra}")]
    return []


def _latency_problems(latency: Any) -> list[Problem]:
    """max_time_s caps the timed loop, so it cannot be below min_time_s (a target inherits both)."""
    if not isinstance(latency, dict):
        return []
    problems = []
    targets = latency.get("targets") if isinstance(latency.get("targets"), dict) else {}
    for where, values in [(("latency",), latency)] + [(("latency", "targets", k), {**latency, **v})
                                                       for k, v in targets.items() if isinstance(v, dict)]:
        lo, hi = values.get("min_time_s", 1.0), values.get("max_time_s", 10.0)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi < lo:
            problems.append(Problem(where + ("max_time_s",), f"({hi:g}) is below min_time_s ({lo:g}); it caps "
                                    "the timed calls, so raise it or lower min_time_s."))
    return problems


def _rule_problems(raw: dict, i: int, task: str, has_groups: bool | None = None,
                   targets: dict | None = None) -> list[Problem]:
    path = ("rules", i)
    problems = []
    name = raw.get("metric")
    spec = get_metric(name) if name else None
    if name and spec is None:
        hint = difflib.get_close_matches(name, known_names(), n=1)
        extra = f" Did you mean '{hint[0]}'?" if hint else " `gate policy schema` lists the rule keys; see the README for metrics."
        problems.append(Problem(path + ("metric",), f"unknown metric '{name}'.{extra}"))
    bounds = [b for b in BOUNDS if b in raw]
    if len(bounds) != 1:
        got = ", ".join(bounds) if bounds else "none"
        problems.append(Problem(path, f"needs exactly one bound ({', '.join(BOUNDS)}); got {got}. Write one rule per bound."))
    if spec is None or len(bounds) != 1:
        return problems
    bound = bounds[0]
    problems.extend(_group_problems(raw, spec, bound, path, has_groups))
    problems.extend(_target_problems(raw, spec, path, targets or {}))
    if raw.get("scope") == "gap":
        return problems  # a gap is always lower-is-better, whatever the metric
    if bound not in ABSOLUTE_BOUNDS:
        if not spec.against_base:
            problems.append(Problem(path + (bound,), f"'{name}' already compares the candidate with the base; use min or max."))
        elif bound in DROP_BOUNDS and not spec.higher_is_better:
            problems.append(Problem(path + (bound,), f"'{name}' is lower-is-better, so a regression is an increase; use "
                                    f"{bound.replace('drop', 'increase')}."))
        elif bound in INCREASE_BOUNDS and spec.higher_is_better:
            problems.append(Problem(path + (bound,), f"'{name}' is higher-is-better, so a regression is a drop; use "
                                    f"{bound.replace('increase', 'drop')}."))
    if task not in spec.tasks:
        problems.append(Problem(path + ("metric",), f"'{name}' is a {' / '.join(spec.tasks)} metric, "
                                f"but the policy's task is {task}."))
    return problems


def _model(value: Any, name: str, root: Path) -> ModelRef | None:
    if value is None:
        return None
    if isinstance(value, str):
        return ModelRef(name=name, path=(root / value))
    return ModelRef(name=name, path=root / value["path"], output=value.get("output"), factory=value.get("factory"),
                    factory_root=root if value.get("factory") else None)


def parse_policy(text: str, source: str, root: Path) -> Policy:
    """Validate a policy text completely; paths are resolved against `root`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise GateInputError(f"is not valid YAML: {getattr(exc, 'problem', exc)}", path=source, line=line,
                             fix="check the indentation and quoting at that line") from None
    if node is None:
        raise GateInputError("is empty", path=source, fix="start from a preset in policies/ or the README")
    problems: list[Problem] = []
    lines = _line_map(node, problems=problems)
    raw = yaml.SafeLoader(text).get_single_data()
    checked = SCHEMA.check(raw, (), problems)
    if isinstance(raw, dict) and isinstance(raw.get("rules"), list):
        task = raw.get("task", "classification")
        data = raw.get("data")
        # unknown when the data comes from --data alone: checked again when measuring
        has_groups = bool(data.get("groups")) if isinstance(data, dict) else None
        latency = raw.get("latency") if isinstance(raw.get("latency"), dict) else {}
        targets = latency.get("targets") if isinstance(latency.get("targets"), dict) else {}
        for i, rule in enumerate(raw["rules"]):
            if isinstance(rule, dict):
                problems.extend(_rule_problems(rule, i, task, has_groups, targets))
    if isinstance(raw, dict):
        problems.extend(_latency_problems(raw.get("latency")))
    _raise(problems, source, lines)

    rules = []
    for i, r in enumerate(checked["rules"]):
        bound_kind = next(b for b in BOUNDS if b in r)
        rules.append(Rule(index=i + 1, line=_line_of(lines, ("rules", i)), metric=r["metric"],
                          bound_kind=bound_kind, bound=float(r[bound_kind]),
                          severity=r.get("severity", "fail"), label=r.get("name"), per=r.get("per"),
                          scope=r.get("scope", "each"), min_samples=r.get("min_samples", 30),
                          target=r.get("target")))
    data = checked.get("data")
    data_spec = None
    if data:
        data_spec = DataSpec(path=root / data["path"], inputs=dict(data.get("inputs", {})),
                             labels=data.get("labels"), groups=tuple(
                                 tuple(g) if isinstance(g, list) else g for g in data.get("groups", [])))
    candidates = tuple(_model(v, k, root) for k, v in checked.get("candidates", {}).items())
    return Policy(
        source=source, text=text, sha256=hashlib.sha256(text.encode()).hexdigest(),
        base=_model(checked.get("base"), "base", root), candidates=candidates, data=data_spec,
        rules=tuple(rules),
        **{k: checked[k] for k in ("task", "output", "scores", "confidence", "inconclusive",
                                   "bootstrap", "seed", "batch_size", "max_file_mb", "latency",
                                   "correction", "small_groups")
           if k in checked},
    )


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(policies_dir().glob("*.yaml"))}


def load_policy(spec: str | Path) -> Policy:
    """A policy file, or the name of a shipped preset."""
    path = Path(spec)
    if not path.exists():
        shipped = presets()
        if str(spec) in shipped:
            preset = shipped[str(spec)]
            return parse_policy(preset.read_text(encoding="utf-8"), f"preset:{spec}", Path.cwd())
        hint = difflib.get_close_matches(str(spec), list(shipped), n=1)
        fix = f"did you mean the preset '{hint[0]}'?" if hint else \
            f"give a policy file, or a preset name: {', '.join(shipped)}"
        raise GateInputError("no such policy file or preset", path=spec, fix=fix)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GateInputError(f"cannot be read: {exc}", path=path, fix="give a readable UTF-8 YAML file") from None
    return parse_policy(text, str(path), path.resolve().parent)


def with_overrides(policy: Policy, *, base: str | None = None, candidates: list[str] | None = None,
                   data: str | None = None) -> Policy:
    """Command-line flags win over the policy; their paths are relative to the working directory."""
    changes: dict[str, Any] = {}
    if base:
        changes["base"] = ModelRef(name="base", path=Path(base))
    if candidates:
        refs = []
        for item in candidates:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).stem, item
            refs.append(ModelRef(name=name, path=Path(path)))
        names = [r.name for r in refs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise GateInputError(f"two candidates are named {dupes[0]!r}", path="--candidate",
                                 fix="name them: --candidate int8=a/model.onnx --candidate fp16=b/model.onnx")
        changes["candidates"] = tuple(refs)
    if data:
        old = policy.data
        changes["data"] = DataSpec(path=Path(data), inputs=old.inputs if old else {},
                                   labels=old.labels if old else None, groups=old.groups if old else ())
    return dataclasses.replace(policy, **changes) if changes else policy


def require_runnable(policy: Policy) -> None:
    missing = [what for what, value in (("a base model", policy.base), ("calibration data", policy.data))
               if value is None]
    if not policy.candidates:
        missing.append("at least one candidate")
    if missing:
        raise GateInputError(f"does not say {', '.join(missing)}", path=policy.source,
                             fix="add base:, candidates: and data: to the policy, or pass --base, --candidate, --data")
