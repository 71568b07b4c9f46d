"""jinja2 environments and the small pure filters templates may use."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from gate import fmt
from gate.judge import level_text
from gate.resources import templates_dir

STATUS_ICON = {"pass": "✅", "fail": "❌", "warn": "⚠️", "inconclusive": "❔", "error": "💥"}
STATUS_ORDER = {"error": 0, "fail": 1, "inconclusive": 2, "warn": 3, "pass": 4}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")


def md(text) -> str:
    """Escape user data for a Markdown table cell: it can neither break the table nor inject markup."""
    text = " ".join(str(text).split())  # newlines would end the table row
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\\&", "&amp;").replace("\\<", "&lt;").replace("\\>", "&gt;")


def truncate(text, length: int = 80) -> str:
    text = str(text)
    return text if len(text) <= length else text[: length - 1] + "…"


def rules_sorted(rules: list[dict]) -> list[dict]:
    """Failures first, then by rule order."""
    return sorted(rules, key=lambda r: (0 if r["blocking"] and r["status"] != "pass" else 1,
                                        STATUS_ORDER.get(r["status"], 9), r["index"]))


def candidates_sorted(candidates: list[dict]) -> list[dict]:
    return sorted(candidates, key=lambda c: (0 if c["verdict"] == "fail" else 1, c["name"]))


def _interval(iv, ref=None, metric: str = "") -> str:
    if not iv or iv[0] is None or iv[1] is None:
        return "–"
    if iv[0] == iv[1]:
        return "exact"
    return f"{fmt.number(iv[0], ref, metric=metric)} to {fmt.number(iv[1], ref, metric=metric)}"


def _is_perturbation(grouping: dict) -> bool:
    return grouping.get("kind") == "perturbation"


def group_rows(candidate: dict, task: str, perturbations: bool = False) -> list[dict]:
    """Every subgroup of every grouping (or, with perturbations, every perturbation of the inputs) with the
    task's headline metric, worst change first. A perturbation's row carries `parameters` (its kind and
    parameters as text) and `unavailable` (why it could not be compared), since a lost comparison there is a
    finding, not a gap in the table."""
    from gate.measure.registry import get_metric

    metric = headline(task)
    higher = get_metric(metric).higher_is_better
    rows = []
    for grouping in candidate.get("groupings", []):
        if _is_perturbation(grouping) != perturbations:
            continue
        for group in grouping["groups"]:
            m = group["metrics"].get(metric)
            if not m or (m.get("unavailable") and not perturbations):
                continue
            iv = m.get("delta_interval") or {}
            label = group["key"] if perturbations else f"{grouping['name']}={group['key']}"
            rows.append({"grouping": grouping["name"], "key": group["key"], "label": label,
                         "n": group["n"], "metric": metric, "base": m["base"], "candidate": m["candidate"],
                         "delta": m["delta"], "low": iv.get("low"), "high": iv.get("high"),
                         "flips": group.get("flips"), "negative_flips": group.get("negative_flips"),
                         "parameters": parameters_text(group.get("parameters")), "unavailable": m.get("unavailable")})
    worst_first = (lambda r: (r["delta"] if r["delta"] is not None else 0.0)) if higher else \
        (lambda r: -(r["delta"] if r["delta"] is not None else 0.0))
    return sorted(rows, key=lambda r: (r["unavailable"] is None, worst_first(r), r["label"]))


def parameters_text(parameters: dict | None) -> str:
    """A perturbation's parameters as a reader wants them: "gaussian_noise, snr_db 20, seed 0"."""
    if not parameters:
        return ""
    rest = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in parameters.items()
            if k not in ("kind", "index")]
    return ", ".join([str(parameters.get("kind", ""))] + rest)


# subgroups drawn and listed in report.html; the rest are counted, and all are in report.json
GROUPS_SHOWN = 40
_GROUP_STATUS_ORDER = {**STATUS_ORDER, "too_small": 3}


def tests_shown(tests: list[dict], bound_kind: str) -> list[dict]:
    """A per-group rule's subgroup tests, the deciding ones first, then the worst observed (at most GROUPS_SHOWN)."""
    lower_is_worse = bound_kind == "min"

    def worst(t: dict) -> float:
        x = t.get("observed")
        if x is None:
            return 0.0
        return x if lower_is_worse else -x

    ordered = sorted(tests, key=lambda t: (_GROUP_STATUS_ORDER.get(t.get("status"), 9), worst(t), t.get("where", "")))
    return ordered[:GROUPS_SHOWN]


def most_lost(rows: list[dict], k: int = 5) -> list[dict]:
    """The subgroups with the most samples gone from right to wrong."""
    lost = [r for r in rows if r.get("negative_flips")]
    return sorted(lost, key=lambda r: (-r["negative_flips"], r["label"]))[:k]


def forest_chart(rows: list[dict], confidence: float, task: str):
    from markupsafe import Markup

    from gate.measure.registry import get_metric
    from gate.report.charts import forest_svg

    if not rows:
        return ""
    metric = rows[0]["metric"]
    # the SVG is produced by matplotlib, which escapes every text it writes; thousands of subgroups
    # would take minutes to draw and nobody could read them: the worst ones are drawn
    rows = rows[:GROUPS_SHOWN]
    return Markup(forest_svg(rows, metric=metric, confidence=confidence,
                             higher_is_better=get_metric(metric).higher_is_better))


def headline(task: str) -> str:
    """The task's headline metric: the record marked headline (accuracy, mae)."""
    from gate.measure.registry import headline_for

    return headline_for(task)


def pareto_chart(report: dict, cost: str):
    """Quality against cost for the base and every candidate: cost is "size" or a latency metric."""
    from markupsafe import Markup

    from gate.measure.registry import get_metric
    from gate.report.charts import pareto_svg

    quality = headline(report["task"])
    if cost == "size":
        cost_of = {"base": report["base"]["model"]["size_bytes"] / 1e6}
        cost_of.update({c["name"]: c["model"]["size_bytes"] / 1e6 for c in report["candidates"]
                        if c["model"].get("size_bytes") is not None})
        label = "model size (MB)"
    else:  # median latency from the interleaved speed measurement
        timed = [c for c in report["candidates"] if (c.get("speed") or {}).get("candidate")]
        cost_of = {c["name"]: c["speed"]["candidate"]["p50_ms"] for c in timed}
        if timed:
            cost_of["base"] = timed[0]["speed"]["base"]["p50_ms"]
        label = "median latency per call (ms)"
    points = [{"name": "base", "verdict": "base", "quality": report["base"]["metrics"].get(quality),
               "cost": cost_of.get("base")}]
    for c in report["candidates"]:
        measured = c["metrics"].get(quality) or {}
        interval = measured.get("candidate_interval") or {}
        points.append({"name": c["name"], "verdict": c["verdict"], "quality": measured.get("candidate"),
                       "low": interval.get("low"), "high": interval.get("high"), "cost": cost_of.get(c["name"])})
    return Markup(pareto_svg(points, quality=quality, higher_is_better=get_metric(quality).higher_is_better,
                             cost=cost, cost_label=label, confidence=report.get("confidence")))


def latency_chart(candidate: dict):
    from markupsafe import Markup

    from gate.report.charts import latency_svg

    speed = candidate.get("speed") or {}
    if not speed.get("base") or not speed.get("candidate"):
        return ""
    return Markup(latency_svg(speed["base"].get("quantiles_ms"), speed["candidate"].get("quantiles_ms"),
                              name=candidate["name"]))


def reliability_chart(candidate: dict):
    from markupsafe import Markup

    from gate.report.charts import reliability_svg

    cal = candidate.get("calibration") or {}
    if not cal.get("base") and not cal.get("candidate"):
        return ""
    return Markup(reliability_svg(cal.get("base"), cal.get("candidate"), name=candidate["name"]))


def top_changes(matrix: dict | None, k: int = 10) -> list[dict]:
    """The largest base-class -> candidate-class moves."""
    if not matrix:
        return []
    classes, counts = matrix["classes"], matrix["counts"]
    moves = [{"from": classes[i], "to": classes[j], "count": counts[i][j]}
             for i in range(len(classes)) for j in range(len(classes)) if i != j and counts[i][j]]
    return sorted(moves, key=lambda m: (-m["count"], str(m["from"]), str(m["to"])))[:k]


_WORST_FIRST = ("error", "fail", "inconclusive", "warn", "pass")


def _worst(rules: list[dict]) -> str | None:
    statuses = {r["status"] for r in rules}
    return next((s for s in _WORST_FIRST if s in statuses), None)


def release_summary(report: dict) -> list[dict]:
    """The release manager's view: per candidate, the verdict of its rules against the base and against the
    last blessed release, and what changed since that release (the headline metric and the flips)."""
    hl = headline(report["task"])
    rows = []
    for c in report["candidates"]:
        against = (c.get("releases") or {}).get("baseline")
        if against is None:
            continue
        rules = c.get("rules", [])
        changed = (against.get("metrics") or {})
        rows.append({"name": c["name"], "verdict": c["verdict"],
                     "vs_base": _worst([r for r in rules if r.get("vs", "base") == "base"]),
                     "vs_release": _worst([r for r in rules if r.get("vs") == "baseline"]),
                     "release": against.get("release"), "status": against["status"], "reason": against.get("reason"),
                     "headline": hl, "change": changed.get(hl), "flips": changed.get("flip_rate")})
    return rows


def p_value(p) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


# tensors report.html lists when a comparison tensor by tensor has more: the lowest SQNR (and the first growth)
LAYER_ROWS_SHOWN = 40


def layer_rows(layers: dict | None) -> list[dict]:
    """The rows of a tensor-by-tensor comparison report.html lists, in graph order, each with its `index`:
    every row of a small graph, else the LAYER_ROWS_SHOWN with the lowest SQNR plus the first growth."""
    layers = layers or {}
    rows = [dict(r, index=i) for i, r in enumerate(layers.get("rows") or [])]
    if len(rows) <= LAYER_ROWS_SHOWN:
        return rows

    def worst(r: dict) -> tuple:  # a base zero everywhere and a candidate not: the worst; exact: the best
        if r.get("exact"):
            return (2, 0.0, r["index"])
        return (0 if r.get("sqnr_db") is None else 1, r.get("sqnr_db") or 0.0, r["index"])

    keep = {r["index"] for r in sorted(rows, key=worst)[:LAYER_ROWS_SHOWN]}
    if layers.get("first_growth") is not None:
        keep.add(layers["first_growth"])
    return [r for r in rows if r["index"] in keep]


def layers_chart(candidate: dict):
    from markupsafe import Markup

    from gate.report.charts import layers_svg

    layers = candidate.get("layers") or {}
    if not layers.get("rows"):
        return ""
    return Markup(layers_svg(layers["rows"], first_growth=layers.get("first_growth"), name=candidate["name"]))


def py_list(names) -> str:
    """Names as a list to paste into Python or YAML (a JSON string is both), on one line. Backticks and markup
    characters are written as \\u escapes, which both read back as the same name: a name can neither close the
    Markdown code fence around it nor carry a tag anywhere."""
    import json

    text = json.dumps([str(n) for n in names or []], ensure_ascii=True)
    return text.translate({ord(c): f"\\u{ord(c):04x}" for c in "`<>&"})


FILTERS = {
    "headline": headline,
    "layer_rows": layer_rows,
    "layers_chart": layers_chart,
    "py_list": py_list,
    "db": lambda x: "–" if x is None else f"{x:.1f}",
    "pareto_chart": pareto_chart,
    "latency_chart": latency_chart,
    "reliability_chart": reliability_chart,
    "top_changes": top_changes,
    "p_value": p_value,
    "level": level_text,
    "release_summary": release_summary,
    "group_rows": group_rows,
    "most_lost": most_lost,
    "tests_shown": tests_shown,
    "forest_chart": forest_chart,
    "num": lambda x, ref=None, metric="": fmt.number(x, ref, metric=metric),
    "pct": fmt.pct,
    "signed": fmt.signed,
    "md": md,
    "icon": lambda status: STATUS_ICON.get(status, "?"),
    "interval": _interval,
    "truncate_text": truncate,
    "rules_sorted": rules_sorted,
    "candidates_sorted": candidates_sorted,
}


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _finalize(value):
    """Characters XML 1.0 forbids (escape codes, bells in a name) would make junit.xml unparsable."""
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return _NOT_XML.sub("\ufffd", value)
    return value


def _bytecode_cache(kind: str):
    """Compiled templates kept between runs (compiling the three takes a quarter second). One folder per kind
    of environment: jinja2 keys its cache by template file and source only, and a shipped template compiled in
    the sandbox (calls through `environment.call`) fails when the plain environment loads it, and back."""
    import os

    from jinja2 import FileSystemBytecodeCache

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gate" / "jinja" / kind
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".writable"
        probe.touch()
    except OSError:
        return None  # a read-only home: compile every time
    return FileSystemBytecodeCache(str(root))


def environment(templates: Path | None, *, autoescape: bool) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir()))]
    cls = Environment
    if templates is not None:
        # user templates come from a repository: they run sandboxed
        loaders.insert(0, FileSystemLoader(str(templates)))
        cls = SandboxedEnvironment
    env = cls(loader=ChoiceLoader(loaders), undefined=StrictUndefined, keep_trailing_newline=True, finalize=_finalize,
              bytecode_cache=_bytecode_cache("sandboxed" if cls is SandboxedEnvironment else "trusted"),
              trim_blocks=True, lstrip_blocks=True,
              autoescape=select_autoescape(enabled_extensions=("html.j2", "xml.j2"), default=False)
              if autoescape else False)
    env.filters.update(FILTERS)
    env.globals["groups_shown"] = GROUPS_SHOWN
    return env


def render_markdown(data: dict, templates: Path | None = None) -> str:
    """Full detail if it fits GitHub's limit; otherwise fewer details, never a cut table."""
    from gate.report import MARKDOWN_LIMIT

    template = environment(templates, autoescape=False).get_template("report.md.j2")
    n = len(data["candidates"])
    text = ""
    for show_passing, detail_limit in ((True, n), (False, n), *((False, k) for k in (50, 20, 10, 5, 2, 1, 0))):
        text = template.render(report=data, show_passing=show_passing, detail_limit=detail_limit,
                               limit=MARKDOWN_LIMIT)
        if len(text) <= MARKDOWN_LIMIT:
            return text
    return text[: MARKDOWN_LIMIT - 200] + "\n\n… cut to fit GitHub's size limit: the full report is report.html.\n"


def render_html(data: dict, templates: Path | None = None) -> str:
    return environment(templates, autoescape=True).get_template("report.html.j2").render(report=data)


def render_junit(data: dict, templates: Path | None = None) -> str:
    return environment(templates, autoescape=True).get_template("junit.xml.j2").render(report=data)
