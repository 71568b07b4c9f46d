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


FILTERS = {
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


def environment(templates: Path | None, *, autoescape: bool) -> Environment:
    loaders = [FileSystemLoader(str(templates_dir()))]
    cls = Environment
    if templates is not None:
        # user templates come from a repository: they run sandboxed
        loaders.insert(0, FileSystemLoader(str(templates)))
        cls = SandboxedEnvironment
    env = cls(loader=ChoiceLoader(loaders), undefined=StrictUndefined, keep_trailing_newline=True,
              trim_blocks=True, lstrip_blocks=True,
              autoescape=select_autoescape(enabled_extensions=("html.j2", "xml.j2"), default=False)
              if autoescape else False)
    env.filters.update(FILTERS)
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
