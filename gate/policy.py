"""Policy YAML -> Policy: validated in full, every error with file and line."""

from __future__ import annotations

import dataclasses
import difflib
import codecs
import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser as _CParser  # libyaml, shipped in PyYAML's wheels
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

from gate import imagefolder
from gate.errors import GateInputError
from gate.measure.perturb import KINDS as PERTURBATION_KINDS, default_name as perturbation_name
from gate.measure.registry import FAIRNESS, QUALITY, get_metric, known_names, metric_name_schema
from gate.resources import policies_dir
from gate.schema import AnyOf, Bool, DictOf, ListOf, Num, Obj, Problem, Str, key_part, show, where

ABSOLUTE_BOUNDS = ("min", "max")
DROP_BOUNDS = ("max_drop", "max_relative_drop")
VS = ("base", "baseline", "first_baseline")  # what a rule compares the candidate with
INCREASE_BOUNDS = ("max_increase", "max_relative_increase")
BOUNDS = ABSOLUTE_BOUNDS + DROP_BOUNDS + INCREASE_BOUNDS
DEFAULT_MIN_SAMPLES = 30  # subgroups smaller than this are too small to judge
DEFAULT_QUALITY_BATCH = 1024  # samples per inference call for quality, unless the policy says otherwise
MAX_BATCH = 1_000_000
MAX_INPUT_PIXELS = 4096 * 4096  # data.images.size: one sample's pixels (float32 per channel, a batch at a time)
DEFAULT_LAYER_SAMPLES = 256  # samples the tensor-by-tensor comparison runs on (diagnostics.layer_samples)
MAX_LAYER_SAMPLES = 100_000

_MODEL = AnyOf((
    Str(description="path to the model file, relative to the policy file", path=True),
    Obj({"path": Str(description="path to the model file", path=True),
         "output": Str(description="name of the model output to judge, when it has several"),
         "factory": Str(description="for .safetensors weights: package.module:function that builds the "
                        "torch model, imported from the policy file's directory (trusted repository code)")},
        required=("path",)),
), description="a model: a path, or {path, output, factory}")

_COLUMNS = AnyOf((Str(), ListOf(Str(), min_items=1)),
                 description="a data key or column, or a list of columns")
MAX_SAMPLE_AXES = 32  # a declared sample shape (numpy allows 64 axes with the batch's)
_INPUT = AnyOf((
    Str(), ListOf(Str(), min_items=1),
    Obj({"columns": _COLUMNS,
         "shape": ListOf(Num(minimum=1, maximum=2**31 - 1, integer=True), min_items=1,
                         description="the shape of one sample as the model takes it, without the batch axis, "
                         "e.g. [1, 8, 8] for 64 columns; it must hold as many values as the data has per sample")},
        required=("shape",), description="{columns (optional: inferred as without it), shape}"),
), description="a data key or column, a list of columns, or {columns, shape} to feed flat data to an input of "
   "another shape")
_IMAGES = Obj({
    "labels": Str(description="the CSV inside the image folder (relative to it): a `file` column (each image's path "
                  "relative to the folder), the labels and group columns (default labels.csv)", path=True),
    "size": ListOf(Num(minimum=1, maximum=imagefolder.MAX_SIDE, integer=True), min_items=2,
                   description="[height, width] of every sample the model takes"),
    "resize": Num(minimum=1, maximum=imagefolder.MAX_SIDE, integer=True, description="first scale each image so "
                  "its shorter side is this many pixels (aspect ratio kept), then crop (default: no such step)"),
    "crop": Str(enum=imagefolder.CROPS, description="center: take the centred size from the (resized) image; none: "
                "resize the whole image to size (default center with resize, else none)"),
    "interpolation": Str(enum=imagefolder.INTERPOLATIONS, description="Pillow's resampling filter for resize "
                         "(default bilinear)"),
    "scale": Num(minimum=1, description="divide the pixels (0..255) by this, e.g. 255 for values in 0..1 "
                 "(default: pixels as they are)"),
    "mean": ListOf(Num(), min_items=1, description="subtracted per channel after scale, in the order of channels "
                   "(one value: every channel)"),
    "std": ListOf(Num(exclusive_minimum=0), min_items=1, description="divides per channel after mean (one value: "
                  "every channel)"),
    "layout": Str(enum=imagefolder.LAYOUTS, description="NCHW (channels first, default) or NHWC"),
    "channels": Str(enum=imagefolder.CHANNELS, description="RGB (default), BGR or L (grey, one channel); every "
                    "image is converted to it"),
    "max_pixels": Num(minimum=1, maximum=imagefolder.PILLOW_MAX_PIXELS, integer=True, description="refuse an "
                      f"image whose header declares more pixels than this, before decoding it (default "
                      f"{imagefolder.DEFAULT_MAX_PIXELS:,})"),
}, required=("size",), description="data.path is a folder of images: how they are labelled and preprocessed "
   "(without scale, mean and std the model is fed uint8 pixels)")


class MetricName(Str):
    """A rule's metric: any non-empty string here (an unknown name is refused, with the nearest known one, by
    _rule_problems); its JSON Schema is the registry's (every metric name, or top_K_accuracy)."""

    def schema(self):
        return metric_name_schema()


_RULE_FIELDS: dict = {
    "metric": MetricName(),
    "name": Str(description="optional label shown in reports"),
    "min": Num(description="candidate value must be >= min"),
    "max": Num(description="candidate value must be <= max"),
    "max_drop": Num(minimum=0, description="higher-is-better metrics: base - candidate <= max_drop (metric units)"),
    "max_relative_drop": Num(minimum=0, maximum=1, description="higher-is-better metrics: (base - candidate) / base <= this fraction"),
    "max_increase": Num(minimum=0, description="lower-is-better metrics: candidate - base <= max_increase (metric units)"),
    "max_relative_increase": Num(minimum=0, description="lower-is-better metrics: (candidate - base) / base <= this fraction"),
    "severity": Str(enum=("fail", "warn"), description="what breaking this rule does (default fail)"),
    "per": Str(enum=("group", "class", "perturbation"), description="apply to every subgroup of every "
               "data.groups column, to every true class, or under every entry of perturbations (the candidate's "
               "change against the base's under the same perturbation)"),
    "scope": Str(enum=("each", "worst_group", "gap"), description="with per: each subgroup (default), the worst "
                 "subgroup's value, or the best-minus-worst gap"),
    "min_samples": Num(minimum=1, integer=True, description="subgroups smaller than this are reported as too "
                       "small to judge (default 30)"),
    "target": Str(description="speed and memory metrics: judge the numbers measured on this latency.targets "
                  "entry (`gate measure --target NAME` on that device)"),
    "vs": Str(enum=VS, description="what the candidate is compared with: the base model (default), the "
              "blessed baseline (the last release, `gate bless`), or the first blessed release (the drift over "
              "every release since); judged paired on the baseline's stored per-sample outputs"),
}

_PERTURBATION_FIELDS: dict = {
    "name": Str(description="label in reports (default: the kind and its parameters, e.g. "
                "'gaussian_noise snr 20 dB')"),
    "kind": Str(enum=tuple(PERTURBATION_KINDS), description="gaussian_noise (snr_db), dropout (rate, value), "
                "quantize (bits), brightness (delta) or contrast (factor); brightness and contrast only on "
                "image-shaped inputs"),
    "snr_db": Num(minimum=-20, maximum=80, description="gaussian_noise: each sample's signal-to-noise ratio in dB "
                  "(noise power = the sample's mean square / 10^(snr_db/10))"),
    "rate": Num(exclusive_minimum=0, exclusive_maximum=1, description="dropout: the share of feature values "
                "replaced by `value`, each drawn independently"),
    # within float32's range: the inputs it fills are float32 at most, and an overflow would be inf
    "value": Num(minimum=-3.4e38, maximum=3.4e38, description="dropout: what a dropped (missing) feature reads "
                 "as, the fill value the device uses (default 0; finite: NaN inputs are refused)"),
    "bits": Num(minimum=1, maximum=16, integer=True, description="quantize: 2^bits levels spread evenly over each "
                "feature's observed range"),
    "delta": Num(minimum=-1, maximum=1, description="brightness: shift by this fraction of the input's observed "
                 "range, clipped to it"),
    "factor": Num(minimum=0, maximum=10, description="contrast: scale each sample's deviation from its mean by "
                  "this, clipped to the input's observed range"),
}

_LATENCY_FIELDS: dict = {
    # upper limits: a stranger's policy must not keep a CI runner busy for days
    "batch_size": Num(minimum=1, maximum=MAX_BATCH, integer=True, description="samples per timed inference call "
                      "(default 1); also the batch quality is judged at, unless the top-level batch_size is set"),
    "threads": Num(minimum=1, maximum=1024, integer=True, description="intra-op threads (default 1); never more "
                   "than the CPUs the process may use"),
    "warmup": Num(minimum=0, maximum=100_000, integer=True, description="untimed calls per model before timing "
                  "(default 20)"),
    "min_runs": Num(minimum=1, maximum=10_000_000, integer=True, description="timed calls per model before the "
                    "first look (default 100)"),
    "min_time_s": Num(minimum=0, maximum=3600, description="seconds of timed calls before the first look "
                      "(default 1)"),
    "max_time_s": Num(minimum=0, maximum=3600, description="cap on the timed calls, in seconds; a borderline "
                      "result is measured again until then (default 10)"),
    "provider": Str(description="onnxruntime execution provider (default CPUExecutionProvider)"),
}

SCHEMA = Obj(
    {
        "version": Num(minimum=1, maximum=1, integer=True, description="policy format version (1)"),
        "base": _MODEL,
        "candidates": DictOf(_MODEL, description="candidate name -> model"),
        "data": Obj({
            "path": Str(description="calibration data, relative to the policy file: .npz, .csv, .parquet, "
                        ".arrow/.feather, a folder of .npy files, or a folder of images (with data.images)",
                        path=True),
            "inputs": DictOf(_INPUT, description="model input name -> data key or column(s), or {columns, shape}; "
                             "inferred when the model has one input"),
            "labels": Str(description="data key or column with the true labels / targets"),
            "groups": ListOf(_COLUMNS, description="subgroup columns; a list inside the list is an intersection of columns"),
            "classes": ListOf(AnyOf((Str(), Num(integer=True)), description="a class name (or integer class label)"),
                              min_items=2, description="classification: the class names in the order of the "
                              "model's score columns, so labels in the data may be these names; by default the "
                              "class labels stored in the model (skl2onnx stores them), else labels are class "
                              "indices 0..k-1"),
            "images": _IMAGES,
        }, required=("path",), description="the calibration data"),
        "task": Str(enum=("classification", "regression"), description="what the model predicts (default classification)"),
        "output": Str(description="model output to judge when models have several outputs"),
        "scores": Str(enum=("auto", "logits", "probabilities"), description="how to read classifier score outputs (default auto)"),
        "confidence": Num(exclusive_minimum=0.5, exclusive_maximum=1, description="confidence level of every interval (default 0.95)"),
        "inconclusive": Str(enum=("fail", "warn"), description="what a rule the data cannot decide does (default fail)"),
        "bootstrap": Num(minimum=100, maximum=100000, integer=True, description="bootstrap resamples for non-proportion metrics (default 1000)"),
        "seed": Num(minimum=0, maximum=2**32 - 1, integer=True, description="seed of every random choice (default 0)"),
        "batch_size": Num(minimum=1, maximum=MAX_BATCH, integer=True, description="samples per inference call "
                          "when judging quality, for models with a dynamic batch axis: the batch size the model is "
                          "deployed with, since some graphs (dynamic int8 quantization) give other outputs at other "
                          f"batch sizes (default: latency.batch_size when given, else {DEFAULT_QUALITY_BATCH})"),
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
        "baseline": AnyOf((
            Str(description="folder of blessed releases (`gate bless`), relative to the policy file", path=True),
            Obj({"path": Str(description="folder of blessed releases", path=True),
                 "required": Bool(description="fail the rules judged against the baseline when it has no blessed "
                                  "release yet (default false: reported, not judged)")}, required=("path",)),
        ), description="the blessed baselines rules with `vs: baseline` or `vs: first_baseline` compare with"),
        "perturbations": ListOf(Obj(_PERTURBATION_FIELDS, required=("kind",)), min_items=1, description=(
            "perturbed copies of the float inputs base and candidates are also run on (seeded by seed and the "
            "entry's position); rules with per: perturbation judge the candidate under each")),
        "diagnostics": Obj({
            "layers": Bool(description="compare base and ONNX candidates tensor by tensor to show where the error "
                           "enters (report only, never judged; default true)"),
            "layer_samples": Num(minimum=1, maximum=MAX_LAYER_SAMPLES, integer=True, description="samples the "
                                 f"tensor-by-tensor comparison runs on (default {DEFAULT_LAYER_SAMPLES})"),
        }, description="what is measured to explain a result, beside what the rules judge"),
        "sequential": AnyOf((
            Bool(description="true: judge at growing shares of the samples (10, 20, 40, 70, 100%) and stop as "
                 "soon as every rule is decided"),
            Obj({"looks": ListOf(Num(exclusive_minimum=0, maximum=1), min_items=1, description="the shares of "
                                 "the samples judged at, increasing, the last 1"),
                 "spending": Str(enum=("obrien_fleming", "pocock"), description="how the error rate is spent over "
                                 "the looks (default obrien_fleming: almost nothing early)")}),
        ), description="judge in looks at growing shares of the data, stopping early when every rule is decided, "
                       "with the error rates held at the policy's level (docs/statistics.md)"),
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
    inputs: dict[str, Any] = field(default_factory=dict)  # input name -> key, columns, or a ShapedInput
    labels: str | None = None
    groups: tuple = ()
    classes: tuple | None = None  # class names in the order of the model's score columns (data.classes)
    images: imagefolder.ImageSpec | None = None  # data.path is a folder of images (data.images)


@dataclass(frozen=True)
class ShapedInput:
    """data.inputs: {name: {columns, shape}}: the data feeding an input (None: inferred as without a shape), each
    sample seen in `shape` (gate/models/binding.py). Its text is the policy's, for messages and cache keys."""
    columns: str | list | None
    shape: tuple[int, ...]

    def __str__(self) -> str:
        columns = "" if self.columns is None else f"columns: {self.columns}, "
        return f"{{{columns}shape: [{', '.join(map(str, self.shape))}]}}"

    __repr__ = __str__


@dataclass(frozen=True, kw_only=True)
class BaselineSpec:
    path: Path  # the folder `gate bless` writes (blessings.json and the stored outputs)
    required: bool = False  # without a blessed release yet: rules against it fail instead of being skipped


@dataclass(frozen=True, kw_only=True)
class Perturbation:
    """One entry of the policy's perturbations: a perturbed copy of the float inputs (gate/measure/perturb.py)."""
    index: int  # 1-based, as users count; with the policy's seed, it seeds the entry's random draws
    line: int | None
    name: str
    kind: str  # a key of gate.measure.perturb.KINDS
    parameters: dict  # the kind's parameters, defaults filled in (dropout's value)


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
    min_samples: int = DEFAULT_MIN_SAMPLES
    target: str | None = None  # a latency.targets name: judged on what was measured there
    vs: str = "base"  # one of VS: the base model, the last blessed release, or the first one

    @property
    def text(self) -> str:
        if self.label:
            return self.label
        what = f"{self.metric} {self.scope}" if self.scope != "each" else self.metric
        where = f" per {self.per}" if self.per else ""
        on = f" on {self.target}" if self.target else ""
        against = f" vs {self.vs.replace('_', ' ')}" if self.vs != "base" else ""
        return f"{what} {self.bound_kind} {self.bound:g}{where}{on}{against}"

    @property
    def grouped(self) -> bool:
        """Judged over subgroups rather than over all samples at once."""
        spec = get_metric(self.metric)
        return self.per is not None or (spec is not None and spec.kind == FAIRNESS)


@dataclass(frozen=True, kw_only=True)
class LatencySettings:
    """The policy's latency block, typed: None where the policy is silent (the measurement's default applies,
    see gate/measure/settings.py). Each target holds its own entry, over the block's values."""
    batch_size: int | None = None
    threads: int | None = None
    warmup: int | None = None
    min_runs: int | None = None
    min_time_s: float | None = None
    max_time_s: float | None = None
    provider: str | None = None
    targets: dict[str, LatencySettings] = field(default_factory=dict)

    @classmethod
    def from_block(cls, block: dict | None) -> LatencySettings:
        """From the block SCHEMA has checked (every key known, every value of its type)."""
        block = block or {}
        ints = {k: int(block[k]) for k in ("batch_size", "threads", "warmup", "min_runs") if block.get(k) is not None}
        floats = {k: float(block[k]) for k in ("min_time_s", "max_time_s") if block.get(k) is not None}
        provider = {"provider": block["provider"]} if block.get("provider") is not None else {}
        targets = {name: cls.from_block(entry) for name, entry in (block.get("targets") or {}).items()}
        return cls(**ints, **floats, **provider, targets=targets)

    def given(self) -> dict[str, int | float | str]:
        """The values the policy sets (targets aside)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__
                if f != "targets" and getattr(self, f) is not None}


@dataclass(frozen=True, kw_only=True)
class Sequential:
    """Judging in looks (gate/measure/sequential.py): the shares of the samples judged at, and the spending."""
    looks: tuple[float, ...] = (0.1, 0.2, 0.4, 0.7, 1.0)
    spending: str = "obrien_fleming"


@dataclass(frozen=True, kw_only=True)
class Diagnostics:
    """What is measured to explain a result (never judged): the policy's diagnostics block."""
    layers: bool = True  # where the error enters: gate/measure/tensors.py
    layer_samples: int = DEFAULT_LAYER_SAMPLES


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
    batch_size: int | None = None  # see quality_batch
    correction: str = "holm"
    small_groups: str = "warn"
    max_file_mb: float = 4096.0
    latency: LatencySettings = field(default_factory=LatencySettings)
    baseline: BaselineSpec | None = None
    perturbations: tuple[Perturbation, ...] = ()
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    sequential: Sequential | None = None

    @property
    def quality_batch(self) -> tuple[int, str]:
        """(samples per inference call when judging quality, where that number comes from)."""
        if self.batch_size is not None:
            return self.batch_size, "the policy's batch_size"
        if self.latency.batch_size:
            return self.latency.batch_size, "latency.batch_size, the batch the model is timed at"
        return DEFAULT_QUALITY_BATCH, "the default; set batch_size to the batch the model is deployed with"


# Limits on what a policy may be. A policy is a page of YAML written by hand: the shipped presets
# are under 2 KB and 100 values. These limits are far above any real policy and far below what
# would let a stranger's pull request hang or crash the gate (PyYAML is pure Python here: about
# 30,000 values a second, so 10,000 values parse in well under a second on a busy runner).
MAX_POLICY_BYTES = 1_000_000  # checked on the file's size before reading it, and on the text
MAX_DEPTH = 64  # nesting of lists and mappings, counted after aliases are expanded
MAX_VALUES = 10_000  # scalars, lists and mappings, counted after aliases are expanded
MAX_NUMBER_CHARS = 100  # no bound needs more digits; int() of a huge literal is slow or refused

_YAML = "tag:yaml.org,2002:"
_PLAIN_SCALARS = {_YAML + t for t in ("str", "int", "float", "bool", "null")}
_SIZE_FIX = "a policy is a short page of rules: keep data and models in their own files"
_TAG_FIX = ("remove the tag: a policy holds only plain strings, numbers, true/false, lists and mappings "
            "(quote a value to make it a string)")


def _tag_text(tag: str) -> str:
    return show("!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag)


class _Guards:
    """Refuses tags, deep nesting and too many values while composing (mixed into a loader).

    Composing is the only recursive step of PyYAML, so nesting is limited here, long before
    Python's recursion limit; values and alias uses are counted here, so a huge document stops
    early instead of being read to its end.
    """

    source: str
    depth: int
    values: int
    positions_in_bytes = False  # how a ReaderError counts its position

    def refuse(self, message: str, mark: Any, fix: str) -> NoReturn:
        raise GateInputError(message, path=self.source, line=mark.line + 1 if mark is not None else None, fix=fix)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[attr-defined]
        self.values += 1
        if self.values > MAX_VALUES:
            self.refuse(f"has more than {MAX_VALUES} values (scalars, lists, mappings and aliases); a policy "
                        "may have at most that many", event.start_mark, _SIZE_FIX)
        tag = getattr(event, "tag", None)
        if tag is not None:
            self.refuse(f"uses the YAML tag {_tag_text(tag)}; tags are not allowed in a policy", event.start_mark,
                        _TAG_FIX)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                self.refuse(f"nests lists and mappings more than {MAX_DEPTH} deep; a policy needs only a few "
                            "levels", event.start_mark, "flatten the policy: rules is a list of flat mappings")
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self.depth -= 1


class _PurePolicyLoader(_Guards, yaml.SafeLoader):
    """The pure-Python SafeLoader, guarded: about 200 KB of YAML a second."""

    def __init__(self, text: str, source: str) -> None:
        self.source, self.depth, self.values = source, 0, 0
        yaml.SafeLoader.__init__(self, text)


if _CParser is not None:
    class _FastPolicyLoader(_Guards, Composer, _CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml scans and parses (in C, without recursion); the guarded Python composer builds the
        nodes and SafeConstructor the data. A 1 MB policy reads in a fraction of a second, where the
        pure-Python scanner needs seconds for some shapes (a long multi-word scalar)."""

        positions_in_bytes = True

        def __init__(self, text: str, source: str) -> None:
            self.source, self.depth, self.values = source, 0, 0
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _PolicyLoader: type = _FastPolicyLoader
else:  # PyYAML built without libyaml
    _PolicyLoader = _PurePolicyLoader

# YAML 1.1 (PyYAML) reads 1e-3 and 5e-324 as strings: its floats need a dot. Users write bounds that way,
# so exponents without a dot are numbers in a policy, as in YAML 1.2 and JSON.
_EXPONENT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
for _loader in {_PurePolicyLoader, _PolicyLoader}:
    _loader.add_implicit_resolver(_YAML + "float", _EXPONENT, list("-+0123456789"))


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _inspect(node: yaml.Node, loader: _Guards) -> None:
    """Refuse what composing lets through, visiting each node once (iteratively, so no recursion):

    - an alias inside the node it names (`&a [*a]`), which would loop forever;
    - aliases that expand beyond MAX_VALUES values or MAX_DEPTH levels ("billion laughs"): anchors
      and aliases may share a few settings, never multiply a document;
    - mapping keys that are lists or mappings (`? [a, b] : 1`), which no policy key is;
    - scalars YAML reads as something a policy has no use for (a date, `=`), and numbers that are
      too long or that YAML cannot convert (`0x_`), each with its line.
    Plain scalars are constructed here, once, and reused when the document is constructed.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, finished = stack.pop()
        key = id(current)
        line = current.start_mark.line + 1
        if finished:
            open_.discard(key)
            kids = _children(current)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if size[key] > MAX_VALUES:
                loader.refuse(f"expands to more than {MAX_VALUES} values once its aliases (*name) are expanded "
                              f"(the value at line {line}); anchors and aliases may share a few settings, not "
                              "multiply them", current.start_mark, _SIZE_FIX)
            if height[key] > MAX_DEPTH:
                loader.refuse(f"nests lists and mappings more than {MAX_DEPTH} deep once its aliases (*name) are "
                              f"expanded (the value at line {line})", current.start_mark,
                              "flatten the policy: rules is a list of flat mappings")
            continue
        if key in size:
            continue  # shared through an alias: already inspected
        if key in open_:
            loader.refuse("has an alias (*name) inside the value its anchor (&name) names, which never ends",
                          current.start_mark, "remove that alias")
        open_.add(key)
        stack.append((current, True))
        if isinstance(current, yaml.MappingNode):
            for key_node, _ in current.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    loader.refuse("has a list or mapping as a key; every key of a policy is a name",
                                  key_node.start_mark, "write the key as a plain name, e.g. metric: accuracy")
        elif isinstance(current, yaml.ScalarNode):
            _inspect_scalar(current, loader)
        stack.extend((k, False) for k in reversed(_children(current)) if id(k) not in size)


def _inspect_scalar(node: yaml.ScalarNode, loader: Any) -> None:
    tag, value = node.tag, node.value
    if tag == _YAML + "merge":
        return  # `<<: *defaults`, checked when the document is constructed
    quote = f"quote it if you mean the text: '{value}'" if len(value) < 40 and "'" not in value else \
        "quote it if you mean the text"
    if tag == _YAML + "timestamp":
        loader.refuse(f"has {show(value)}, which YAML reads as a date; a policy has no dates", node.start_mark,
                      quote)
    if tag not in _PLAIN_SCALARS:
        loader.refuse(f"has {show(value)}, which YAML reads as {_tag_text(tag)}; a policy has no such values",
                      node.start_mark, quote)
    if tag in (_YAML + "int", _YAML + "float") and len(value) > MAX_NUMBER_CHARS:
        loader.refuse(f"has a number {len(value)} characters long; a policy's numbers have at most "
                      f"{MAX_NUMBER_CHARS}", node.start_mark, "write the number with fewer digits, e.g. 1e-6")
    try:
        loader.construct_object(node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(tag.rsplit(":", 1)[-1], "a value")
        loader.refuse(f"has {show(value)}, which YAML cannot read as {kind}: {exc}",
                      node.start_mark, quote)


def _line_map(node: yaml.Node, loader: Any, problems: list | None = None) -> dict:
    """path -> 1-based line, and duplicate keys (which PyYAML silently merges).

    Each node is walked once: what an alias repeats keeps the line of the key that uses it.
    Keys are path parts as the schema makes them (key_part of the constructed key).
    """
    out: dict = {}
    walked: set[int] = set()

    def walk(current: yaml.Node, path: tuple) -> None:
        out.setdefault(path, current.start_mark.line + 1)
        if id(current) in walked:
            return
        walked.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen = set()
            for key_node, value_node in current.value:
                key = _key_of(key_node, loader)
                if key in seen and problems is not None:
                    problems.append(Problem(path + (key,), f"duplicate key '{key}' (line "
                                            f"{key_node.start_mark.line + 1})."))
                seen.add(key)
                out[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                out[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    walk(node, ())
    return out


def _key_of(key_node: yaml.Node, loader: Any) -> str:
    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in (_YAML + "str", _YAML + "merge"):
        return str(key_node.value)
    return key_part(loader.construct_object(key_node))  # constructed (and checked) by _inspect


def _yaml_error(exc: Exception, text: str, source: str, loader_bytes: bool = False) -> GateInputError:
    fix = "check the indentation and quoting at that line"
    if isinstance(exc, yaml.reader.ReaderError):
        line = None
        if isinstance(exc.position, int):
            before = text.encode("utf-8", "surrogatepass")[:exc.position] if loader_bytes else text[:exc.position]
            line = before.count(b"\n" if loader_bytes else "\n") + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else show(exc.character)
        return GateInputError(f"is not valid YAML: the control character {char} is not allowed in YAML",
                              path=source, line=line, fix="remove it; a policy is plain UTF-8 text")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if "nesting depth" in str(problem):  # libyaml's own limit (1000), met while it scans ahead
        return GateInputError(f"nests lists and mappings more than {MAX_DEPTH} deep; a policy needs only a few "
                              "levels", path=source, line=line, fix="flatten the policy: rules is a list of flat "
                              "mappings")
    if context and "single document" in context:
        return GateInputError("holds more than one YAML document; a policy is one document", path=source,
                              line=line, fix="remove the `---` and what follows it, or merge the documents")
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        message = f"{context} (line {context_mark.line + 1}): {problem}"
    else:
        message = f"{context}: {problem}" if context else problem
    return GateInputError(f"is not valid YAML: {message}", path=source, line=line, fix=fix)


def _read_yaml(text: str, source: str) -> tuple[Any, dict, list[Problem]]:
    """Compose once, inspect the nodes, map lines, then construct the data from the same nodes."""
    loader = None
    try:
        try:
            loader = _PolicyLoader(text, source)
            node = loader.get_single_node()
        except RecursionError:
            raise GateInputError("nests too deeply to read", path=source,
                                 fix="flatten the policy: rules is a list of flat mappings") from None
        except UnicodeEncodeError:  # a lone surrogate, only possible in a str built in Python
            raise GateInputError("is not valid text (it holds a lone surrogate)", path=source,
                                 fix="save the policy as UTF-8") from None
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, text, source, _PolicyLoader.positions_in_bytes) from None
        if node is None:
            raise GateInputError("is empty", path=source, fix="start from a preset in policies/ or the README")
        _inspect(node, loader)
        problems: list[Problem] = []
        lines = _line_map(node, loader, problems)
        try:
            raw = loader.construct_document(node)
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
            if isinstance(exc, yaml.YAMLError):
                raise _yaml_error(exc, text, source, _PolicyLoader.positions_in_bytes) from None
            raise GateInputError(f"cannot be read: {exc}", path=source, fix="check the values YAML converts "
                                 "(numbers, true/false); quote them to make them strings") from None
        return raw, lines, problems
    finally:
        if loader is not None:
            loader.dispose()

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


def _perturbation_problems(raw: dict) -> list[Problem]:
    """Each perturbation has its kind's parameters and no other's, and a name no other entry has."""
    entries = raw.get("perturbations")
    if not isinstance(entries, list):
        return []
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in PERTURBATION_KINDS:
            continue  # the schema says why
        path = ("perturbations", i)
        takes = PERTURBATION_KINDS[kind]
        problems.extend(Problem(path + (key,), f"is not a parameter of {kind}, which takes {', '.join(takes)}.")
                        for key in entry if key in _PERTURBATION_FIELDS and key not in ("name", "kind", *takes))
        if takes[0] not in entry:
            problems.append(Problem(path, f"({kind}) is missing its parameter '{takes[0]}', e.g. "
                                    f"{{kind: {kind}, {takes[0]}: {_EXAMPLE[takes[0]]}}}."))
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            if not all(isinstance(entry.get(k, 0), (int, float)) for k in takes):
                continue  # the schema says why
            name = perturbation_name(kind, entry)
        if name in names:
            problems.append(Problem(path + (("name",) if "name" in entry else ()), f"is named {name!r}, as "
                                    f"perturbations[{names[name]}] is; give each a distinct name: it labels "
                                    "the perturbation in every report."))
        names.setdefault(name, i)
    return problems


_EXAMPLE = {"snr_db": 20, "rate": 0.1, "bits": 8, "delta": 0.1, "factor": 0.8}


def _per_perturbation_problems(rule: dict, i: int, raw: dict) -> list[Problem]:
    """per: perturbation needs perturbations to judge, and takes no gap (perturbations are not a partition of
    the samples: each one perturbs them all)."""
    if rule.get("per") != "perturbation":
        return []
    path = ("rules", i)
    if not raw.get("perturbations"):
        return [Problem(path + ("per",), "judges the candidate under perturbations, but the policy lists none. Add "
                        "e.g. perturbations: [{kind: gaussian_noise, snr_db: 20}].")]
    if rule.get("scope") == "gap":
        return [Problem(path + ("scope",), "a gap is taken between subgroups of the data; under perturbations use "
                        "scope: each or worst_group.")]
    return []


def _group_problems(raw: dict, spec, bound: str, path: tuple, has_groups: bool | None) -> list[Problem]:
    problems = []
    per, scope, name = raw.get("per"), raw.get("scope"), raw.get("metric")
    if spec.kind == FAIRNESS:
        if per in ("class", "perturbation"):
            problems.append(Problem(path + ("per",), f"'{name}' compares the subgroups of data.groups; drop per: {per}."))
        if scope:
            problems.append(Problem(path + ("scope",), f"'{name}' is already a difference between subgroups; drop scope."))
    elif scope and not per:
        problems.append(Problem(path + ("scope",), "needs per: group or per: class to say which subgroups."))
    if per and not spec.per_group and spec.kind != FAIRNESS:
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
    names = [k for k in targets if isinstance(k, str)]
    if target not in names:
        hint = difflib.get_close_matches(target, names, n=1)
        if hint:
            extra = f" Did you mean '{hint[0]}'?"
        elif names:
            extra = f" Defined: {', '.join(names)}."
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
    for where, values in [(("latency",), latency)] + [(("latency", "targets", key_part(k)), {**latency, **v})
                                                       for k, v in targets.items() if isinstance(v, dict)]:
        lo, hi = values.get("min_time_s", 1.0), values.get("max_time_s", 10.0)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi < lo:
            problems.append(Problem(where + ("max_time_s",), f"({hi:g}) is below min_time_s ({lo:g}); it caps "
                                    "the timed calls, so raise it or lower min_time_s."))
    return problems


def _classes_problems(raw: dict) -> list[Problem]:
    """data.classes names each class once, and only a classifier has classes."""
    data = raw.get("data")
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list):
        return []
    if raw.get("task") == "regression":
        return [Problem(("data", "classes"), "names classes, but the policy's task is regression; drop it.")]
    seen: dict[str, int] = {}
    for i, name in enumerate(classes):
        if isinstance(name, (str, int)) and not isinstance(name, bool):
            if str(name) in seen:
                return [Problem(("data", "classes", i), f"repeats the class {show(name)} (item {seen[str(name)] + 1} "
                                "is the same); name each class once, in the order of the model's score columns.")]
            seen[str(name)] = i
    return []


def _data_shape_problems(raw: dict) -> list[Problem]:
    """What the schema alone cannot say of data.inputs shapes and data.images: how many axes, how many
    channels, and steps that contradict each other."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return []
    problems = []
    inputs = data.get("inputs")
    for name, spec in (inputs.items() if isinstance(inputs, dict) else ()):
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if isinstance(shape, list) and len(shape) > MAX_SAMPLE_AXES:
            problems.append(Problem(("data", "inputs", name, "shape"), f"has {len(shape)} axes; a sample may have at "
                                    f"most {MAX_SAMPLE_AXES}."))
    images = data.get("images")
    if not isinstance(images, dict):
        return problems
    path = ("data", "images")
    size = images.get("size")
    if isinstance(size, list) and len(size) != 2:
        problems.append(Problem(path + ("size",), f"must be [height, width], two numbers. Got {show(size)}."))
    elif isinstance(size, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in size) and \
            size[0] * size[1] > MAX_INPUT_PIXELS:
        # every sample becomes this many pixels times the channels, in float32, per batch
        problems.append(Problem(path + ("size",), f"asks for {size[0] * size[1]:,} pixels per sample; the gate feeds "
                                f"at most {MAX_INPUT_PIXELS:,} (4096 x 4096) to a model."))
    channels = 1 if images.get("channels") == "L" else 3
    for key in ("mean", "std"):
        values = images.get(key)
        if isinstance(values, list) and len(values) not in (1, channels):
            problems.append(Problem(path + (key,), f"has {len(values)} values for {channels} channel(s) "
                                    f"({images.get('channels', 'RGB')}); give one per channel, or one for all."))
    resize = images.get("resize")
    if resize is not None and images.get("crop") == "none":
        problems.append(Problem(path + ("crop",), "is none, but resize is set: resize scales the shorter side, and "
                                "a crop then takes size from it. Use crop: center, or drop resize to resize to "
                                "size directly."))
    elif isinstance(resize, int) and isinstance(size, list) and len(size) == 2 and \
            all(isinstance(v, int) for v in size) and max(size) > resize:
        problems.append(Problem(path + ("resize",), f"is {resize}, smaller than the crop {show(size)} taken from "
                                f"it: resize the shorter side to at least {max(size)}."))
    from gate.data import reader_for  # gate.data reads DataSpec from here

    if isinstance(data.get("path"), str) and reader_for(Path(data["path"])) is not None:
        problems.append(Problem(path, f"describes a folder of images, but data.path {show(data['path'])} is a data "
                                "file; point data.path at the image folder, or drop data.images."))
    return problems


def _vs_problems(raw: dict, spec, path: tuple, has_baseline: bool) -> list[Problem]:
    """A rule against a blessed release reads that release's stored per-sample predictions and scores:
    only metrics computed from those, over all samples, can be judged that way."""
    vs, name = raw.get("vs"), raw.get("metric")
    if vs in (None, "base") or not isinstance(vs, str):
        return []
    if not has_baseline:
        return [Problem(path + ("vs",), f"compares with the {vs.replace('_', ' ')}, but the policy names no "
                        "baseline; add baseline: PATH (the folder `gate bless` writes).")]
    if not baseline_comparable(spec):
        return [Problem(path + ("vs",), f"'{name}' cannot be judged against a blessed release, which keeps "
                        "predictions and scores, not raw outputs or model files; use a quality metric or "
                        "flip_rate.")]
    if raw.get("per") or raw.get("target") or raw.get("scope"):
        key = next(k for k in ("per", "target", "scope") if raw.get(k))
        return [Problem(path + (key,), f"a rule against the {vs.replace('_', ' ')} is judged over all samples; "
                        f"drop {key}, or write a second rule against the base.")]
    return []


def baseline_comparable(spec) -> bool:
    """Computed from what a blessed release stores: per-sample predictions and scores."""
    return spec.kind == QUALITY or spec.name in ("flip_rate", "negative_flip_rate", "positive_flip_rate")


def _rule_problems(raw: dict, i: int, task: str | None, has_groups: bool | None = None,
                   targets: dict | None = None, has_baseline: bool = False) -> list[Problem]:
    path = ("rules", i)
    problems = []
    name = raw.get("metric")
    name = name if isinstance(name, str) and name.strip() else None  # else the schema says why
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
    problems.extend(_vs_problems(raw, spec, path, has_baseline))
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
    if task is not None and task not in spec.tasks:
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


def _baseline(value: Any, root: Path) -> BaselineSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        return BaselineSpec(path=root / value)
    return BaselineSpec(path=root / value["path"], required=bool(value.get("required", False)))


def parse_policy(text: str, source: str, root: Path) -> Policy:
    """Validate a policy text completely; paths are resolved against `root`."""
    if len(text) > MAX_POLICY_BYTES:
        raise GateInputError(f"is {len(text)} characters long; a policy may be at most {MAX_POLICY_BYTES} (1 MB)",
                             path=source, fix=_SIZE_FIX)
    raw, lines, problems = _read_yaml(text, source)
    checked = SCHEMA.check(raw, (), problems)
    if isinstance(raw, dict) and isinstance(raw.get("rules"), list):
        task = raw.get("task", "classification")
        task = task if task in ("classification", "regression") else None  # else the schema says why
        data = raw.get("data")
        # unknown when the data comes from --data alone: checked again when measuring
        has_groups = bool(data.get("groups")) if isinstance(data, dict) else None
        latency = raw.get("latency") if isinstance(raw.get("latency"), dict) else {}
        targets = latency.get("targets") if isinstance(latency.get("targets"), dict) else {}
        for i, rule in enumerate(raw["rules"]):
            if isinstance(rule, dict):
                problems.extend(_rule_problems(rule, i, task, has_groups, targets, "baseline" in raw))
                problems.extend(_per_perturbation_problems(rule, i, raw))
    if isinstance(raw, dict):
        problems.extend(_latency_problems(raw.get("latency")))
        problems.extend(_classes_problems(raw))
        problems.extend(_sequential_problems(raw))
        problems.extend(_perturbation_problems(raw))
        problems.extend(_data_shape_problems(raw))
    _raise(problems, source, lines)

    rules = []
    for i, r in enumerate(checked["rules"]):
        bound_kind = next(b for b in BOUNDS if b in r)
        rules.append(Rule(index=i + 1, line=_line_of(lines, ("rules", i)), metric=r["metric"],
                          bound_kind=bound_kind, bound=float(r[bound_kind]),
                          severity=r.get("severity", "fail"), label=r.get("name"), per=r.get("per"),
                          scope=r.get("scope", "each"), min_samples=r.get("min_samples", DEFAULT_MIN_SAMPLES),
                          target=r.get("target"), vs=r.get("vs", "base")))
    data = checked.get("data")
    data_spec = None
    if data:
        data_spec = DataSpec(path=root / data["path"], inputs={
                                 name: ShapedInput(columns=spec.get("columns"), shape=tuple(spec["shape"]))
                                 if isinstance(spec, dict) else spec for name, spec in data.get("inputs", {}).items()},
                             labels=data.get("labels"), groups=tuple(
                                 tuple(g) if isinstance(g, list) else g for g in data.get("groups", [])),
                             classes=tuple(data["classes"]) if data.get("classes") else None,
                             images=imagefolder.ImageSpec.from_block(data["images"]) if data.get("images") else None)
    candidates = tuple(_model(v, k, root) for k, v in checked.get("candidates", {}).items())
    return Policy(
        source=source, text=text, sha256=hashlib.sha256(text.encode()).hexdigest(),
        base=_model(checked.get("base"), "base", root), candidates=candidates, data=data_spec,
        rules=tuple(rules),
        **{k: checked[k] for k in ("task", "output", "scores", "confidence", "inconclusive",
                                   "bootstrap", "seed", "batch_size", "max_file_mb", "correction", "small_groups")
           if k in checked},
        latency=LatencySettings.from_block(checked.get("latency")),
        baseline=_baseline(checked.get("baseline"), root),
        perturbations=_perturbations(checked.get("perturbations") or [], lines),
        diagnostics=Diagnostics(**(checked.get("diagnostics") or {})),
        sequential=_sequential(checked.get("sequential")),
    )


def _sequential(value: Any) -> Sequential | None:
    if value is None or value is False:
        return None
    if value is True:
        return Sequential()
    return Sequential(looks=tuple(float(x) for x in value.get("looks", Sequential.looks)),
                      spending=value.get("spending", Sequential.spending))


def _sequential_problems(raw: dict) -> list[Problem]:
    """Looks the statistics can plan (every rule can be decided at a look: gate/measure/sequential.py)."""
    value = raw.get("sequential")
    if value is None or value is False or not isinstance(value, (bool, dict)):
        return []
    problems = []
    if isinstance(value, dict) and isinstance(value.get("looks"), list) and \
            all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value["looks"]):
        from gate.measure.sequential import plan

        try:
            plan(tuple(float(x) for x in value["looks"]), 0.025,
                 value.get("spending", "obrien_fleming") if value.get("spending") in ("obrien_fleming", "pocock")
                 else "obrien_fleming")
        except ValueError as exc:
            problems.append(Problem(("sequential", "looks"), f"{exc}."))
    return problems


def _perturbations(entries: list[dict], lines: dict) -> tuple[Perturbation, ...]:
    out = []
    for i, entry in enumerate(entries):
        kind = entry["kind"]
        parameters = {key: entry[key] for key in PERTURBATION_KINDS[kind] if key in entry}
        if kind == "dropout":
            parameters.setdefault("value", 0.0)
        out.append(Perturbation(index=i + 1, line=_line_of(lines, ("perturbations", i)), kind=kind,
                                name=entry.get("name") or perturbation_name(kind, parameters), parameters=parameters))
    return tuple(out)


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(policies_dir().glob("*.yaml"))}


def load_policy(spec: str | Path) -> Policy:
    """A policy file, or the name of a shipped preset.

    The file must be a regular file (a symlink to /dev/zero or a pipe would never end) of at most
    MAX_POLICY_BYTES, checked before reading, in UTF-8 (a byte order mark is fine).
    """
    path = Path(spec)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except (OSError, ValueError) as exc:  # a name too long, a symlink loop, a NUL byte
        raise GateInputError(f"cannot be read: {exc}", path=spec, fix="give a policy file or a preset name") from None
    if info is None:
        shipped = presets()
        if str(spec) in shipped:
            preset = shipped[str(spec)]
            return parse_policy(preset.read_text(encoding="utf-8"), f"preset:{spec}", Path.cwd())
        hint = difflib.get_close_matches(str(spec), list(shipped), n=1)
        fix = f"did you mean the preset '{hint[0]}'?" if hint else \
            f"give a policy file, or a preset name: {', '.join(shipped)}"
        raise GateInputError("no such policy file or preset", path=spec, fix=fix)
    if not stat.S_ISREG(info.st_mode):
        raise GateInputError("is not a regular file (a directory, device or pipe)", path=path,
                             fix="give the policy's YAML file")
    if info.st_size > MAX_POLICY_BYTES:
        raise GateInputError(f"is {info.st_size} bytes; a policy may be at most {MAX_POLICY_BYTES} bytes (1 MB)",
                             path=path, fix=_SIZE_FIX)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise GateInputError(f"cannot be read: {exc.strerror or exc}", path=path,
                             fix="give a readable UTF-8 YAML file") from None
    if len(data) > MAX_POLICY_BYTES:
        raise GateInputError(f"is larger than {MAX_POLICY_BYTES} bytes; a policy may be at most 1 MB", path=path,
                             fix=_SIZE_FIX)
    try:
        text = data.decode("utf-8")  # a BOM stays in the text: YAML skips it, and the hash is the file's
    except UnicodeDecodeError as exc:
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        raise GateInputError("is UTF-16, not UTF-8" if utf16 else
                             f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                             path=path, line=data.count(b"\n", 0, exc.start) + 1,
                             fix="save the policy as UTF-8") from None
    return parse_policy(text, str(path), path.resolve().parent)


def _blank(text: str | None) -> bool:
    return text is not None and not text.strip()


def with_overrides(policy: Policy, *, base: str | None = None, candidates: list[str] | None = None,
                   data: str | None = None) -> Policy:
    """Command-line flags win over the policy; their paths are relative to the working directory."""
    for flag, value in (("--base", base), ("--data", data)):
        if _blank(value):
            raise GateInputError("is empty", path=flag, fix=f"give a path after {flag}, or leave the flag out")
    changes: dict[str, Any] = {}
    if base:
        changes["base"] = ModelRef(name="base", path=Path(base))
    if candidates:
        refs = []
        for item in candidates:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).stem, item
            if not path.strip():
                raise GateInputError(f"{item!r} has no model path", path="--candidate",
                                     fix="give NAME=PATH or PATH: --candidate int8=models/int8.onnx")
            if not name.strip():
                raise GateInputError(f"{item!r} has no candidate name", path="--candidate",
                                     fix="name it: --candidate int8=models/int8.onnx")
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
                                   labels=old.labels if old else None, groups=old.groups if old else (),
                                   classes=old.classes if old else None, images=old.images if old else None)
    return dataclasses.replace(policy, **changes) if changes else policy


def require_runnable(policy: Policy) -> None:
    missing = [what for what, value in (("a base model", policy.base), ("calibration data", policy.data))
               if value is None]
    if not policy.candidates:
        missing.append("at least one candidate")
    if missing:
        raise GateInputError(f"does not say {', '.join(missing)}", path=policy.source,
                             fix="add base:, candidates: and data: to the policy, or pass --base, --candidate, --data")
