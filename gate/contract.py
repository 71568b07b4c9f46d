"""One results contract: the only reader of results.json and report.json.

`gate judge` (through gate/merge.py) reads results with `load_results_file`, and the Action
(gate/github/report.py) reads a report folder with `load_report_dir`; `gate verify` and `gate history` read
report.json with `load_report`, and `gate verify` the folder's manifest.json with `load_manifest`. Both refuse a damaged or foreign
file with a `ContractError` naming the file and the problem (a GateInputError: exit 2), never
read it as far as it goes: a skipped rule could hide a failure.

The formats are described by the JSON Schemas committed in gate/schemas/ (RESULTS_SCHEMA,
REPORT_SCHEMA), which tests validate the writers' output against with the `jsonschema` package.
That package is only a test dependency, so the checks here are written by hand and mirror the
schemas for everything the judge and the Action read; tests/test_contract.py holds a corpus of
damaged documents that both must refuse.

Only the standard library and gate's own modules are imported at module level: the Action imports
this module. gate.measurements (which needs numpy) is imported only to build the results.
"""

from __future__ import annotations

import json
import math
import re
import os
from pathlib import Path

from gate.errors import GateInputError

SCHEMAS = Path(__file__).resolve().parent / "schemas"
RESULTS_SCHEMA = SCHEMAS / "results.schema.json"
REPORT_SCHEMA = SCHEMAS / "report.schema.json"

RESULTS_FORMAT = 1  # the `format` of results.json this gate reads and writes (gate.measurements.FORMAT)
REPORT_FORMAT = 2  # the `report_format` of report.json (gate.report.REPORT_FORMAT)

# checked on the file's size before reading it: both files hold every subgroup's measurements,
# and the Action may read them from an artifact of a pull request from a fork
MAX_JSON_BYTES = 100_000_000
MAX_MARKDOWN_BYTES = 5_000_000  # report.md goes to the step summary and a comment (65,536 characters)

TASKS = ("classification", "regression")
VERDICTS = ("pass", "fail")
STATUSES = ("pass", "fail", "warn", "inconclusive", "error")  # gate.tally.STATUSES
GROUP_STATUSES = ("pass", "fail", "inconclusive", "error", "too_small")
GROUPING_KINDS = ("group", "class", "perturbation")  # GroupingResult.kind: which per: rules judge it
BOUND_KINDS = ("min", "max", "max_drop", "max_relative_drop", "max_increase", "max_relative_increase")
SEVERITIES = ("fail", "warn")
ERROR_KINDS = ("input", "crash")
# the fields of a rule result (gate.judge.RuleResult) and of a candidate's entry in report.json;
# tests/test_contract.py holds them equal to what the writer writes
RULE_FIELDS = ("rule", "index", "metric", "bound_kind", "threshold", "severity", "status", "blocking", "observed",
               "interval", "base", "candidate", "bound_text", "reason", "samples_needed", "n", "groups", "line", "vs")
RULE_REQUIRED = RULE_FIELDS[:14]
REPORT_CANDIDATE_FIELDS = ("name", "verdict", "error", "tally", "rules", "model", "metrics", "groupings",
                           "change_matrix", "speed", "targets", "nonfinite", "notes", "flips", "calibration",
                           "releases", "layers")
REPORT_FIELDS = ("report_format", "verdict", "tally", "confidence", "inconclusive", "task", "n_samples", "seed",
                 "bootstrap", "base", "candidates", "input_errors", "provenance")
TALLY_COUNTS = ("passed", "failed", "warned", "errors", "inconclusive", "rules")
TALLY_LISTS = ("failed_rules", "warned_rules")

_RESULTS_FIX = "give the file `gate measure --out` wrote, unchanged; or measure again with this version of the gate"
_REPORT_FIX = "give the folder `gate check --out` or `gate judge --out` wrote, unchanged"


class ContractError(GateInputError):
    """A results or report file that is missing, unreadable, of another format or damaged."""

    def __init__(self, problem: str, *, path: str | Path, fix: str) -> None:
        self.problem = problem
        super().__init__(problem, path=path, fix=fix)


class _Bad(Exception):
    """A structural problem at a place in the document (raised by the checks, turned into ContractError)."""


# ---------------------------------------------------------------- reading JSON safely

def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value (a report is strict JSON: an unmeasurable number is null)")


def _read_bytes(path: Path, limit: int, fix: str) -> bytes:
    try:
        if not path.exists():
            raise ContractError("not found", path=path, fix=fix)
        if not path.is_file():
            raise ContractError("is not a file", path=path, fix=fix)
        size = path.stat().st_size
        if size > limit:
            raise ContractError(f"is {size:,} bytes, more than the {limit:,} bytes a gate file may have", path=path,
                                fix=fix)
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ContractError(f"cannot be read: {exc.strerror or exc}", path=path, fix=fix) from None
    if len(data) > limit:  # grew while read
        raise ContractError(f"is more than the {limit:,} bytes a gate file may have", path=path, fix=fix)
    return data


def _read_json(path: Path, fix: str, *, strict: bool) -> object:
    """strict: NaN / Infinity literals are refused (report.json is written without them)."""
    data = _read_bytes(path, MAX_JSON_BYTES, fix)
    try:
        text = data.decode("utf-8")
        if strict:
            return json.loads(text, parse_constant=_refuse_constant)
        return json.loads(text)
    except RecursionError:
        raise ContractError("is not readable JSON: nested too deeply", path=path, fix=fix) from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"is not UTF-8 text (byte {exc.start})", path=path, fix=fix) from None
    except ValueError as exc:  # JSONDecodeError, a refused constant, an integer of too many digits
        raise ContractError(f"is not readable JSON: {str(exc)[:200]}", path=path, fix=fix) from None


# ---------------------------------------------------------------- small checks, each naming the place

def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'an array'} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _obj(x, path: str, *, required=(), allowed=None, null: bool = False) -> dict | None:
    if x is None and null:
        return None
    if not isinstance(x, dict):
        raise _Bad(f"{path or 'the document'} must be an object{' or null' if null else ''}; got {_show(x)}")
    for key in required:
        if key not in x:
            raise _Bad(f"{path or 'the document'} has no {key!r}")
    if allowed is not None:
        for key in x:
            if key not in allowed:
                raise _Bad(f"{path or 'the document'} has an unknown field {key!r}")
    return x


def _arr(x, path: str, *, null: bool = False) -> list:
    if x is None and null:
        return []
    if not isinstance(x, list):
        raise _Bad(f"{path} must be an array{' or null' if null else ''}; got {_show(x)}")
    return x


def _str(x, path: str, *, null: bool = False) -> None:
    if not (isinstance(x, str) or (x is None and null)):
        raise _Bad(f"{path} must be a string{' or null' if null else ''}; got {_show(x)}")


def _strings(x, path: str) -> None:
    for i, item in enumerate(_arr(x, path)):
        _str(item, _at(path, i))


def _enum(x, path: str, allowed: tuple, *, null: bool = False) -> None:
    if not ((isinstance(x, str) and x in allowed) or (x is None and null)):
        raise _Bad(f"{path} is {_show(x)}; allowed: {', '.join(allowed)}{' or null' if null else ''}")


def _count(x, path: str, *, null: bool = False, minimum: int = 0) -> None:
    if x is None and null:
        return
    if not _is_int(x) or x < minimum:
        raise _Bad(f"{path} must be an integer >= {minimum}{' or null' if null else ''}; got {_show(x)}")


def _num(x, path: str, *, null: bool = True, finite: bool = False) -> None:
    """A number (NaN allowed unless finite: Python's json writes it for a metric that could not be computed)."""
    if x is None and null:
        return
    if not _is_number(x):
        raise _Bad(f"{path} must be a number{' or null' if null else ''}; got {_show(x)}")
    if finite and isinstance(x, float) and not math.isfinite(x):
        raise _Bad(f"{path} must be a finite number; got {_show(x)}")


# ---------------------------------------------------------------- results.json (format 1)

def _check_interval(x, path: str) -> None:
    if x is None:
        return
    _obj(x, path, required=("low", "high", "method"), allowed=("low", "high", "method"))
    _num(x["low"], _at(path, "low"), null=False)
    _num(x["high"], _at(path, "high"), null=False)
    _str(x["method"], _at(path, "method"))


def _check_evidence(x, path: str) -> None:
    """What the judge reads of the evidence; other keys are diagnostics."""
    if _obj(x, path, null=True) is None:
        return
    for key in ("b", "c", "n", "k"):
        if key in x:
            _count(x[key], _at(path, key))
    for key in ("delta_grid", "candidate_grid", "relative_grid"):
        for i, v in enumerate(_arr(x.get(key), _at(path, key), null=True)):
            _num(v, _at(_at(path, key), i), null=False)
    if "relative_unavailable" in x:
        _str(x["relative_unavailable"], _at(path, "relative_unavailable"), null=True)
    if "interval_confidence" in x:
        level = x["interval_confidence"]
        _num(level, _at(path, "interval_confidence"), null=False, finite=True)
        if not 0 < level < 1:
            raise _Bad(f"{_at(path, 'interval_confidence')} must be between 0 and 1; got {_show(level)}")
    if _obj(x.get("insufficient_runs"), _at(path, "insufficient_runs"), required=("needed", "runs"), null=True):
        for key in ("needed", "runs"):
            _count(x["insufficient_runs"][key], _at(_at(path, "insufficient_runs"), key))
    if x.get("not_on_this_machine") is not None and not isinstance(x["not_on_this_machine"], bool):
        raise _Bad(f"{_at(path, 'not_on_this_machine')} must be true, false or null")


def _check_metric(x, path: str, fields: tuple) -> None:
    _obj(x, path, required=("metric", "n"), allowed=fields)
    _str(x["metric"], _at(path, "metric"))
    _count(x["n"], _at(path, "n"))
    for key in ("base", "candidate", "delta", "discordant_rate"):
        _num(x.get(key), _at(path, key))
    for key in ("delta_interval", "candidate_interval", "relative_interval"):
        _check_interval(x.get(key), _at(path, key))
    _str(x.get("unavailable"), _at(path, "unavailable"), null=True)
    _check_evidence(x.get("evidence"), _at(path, "evidence"))


def _check_metrics(x, path: str, fields: tuple) -> None:
    for name, m in _obj(x, path).items():
        _check_metric(m, _at(path, name), fields)


def _check_model(x, path: str, fields: tuple) -> None:
    _obj(x, path, required=("name", "path"), allowed=fields)
    _str(x["name"], _at(path, "name"))
    _str(x["path"], _at(path, "path"))
    _sha(x.get("sha256"), _at(path, "sha256"))
    for key in ("size_bytes", "parameters"):
        _count(x.get(key), _at(path, key), null=True)
    for i, f in enumerate(_arr(x.get("files", []), _at(path, "files"))):
        fp = _at(_at(path, "files"), i)
        _obj(f, fp)
        if "path" in f:
            _str(f["path"], _at(fp, "path"))
        _count(f.get("size_bytes"), _at(fp, "size_bytes"), null=True)
    for key in ("output", "output_kind"):
        _str(x.get(key), _at(path, key), null=True)
    _obj(x.get("footprint"), _at(path, "footprint"), null=True)


def _sha(x, path: str) -> None:
    _str(x, path, null=True)
    if x is not None and (len(x) != 64 or x.strip("0123456789abcdef")):
        raise _Bad(f"{path} must be a sha256 (64 hex digits); got {_show(x)}")


def _check_grouping(x, path: str, fields: tuple) -> None:
    _obj(x, path, required=("name", "columns", "groups"),
         allowed=("name", "kind", "columns", "min_samples", "groups", "gaps", "fairness"))
    _str(x["name"], _at(path, "name"))
    _enum(x.get("kind"), _at(path, "kind"), GROUPING_KINDS, null=True)  # absent before it existed
    _strings(x["columns"], _at(path, "columns"))
    _count(x.get("min_samples", 0), _at(path, "min_samples"))
    for i, g in enumerate(_arr(x["groups"], _at(path, "groups"))):
        gp = _at(_at(path, "groups"), i)
        _obj(g, gp, required=("key", "n", "metrics"),
             allowed=("key", "n", "flips", "negative_flips", "metrics", "parameters"))
        _str(g["key"], _at(gp, "key"))
        _obj(g.get("parameters"), _at(gp, "parameters"), null=True)
        _count(g["n"], _at(gp, "n"))
        for key in ("flips", "negative_flips"):
            _count(g.get(key), _at(gp, key), null=True)
        _check_metrics(g["metrics"], _at(gp, "metrics"), fields)
    for key in ("gaps", "fairness"):
        _check_metrics(x.get(key, {}), _at(path, key), fields)


def _check_nonfinite(x, path: str) -> None:
    if _obj(x, path, required=("count", "n", "first"), null=True) is None:
        return
    _count(x["count"], _at(path, "count"))
    _count(x["n"], _at(path, "n"))
    for i, v in enumerate(_arr(x["first"], _at(path, "first"))):
        _count(v, _at(_at(path, "first"), i))


def _check_change_matrix(x, path: str) -> None:
    if _obj(x, path, null=True) is None:
        return
    _arr(x.get("classes", []), _at(path, "classes"))
    for i, row in enumerate(_arr(x.get("counts", []), _at(path, "counts"))):
        for j, v in enumerate(_arr(row, _at(_at(path, "counts"), i))):
            _count(v, f"{_at(path, 'counts')}[{i}][{j}]")


FLIP_KINDS = ("negative", "positive", "neutral", "changed")  # gate.measure.flips
FLIP_ROW_FIELDS = ("index", "line", "kind", "label", "base", "candidate", "base_score", "candidate_score",
                   "base_true", "candidate_true", "change", "groups")
FLIPS_FIELDS = ("count", "negative", "positive", "neutral", "capped", "groups", "rows", "largest", "thumbnails")
THUMBNAIL_FIELDS = ("index", "input", "label", "base", "candidate", "png")
CALIBRATION_FIELDS = ("bins", "base", "candidate", "ece_base", "ece_candidate", "brier_base", "brier_candidate")
BIN_FIELDS = ("low", "high", "count", "confidence", "accuracy")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _class(x, path: str, *, null: bool = False) -> None:
    """A class as the user names it: text or an integer."""
    if not (isinstance(x, str) or _is_int(x) or (x is None and null)):
        raise _Bad(f"{path} must be a class name or index{' or null' if null else ''}; got {_show(x)}")


def _check_flip_row(x, path: str) -> None:
    _obj(x, path, required=("index", "kind", "base", "candidate"), allowed=FLIP_ROW_FIELDS)
    _count(x["index"], _at(path, "index"))
    _count(x.get("line"), _at(path, "line"), null=True, minimum=1)
    _enum(x["kind"], _at(path, "kind"), FLIP_KINDS)
    _class(x.get("label"), _at(path, "label"), null=True)
    _class(x["base"], _at(path, "base"))
    _class(x["candidate"], _at(path, "candidate"))
    for key in ("base_score", "candidate_score", "base_true", "candidate_true", "change"):
        _num(x.get(key), _at(path, key), finite=True)
    for name, value in _obj(x.get("groups", {}), _at(path, "groups")).items():
        _str(value, _at(_at(path, "groups"), name))


def _check_flips(x, path: str) -> None:
    """The changed predictions: flips.csv and report.html's table and thumbnails are made from them."""
    if _obj(x, path, required=("count", "capped", "rows"), allowed=FLIPS_FIELDS, null=True) is None:
        return
    _count(x["count"], _at(path, "count"))
    for key in ("negative", "positive", "neutral"):
        _count(x.get(key), _at(path, key), null=True)
    if not isinstance(x["capped"], bool):
        raise _Bad(f"{_at(path, 'capped')} must be true or false; got {_show(x['capped'])}")
    _strings(x.get("groups", []), _at(path, "groups"))
    for key in ("rows", "largest"):
        for i, row in enumerate(_arr(x.get(key, []), _at(path, key))):
            _check_flip_row(row, _at(_at(path, key), i))
    for i, t in enumerate(_arr(x.get("thumbnails", []), _at(path, "thumbnails"))):
        tp = _at(_at(path, "thumbnails"), i)
        _obj(t, tp, required=THUMBNAIL_FIELDS, allowed=THUMBNAIL_FIELDS)
        _count(t["index"], _at(tp, "index"))
        _str(t["input"], _at(tp, "input"))
        _class(t["label"], _at(tp, "label"), null=True)
        _class(t["base"], _at(tp, "base"))
        _class(t["candidate"], _at(tp, "candidate"))
        _str(t["png"], _at(tp, "png"))
        if not set(t["png"]) <= _BASE64:  # it becomes a data: URI in report.html
            raise _Bad(f"{_at(tp, 'png')} must be base64 text")


def _check_calibration(x, path: str) -> None:
    """Reliability tables: report.html draws them."""
    if _obj(x, path, required=("bins",), allowed=CALIBRATION_FIELDS, null=True) is None:
        return
    _count(x["bins"], _at(path, "bins"), minimum=1)
    for side in ("base", "candidate"):
        table = _arr(x.get(side), _at(path, side), null=True)
        if x.get(side) is not None and len(table) != x["bins"]:
            raise _Bad(f"{_at(path, side)} must hold one entry per bin ({x['bins']}); got {len(table)}")
        for i, b in enumerate(table):
            bp = _at(_at(path, side), i)
            _obj(b, bp, required=BIN_FIELDS, allowed=BIN_FIELDS)
            _count(b["count"], _at(bp, "count"))
            for key in ("low", "high"):
                _num(b[key], _at(bp, key), null=False, finite=True)
            for key in ("confidence", "accuracy"):
                _num(b[key], _at(bp, key), finite=True)
    for key in CALIBRATION_FIELDS[3:]:
        _num(x.get(key), _at(path, key), finite=True)


# where the error enters (gate.measure.tensors.LayerAgreement.to_dict); tests/test_layer_agreement.py holds them
# equal to what the writer writes
LAYER_STATUSES = ("compared", "identical", "not_comparable", "skipped", "error")
LAYERS_FIELDS = ("status", "reason", "samples", "batch", "quantized", "tensors_common", "tensors_compared", "skipped",
                 "output", "output_exact", "output_sqnr_db", "first_growth", "suggested_nodes_to_exclude",
                 "noise_floor_db", "growth_db", "rows", "notes")
LAYER_ROW_FIELDS = ("tensor", "read_as", "node", "op", "dtype", "elements", "exact", "sqnr_db", "relative_error",
                    "input_sqnr_db", "drop_db", "own_sqnr_db", "grows", "nonfinite", "segment", "candidate_node")


def _bool(x, path: str, *, null: bool = False) -> None:
    if not (isinstance(x, bool) or (x is None and null)):
        raise _Bad(f"{path} must be true or false{' or null' if null else ''}; got {_show(x)}")


def _check_layers(x, path: str) -> None:
    """Tensor-by-tensor agreement with the base: report.html draws its rows and names its first growth."""
    if _obj(x, path, required=("status",), allowed=LAYERS_FIELDS, null=True) is None:
        return
    _enum(x["status"], _at(path, "status"), LAYER_STATUSES)
    for key in ("reason", "output"):
        _str(x.get(key), _at(path, key), null=True)
    for key in ("samples", "tensors_common", "tensors_compared"):
        _count(x.get(key, 0), _at(path, key))
    _count(x.get("batch"), _at(path, "batch"), null=True)
    _bool(x.get("quantized", False), _at(path, "quantized"))
    _bool(x.get("output_exact"), _at(path, "output_exact"), null=True)
    for key in ("output_sqnr_db", "noise_floor_db", "growth_db"):
        _num(x.get(key), _at(path, key), finite=True)
    for key, n in _obj(x.get("skipped", {}), _at(path, "skipped")).items():
        _count(n, _at(_at(path, "skipped"), key))
    _strings(x.get("suggested_nodes_to_exclude", []), _at(path, "suggested_nodes_to_exclude"))
    _strings(x.get("notes", []), _at(path, "notes"))
    rows = _arr(x.get("rows", []), _at(path, "rows"))
    for i, row in enumerate(rows):
        rp = _at(_at(path, "rows"), i)
        _obj(row, rp, required=("tensor", "op", "exact", "sqnr_db"), allowed=LAYER_ROW_FIELDS)
        for key in ("tensor", "op"):
            _str(row[key], _at(rp, key))
        for key in ("read_as", "node", "dtype", "candidate_node"):
            _str(row.get(key), _at(rp, key), null=True)
        _strings(row.get("segment", []), _at(rp, "segment"))
        for key in ("elements", "nonfinite"):
            _count(row.get(key, 0), _at(rp, key))
        for key in ("exact", "grows"):
            _bool(row.get(key, False), _at(rp, key))
        for key in ("sqnr_db", "relative_error", "input_sqnr_db", "drop_db", "own_sqnr_db"):
            _num(row.get(key), _at(rp, key), finite=True)
    first = x.get("first_growth")
    _count(first, _at(path, "first_growth"), null=True)
    if first is not None and first >= len(rows):  # report.html shows rows[first_growth]
        raise _Bad(f"{_at(path, 'first_growth')} is {first}, but there are {len(rows)} rows")


RELEASE_STATUSES = ("compared", "missing", "different_data", "damaged")  # gate.measurements.ReleaseComparison


def _check_releases(x, path: str, fields: tuple) -> None:
    """A candidate against blessed releases (vs: baseline / first_baseline)."""
    for vs, c in _obj(x or {}, path).items():
        _enum(vs, f"{path} key", ("baseline", "first_baseline"))
        cp = _at(path, vs)
        _obj(c, cp, required=("status",), allowed=("status", "release", "reason", "metrics"))
        _enum(c["status"], _at(cp, "status"), RELEASE_STATUSES)
        _str(c.get("reason"), _at(cp, "reason"), null=True)
        release = _obj(c.get("release"), _at(cp, "release"), null=True)
        if release is not None:
            _count(release.get("index"), _at(_at(cp, "release"), "index"), minimum=1)
            _str(release.get("name"), _at(_at(cp, "release"), "name"))
            _sha(release.get("model_sha256"), _at(_at(cp, "release"), "model_sha256"))
        _check_metrics(c.get("metrics", {}), _at(cp, "metrics"), fields)


def _metric_fields() -> tuple:
    from gate.measurements import MetricResult  # numpy: imported when a file is checked, not with the module

    return tuple(MetricResult.__dataclass_fields__)


def _check_candidate(x, path: str, fields: dict) -> None:
    _obj(x, path, required=("info", "metrics"), allowed=fields["candidate"])
    _check_model(x["info"], _at(path, "info"), fields["model"])
    _check_metrics(x["metrics"], _at(path, "metrics"), fields["metric"])
    for i, g in enumerate(_arr(x.get("groupings", []), _at(path, "groupings"))):
        _check_grouping(g, _at(_at(path, "groupings"), i), fields["metric"])
    _check_change_matrix(x.get("change_matrix"), _at(path, "change_matrix"))
    _str(x.get("error"), _at(path, "error"), null=True)
    _enum(x.get("error_kind"), _at(path, "error_kind"), ERROR_KINDS, null=True)
    _obj(x.get("speed"), _at(path, "speed"), null=True)
    for name, t in _obj(x.get("targets", {}), _at(path, "targets")).items():
        tp = _at(_at(path, "targets"), name)
        _obj(t, tp, required=("name",), allowed=("name", "host", "metrics", "speed"))
        _str(t["name"], _at(tp, "name"))
        _obj(t.get("host"), _at(tp, "host"), null=True)
        _check_metrics(t.get("metrics", {}), _at(tp, "metrics"), fields["metric"])
        _obj(t.get("speed"), _at(tp, "speed"), null=True)
    _check_nonfinite(x.get("nonfinite"), _at(path, "nonfinite"))
    _strings(x.get("notes", []), _at(path, "notes"))
    _check_flips(x.get("flips"), _at(path, "flips"))
    _check_calibration(x.get("calibration"), _at(path, "calibration"))
    _check_releases(x.get("releases"), _at(path, "releases"), fields["metric"])
    _check_layers(x.get("layers"), _at(path, "layers"))


def _check_header(body: dict, path: str = "") -> None:
    """The settings every number of the file depends on: finite, never NaN."""
    _enum(body["task"], _at(path, "task"), TASKS)
    _count(body["n_samples"], _at(path, "n_samples"), minimum=1)
    _num(body["confidence"], _at(path, "confidence"), null=False, finite=True)
    if not 0.5 < body["confidence"] < 1:
        raise _Bad(f"{_at(path, 'confidence')} must be between 0.5 and 1; got {_show(body['confidence'])}")
    for key in ("seed", "bootstrap"):
        _count(body[key], _at(path, key))


def _check_cache(x, path: str) -> None:
    if _obj(x, path, required=("status",), allowed=("status", "key", "note"), null=True) is None:
        return
    _enum(x["status"], _at(path, "status"), ("hit", "stored", "refreshed", "off"))
    _str(x.get("key"), _at(path, "key"), null=True)
    _str(x.get("note"), _at(path, "note"), null=True)


def _check_sequential(x, path: str, body: dict) -> None:
    """What the judge reads of the looks (judge._sequential_families): a plan it can rebuild at the results'
    own level, the look that stopped the run and its samples, and each rule's number of tests."""
    if _obj(x, path, required=("fractions", "alpha", "spending", "look", "samples", "of"), null=True) is None:
        return
    from gate.measure.sequential import look_sizes, plan

    def real(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    fractions, alpha = x["fractions"], x["alpha"]
    if not (isinstance(fractions, list) and all(real(f) for f in fractions) and real(alpha)):
        raise _Bad(f"{path}.fractions must be a list of numbers and {path}.alpha a number; got "
                   f"{_show(fractions)} and {_show(alpha)}")
    try:
        the_plan = plan(tuple(fractions), alpha, x["spending"])
    except (TypeError, ValueError) as exc:
        raise _Bad(f"{path} does not describe looks the gate can plan: {exc}") from None
    confidence = body.get("confidence")
    if real(confidence) and abs(alpha - (1 - confidence) / 2) > 1e-12:
        raise _Bad(f"{_at(path, 'alpha')} is {_show(alpha)}, but the results' confidence {_show(confidence)} "
                   f"gives {(1 - confidence) / 2!r} per side")
    look, samples, of = x["look"], x["samples"], x["of"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (look, samples, of)) or \
            not 1 <= look <= the_plan.looks or of < 1:
        raise _Bad(f"{_at(path, 'look')} must be a look number from 1 to {the_plan.looks} and samples and of "
                   f"whole numbers; got {_show(look)}, {_show(samples)}, {_show(of)}")
    try:
        expected = look_sizes(of, the_plan)[look - 1]
    except ValueError as exc:
        raise _Bad(f"{path}: {exc}") from None
    if samples != expected or samples != body.get("n_samples"):
        raise _Bad(f"{_at(path, 'samples')} is {_show(samples)}, but look {look} of {of} samples sees {expected} "
                   f"and the results hold {_show(body.get('n_samples'))}")
    for key, tests in _obj(x.get("tests", {}), _at(path, "tests")).items():
        if not (re.fullmatch(r"[1-9][0-9]{0,5}", key) and isinstance(tests, int) and not isinstance(tests, bool)
                and 1 <= tests <= 10**9):
            raise _Bad(f"{_at(path, 'tests')} must map rule numbers to a count of tests (1 to 10^9); got "
                       f"{_show(key)}: {_show(tests)}")


def results_problem(doc) -> str | None:
    """The first thing wrong with a results.json document (as parsed), or None. The format is checked first."""
    from gate.measurements import CandidateMeasurements, Measurements, MetricResult, ModelInfo  # numpy

    # the fields the writer writes are the dataclasses' own: an unknown one is damage (or another format)
    fields = {"metric": tuple(MetricResult.__dataclass_fields__), "model": tuple(ModelInfo.__dataclass_fields__),
              "candidate": tuple(CandidateMeasurements.__dataclass_fields__)}
    try:
        _obj(doc, "", required=("gate_results",))
        body = doc["gate_results"]
        _obj(body, "gate_results")
        if body.get("format") != RESULTS_FORMAT:
            return f"gate_results.format is {_show(body.get('format'))}; this gate reads format {RESULTS_FORMAT}"
        body_fields = ("format", *(f for f in Measurements.__dataclass_fields__ if f != "format"))
        _obj(body, "gate_results", required=("task", "n_samples", "confidence", "seed", "bootstrap", "base",
                                             "candidates", "data", "provenance"), allowed=body_fields)
        _check_header(body, "gate_results")
        _check_model(body["base"], "gate_results.base", fields["model"])
        for name, value in _obj(body.get("base_metrics", {}), "gate_results.base_metrics").items():
            _num(value, _at("gate_results.base_metrics", name))
        for i, cand in enumerate(_arr(body["candidates"], "gate_results.candidates")):
            _check_candidate(cand, f"gate_results.candidates[{i}]", fields)
        data = _obj(body["data"], "gate_results.data")
        _str(data.get("path"), "gate_results.data.path", null=True)
        _sha(data.get("sha256"), "gate_results.data.sha256")
        provenance = _obj(body["provenance"], "gate_results.provenance")
        _obj(provenance.get("host"), "gate_results.provenance.host", null=True)
        _check_cache(provenance.get("cache"), "gate_results.provenance.cache")
        _check_sequential(provenance.get("sequential"), "gate_results.provenance.sequential", body)
        target = _obj(provenance.get("target"), "gate_results.provenance.target", null=True)
        if target is not None and "name" in target:
            _str(target["name"], "gate_results.provenance.target.name")
    except _Bad as exc:
        return str(exc)
    return None


def load_results_file(path: str | Path):
    """results.json (`gate measure --out`) -> Measurements, or ContractError naming the file and the problem."""
    from gate.measurements import Measurements

    path = Path(path)
    fix = "give the file `gate measure --out` wrote"
    doc = _read_json(path, fix, strict=False)
    if not isinstance(doc, dict) or "gate_results" not in doc:
        if isinstance(doc, dict) and "report_format" in doc:
            raise ContractError("is a report (report.json), not a gate results file", path=path,
                                fix=f"{fix}; report.json is what `gate judge` writes from it")
        raise ContractError("is not a gate results file (no gate_results)", path=path, fix=fix)
    body = doc["gate_results"]
    if isinstance(body, dict) and body.get("format") != RESULTS_FORMAT:
        raise ContractError(f"has results format {_show(body.get('format'))}; this gate reads format "
                            f"{RESULTS_FORMAT}", path=path,
                            fix="measure again with this version of the gate (or judge with the version that "
                                "measured)")
    problem = results_problem(doc)
    if problem:
        raise ContractError(f"does not have the shape of a results file: {problem}", path=path, fix=_RESULTS_FIX)
    try:
        return Measurements.from_dict(body)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # checked above; a slip is still exit 2
        raise ContractError(f"does not have the shape of a results file ({type(exc).__name__}: {str(exc)[:200]})",
                            path=path, fix=_RESULTS_FIX) from None


# ---------------------------------------------------------------- report.json (report_format 2)

def _check_tally(x, path: str) -> None:
    _obj(x, path, required=TALLY_COUNTS + TALLY_LISTS, allowed=TALLY_COUNTS + TALLY_LISTS)
    for key in TALLY_COUNTS:
        _count(x[key], _at(path, key))
    for key in TALLY_LISTS:
        _strings(x[key], _at(path, key))


def _check_pair(x, path: str) -> None:
    if x is None:
        return
    if not isinstance(x, list) or len(x) != 2:
        raise _Bad(f"{path} must be [low, high] or null; got {_show(x)}")
    for i, v in enumerate(x):
        _num(v, _at(path, i), finite=True)


def _check_rule(x, path: str) -> None:
    _obj(x, path, required=RULE_REQUIRED, allowed=RULE_FIELDS)
    for key in ("rule", "metric", "bound_text", "reason"):
        _str(x[key], _at(path, key))
    _count(x["index"], _at(path, "index"), minimum=1)
    _enum(x["bound_kind"], _at(path, "bound_kind"), BOUND_KINDS)
    _num(x["threshold"], _at(path, "threshold"), null=False, finite=True)
    _enum(x["severity"], _at(path, "severity"), SEVERITIES)
    _enum(x["status"], _at(path, "status"), STATUSES)
    if not isinstance(x["blocking"], bool):
        raise _Bad(f"{_at(path, 'blocking')} must be true or false; got {_show(x['blocking'])}")
    if x["status"] == "pass" and x["blocking"]:
        raise _Bad(f"{path} passes and blocks")
    for key in ("observed", "base", "candidate"):
        _num(x[key], _at(path, key), finite=True)
    _check_pair(x["interval"], _at(path, "interval"))
    for key in ("samples_needed", "n"):
        _count(x.get(key), _at(path, key), null=True)
    _count(x.get("line"), _at(path, "line"), null=True, minimum=1)
    if "vs" in x:  # absent in reports written before blessed baselines existed
        _enum(x["vs"], _at(path, "vs"), ("base", "baseline", "first_baseline"))
    for i, g in enumerate(_arr(x.get("groups", []), _at(path, "groups"))):
        gp = _at(_at(path, "groups"), i)
        _obj(g, gp, required=("grouping", "group", "n", "status"))
        _str(g["grouping"], _at(gp, "grouping"))
        _str(g["group"], _at(gp, "group"))
        _count(g["n"], _at(gp, "n"))
        _enum(g["status"], _at(gp, "status"), GROUP_STATUSES)
        for key in ("observed", "base", "candidate", "p_value"):
            _num(g.get(key), _at(gp, key), finite=True)
        _check_pair(g.get("interval"), _at(gp, "interval"))
        for key in ("where", "reason"):
            if key in g:
                _str(g[key], _at(gp, key))
        _count(g.get("samples_needed"), _at(gp, "samples_needed"), null=True)


def _format_problem(doc, key: str, expected: int) -> str | None:
    """A document (an object) of another format than this gate reads: said first, before any field."""
    _obj(doc, "")
    if doc.get(key) == expected:
        return None
    if key not in doc:
        return f"no {key}"
    return f"{key} is {_show(doc.get(key))}; this gate reads format {expected}"


def report_problem(doc) -> str | None:
    """The first thing wrong with a report.json document (as parsed), or None. The format is checked first.

    Checked: what the Action and any later reader of verdicts read (verdict, tallies, candidates, rules,
    input errors, the policy's path); and that a passing verdict has no failing candidate, blocking rule or
    failed count. The measurements inside the report are described by the schema and not re-checked here."""
    try:
        wrong = _format_problem(doc, "report_format", REPORT_FORMAT)
        if wrong:
            return wrong
        _obj(doc, "", required=REPORT_FIELDS, allowed=REPORT_FIELDS)
        _enum(doc["verdict"], "verdict", VERDICTS)
        _check_tally(doc["tally"], "tally")
        _check_header(doc)
        _enum(doc["inconclusive"], "inconclusive", ("fail", "warn"))
        _obj(doc["base"], "base", required=("model", "metrics"), allowed=("model", "metrics"))
        for i, cand in enumerate(_arr(doc["candidates"], "candidates")):
            cp = f"candidates[{i}]"
            _obj(cand, cp, required=("name", "verdict", "error", "tally", "rules"), allowed=REPORT_CANDIDATE_FIELDS)
            _str(cand["name"], _at(cp, "name"))
            _enum(cand["verdict"], _at(cp, "verdict"), VERDICTS)
            _str(cand["error"], _at(cp, "error"), null=True)
            _check_tally(cand["tally"], _at(cp, "tally"))
            _check_releases(cand.get("releases"), _at(cp, "releases"), _metric_fields())
            for j, rule in enumerate(_arr(cand["rules"], _at(cp, "rules"))):
                _check_rule(rule, f"{cp}.rules[{j}]")
            if cand["verdict"] == "pass" and (cand["tally"]["failed"] or any(r["blocking"] for r in cand["rules"])):
                return f"{cp} passes with a blocking rule or a failed count"
        _strings(doc["input_errors"], "input_errors")
        provenance = _obj(doc["provenance"], "provenance", required=("policy", "models"))
        policy = _obj(provenance["policy"], "provenance.policy", required=("path", "sha256"))
        _str(policy["path"], "provenance.policy.path", null=True)
        _sha(policy["sha256"], "provenance.policy.sha256")
        _str(policy.get("text"), "provenance.policy.text", null=True)
        if "data" in provenance:
            data = _obj(provenance["data"], "provenance.data")
            _str(data.get("path"), "provenance.data.path", null=True)
            _sha(data.get("sha256"), "provenance.data.sha256")
        for name, digest in _obj(provenance["models"], "provenance.models").items():
            _sha(digest, _at("provenance.models", name))
        if doc["verdict"] == "pass" and (doc["tally"]["failed"] or
                                         any(c["verdict"] != "pass" for c in doc["candidates"])):
            return "verdict pass with a failing candidate or a failed count"
    except _Bad as exc:
        return str(exc)
    return None


def load_report(path: str | Path) -> dict:
    """report.json -> its document, checked. ContractError naming the file and the problem."""
    path = Path(path)
    doc = _read_json(path, _REPORT_FIX, strict=True)
    if isinstance(doc, dict) and "gate_results" in doc:
        raise ContractError("is a results file of `gate measure`, not a report", path=path,
                            fix="judge it first: gate judge RESULTS --policy P --out DIR")
    if isinstance(doc, dict) and doc.get("report_format") not in (None, REPORT_FORMAT):
        raise ContractError(f"has report_format {_show(doc.get('report_format'))}; this gate reads format "
                            f"{REPORT_FORMAT}", path=path,
                            fix="make the report again with this version of the gate (gate judge on the "
                                "results, or gate check), or read it with the version that wrote it")
    problem = report_problem(doc)
    if problem:
        # a damaged report is refused, never read as far as it goes: a skipped rule could hide a failure
        raise ContractError(f"not a report.json of this gate ({problem})", path=path, fix=_REPORT_FIX)
    return doc


def load_report_dir(report_dir: str | Path) -> tuple[dict, str]:
    """(report.json checked, report.md text) of a report folder. ContractError naming the file and the problem."""
    report_dir = Path(report_dir)
    fix = f"run `gate check --out {report_dir}` first (or download the report artifact into {report_dir})"
    json_path, md_path = report_dir / "report.json", report_dir / "report.md"
    for path in (json_path, md_path):
        if not path.is_file():
            raise ContractError("not found", path=path, fix=fix)
    report = load_report(json_path)
    data = _read_bytes(md_path, MAX_MARKDOWN_BYTES, _REPORT_FIX)
    try:
        markdown = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"is not UTF-8 text (byte {exc.start})", path=md_path, fix=_REPORT_FIX) from None
    return report, markdown


# ---------------------------------------------------------------- manifest.json (manifest_format 1)

MANIFEST_SCHEMA = SCHEMAS / "manifest.schema.json"
MANIFEST_FORMAT = 1  # gate.report.manifest.MANIFEST_FORMAT
MAX_MANIFEST_BYTES = 1_000_000  # a few lines per report file
_MANIFEST_FIX = ("give the folder `gate check --out` or `gate judge --out` wrote, unchanged (manifest.json is "
                 "written with the reports since gate 0.1; make the report again to get one)")


def _safe_relative(x, path: str) -> None:
    """A file inside the report folder: a manifest naming ../ or an absolute path must not make verify read
    (or vouch for) a file elsewhere."""
    _str(x, path)
    if not x or len(x) > 1024 or not x.isprintable() or "\\" in x or x.startswith("/") or (len(x) > 1 and x[1] == ":"):
        raise _Bad(f"{path} is {_show(x)}: not a relative path inside the report folder")
    if any(part in ("", ".", "..") for part in x.split("/")):
        raise _Bad(f"{path} is {_show(x)}: not a plain path inside the report folder (no '.', '..' or empty parts)")


def manifest_problem(doc) -> str | None:
    """The first thing wrong with a manifest.json document (as parsed), or None."""
    try:
        wrong = _format_problem(doc, "manifest_format", MANIFEST_FORMAT)
        if wrong:
            return wrong
        _obj(doc, "", required=("manifest_format", "gate_version", "files"),
             allowed=("manifest_format", "gate_version", "files"))
        _str(doc["gate_version"], "gate_version")
        seen = set()
        for i, entry in enumerate(_arr(doc["files"], "files")):
            fp = _at("files", i)
            _obj(entry, fp, required=("path", "sha256", "size_bytes"), allowed=("path", "sha256", "size_bytes"))
            _safe_relative(entry["path"], _at(fp, "path"))
            _sha(entry["sha256"], _at(fp, "sha256"))
            if entry["sha256"] is None:
                raise _Bad(f"{_at(fp, 'sha256')} must be a sha256; got null")
            _count(entry["size_bytes"], _at(fp, "size_bytes"))
            if entry["path"] in seen or entry["path"] == "manifest.json":
                raise _Bad(f"{_at(fp, 'path')} {_show(entry['path'])} is listed twice or is the manifest itself")
            seen.add(entry["path"])
    except _Bad as exc:
        return str(exc)
    return None


def load_manifest(report_dir: str | Path) -> dict:
    """REPORT_DIR/manifest.json, checked: ContractError naming the file and the problem."""
    path = Path(report_dir) / "manifest.json"
    if os.path.islink(path):  # verify follows no link: the manifest vouches for the folder it is in
        raise ContractError("is a link, not the file the gate wrote", path=path, fix=_MANIFEST_FIX)
    data = _read_bytes(path, MAX_MANIFEST_BYTES, _MANIFEST_FIX)
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ContractError("is not readable JSON: nested too deeply", path=path, fix=_MANIFEST_FIX) from None
    except UnicodeDecodeError as exc:
        raise ContractError(f"is not UTF-8 text (byte {exc.start})", path=path, fix=_MANIFEST_FIX) from None
    except ValueError as exc:
        raise ContractError(f"is not readable JSON: {str(exc)[:200]}", path=path, fix=_MANIFEST_FIX) from None
    problem = manifest_problem(doc)
    if problem:
        raise ContractError(f"not a manifest.json of this gate ({problem})", path=path, fix=_MANIFEST_FIX)
    return doc
