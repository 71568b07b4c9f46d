"""jinja2 environments and the small pure filters templates may use."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from gate import fmt
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


def group_rows(candidate: dict, task: str) -> list[dict]:
    """Every subgroup of every grouping with the task's headline metric, worst change first."""
    from gate.measure.registry import get_metric

    metric = headline(task)
    higher = get_metric(metric).higher_is_better
    rows = []
    for grouping in candidate.get("groupings", []):
        for group in grouping["groups"]:
            m = group["metrics"].get(metric)
            if not m or m.get("unavailable"):
                continue
            iv = m.get("delta_interval") or {}
            rows.append({"grouping": grouping["name"], "key": group["key"], "label": f"{grouping['name']}={group['key']}",
                         "n": group["n"], "metric": metric, "base": m["base"], "candidate": m["candidate"],
                         "delta": m["delta"], "low": iv.get("low"), "high": iv.get("high"),
                         "flips": group.get("flips"), "negative_flips": group.get("negative_flips")})
    worst_first = (lambda r: (r["delta"] if r["delta"] is not None else 0.0)) if higher else \
        (lambda r: -(r["delta"] if r["delta"] is not None else 0.0))
    return sorted(rows, key=lambda r: (worst_first(r), r["label"]))


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
        points.append({"name": c["name"], "verdict": c["verdict"],
                       "quality": (c["metrics"].get(quality) or {}).get("candidate"), "cost": cost_of.get(c["name"])})
    return Markup(pareto_svg(points, quality=quality, higher_is_better=get_metric(quality).higher_is_better,
                             cost=cost, cost_label=label))


def latency_chart(candidate: dict):
    from markupsafe import Markup

    from gate.report.charts import latency_svg

    speed = candidate.get("speed") or {}
    if not speed.get("base") or not speed.get("candidate"):
        return ""
    return Markup(latency_svg(speed["base"].get("quantiles_ms"), speed["candidate"].get("quantiles_ms"),
                              name=candidate["name"]))


def top_changes(matrix: dict | None, k: int = 10) -> list[dict]:
    """The largest base-class -> candidate-class moves."""
    if not matrix:
        return []
    classes, counts = matrix["classes"], matrix["counts"]
    moves = [{"from": classes[i], "to": classes[j], "count": counts[i][j]}
             for i in range(len(classes)) for j in range(len(classes)) if i != j and counts[i][j]]
    return sorted(moves, key=lambda m: (-m["count"], str(m["from"]), str(m["to"])))[:k]


def p_value(p) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


FILTERS = {
    "headline": headline,
    "pareto_chart": pareto_chart,
    "latency_chart": latency_chart,
    "top_changes": top_changes,
    "p_value": p_value,
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


def _bytecode_cache():
    """Compiled templates kept between runs (compiling the three takes a quarter second)."""
    import os

    from jinja2 import FileSystemBytecodeCache

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gate" / "jinja"
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
              bytecode_cache=_bytecode_cache(),
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
