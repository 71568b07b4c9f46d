"""`gate history REPORT...`: every judged metric across releases, as history.md and history.html.

A release is one report.json (read only through gate/contract.py: a damaged one is exit 2 naming the
file). Releases are ordered by when they were judged (provenance.finished), or as given. For every
metric a rule judged, one row per (release, candidate): the candidate's value and its interval, the
statuses of the rules that judged it, the candidate's verdict, whether that model file was blessed,
and the drift: the value minus the value of the first blessed release (of the first release when no
blessing is known), so a slow slide that each release's own bound let through shows up.

build_history is pure (documents in, a History out); the reading, the charts (gate/report/charts.py)
and the templates (templates/history.*.j2) are at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gate.errors import GateInputError

# worst first: the status a row shows when several rules judge one metric
_SEVERITY = ("error", "fail", "inconclusive", "warn", "pass")
MAX_REPORTS = 1000  # a history is read by people: more releases than this is a wrong folder


@dataclass(frozen=True, kw_only=True)
class Release:
    index: int  # 1-based position in the history
    label: str
    path: str
    finished: str | None
    verdict: str
    policy_sha256: str


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    rule: str
    status: str
    blocking: bool
    observed: float | None
    bound_text: str


@dataclass(frozen=True, kw_only=True)
class Row:
    release: int  # Release.index
    candidate: str
    sha256: str | None
    metric: str
    value: float | None
    low: float | None
    high: float | None
    status: str  # the worst of the rules judging this metric
    rules: tuple[RuleOutcome, ...]
    verdict: str  # the candidate's verdict in that release
    blessed: bool
    drift: float | None = None  # value - the reference row's value


@dataclass(frozen=True, kw_only=True)
class MetricHistory:
    metric: str
    higher_is_better: bool | None
    unit: str
    rows: tuple[Row, ...]
    reference: Row | None  # what drift is measured from
    reference_blessed: bool  # the reference is the first blessed release (else the first release)


@dataclass(frozen=True, kw_only=True)
class History:
    releases: tuple[Release, ...]
    metrics: tuple[MetricHistory, ...]
    blessed: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict:
        def row(r: Row | None):
            return None if r is None else {**{k: getattr(r, k) for k in r.__dataclass_fields__ if k != "rules"},
                                           "rules": [vars(o) for o in r.rules]}
        return {"releases": [vars(r) for r in self.releases],
                "metrics": [{"metric": m.metric, "higher_is_better": m.higher_is_better, "unit": m.unit,
                             "reference": row(m.reference), "reference_blessed": m.reference_blessed,
                             "rows": [row(r) for r in m.rows]} for m in self.metrics],
                "blessed": sorted(self.blessed)}


# ---------------------------------------------------------------- reading

def _report_files(arg: Path) -> list[Path]:
    fix = "give report folders (written by gate check --out / gate judge --out), report.json files, or a folder of them"
    try:
        if arg.is_file():
            return [arg]
        if arg.is_dir():
            if (arg / "report.json").is_file():
                return [arg / "report.json"]
            found = sorted(arg.rglob("report.json"))
            if not found:
                raise GateInputError("holds no report.json (searched every folder inside)", path=arg, fix=fix)
            return found
    except OSError as exc:
        raise GateInputError(f"cannot be read: {exc.strerror or exc}", path=arg, fix=fix) from None
    raise GateInputError("not found", path=arg, fix=fix)


def load_reports(args: list[Path]) -> list[tuple[Path, dict]]:
    """(path, checked document) of every report.json named or found, each once, in the order given."""
    from gate.contract import load_report

    paths, seen = [], set()
    for arg in args:
        for path in _report_files(Path(arg)):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                paths.append(path)
    if len(paths) > MAX_REPORTS:
        raise GateInputError(f"{len(paths):,} reports found, more than the {MAX_REPORTS:,} a history shows",
                             path=args[0], fix="name the release reports to compare")
    return [(path, load_report(path)) for path in paths]


def blessed_in(baseline: Path) -> frozenset[str]:
    """The sha256 of every model blessed in a `gate bless` baseline folder."""
    from gate.baseline import BaselineProblem, read_blessings

    if not baseline.is_dir():
        raise GateInputError("no such baseline folder", path=baseline,
                             fix="give the --baseline folder `gate bless` wrote to")
    try:
        return frozenset(b.model_sha256 for b in read_blessings(baseline))
    except (BaselineProblem, OSError) as exc:
        raise GateInputError(f"the baseline record cannot be read: {exc}", path=baseline,
                             fix="give the folder `gate bless` wrote, unchanged") from None


# ---------------------------------------------------------------- building (pure)

def _when(finished) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None  # a naive time cannot be ordered against aware ones


def _labels(paths: list[Path]) -> list[str]:
    """The report folder's name; the path when two releases share it."""
    names = [p.parent.name or p.stem for p in paths]
    return [name if names.count(name) == 1 else str(p.parent) for name, p in zip(names, paths)]


def _metric_spec(metric: str) -> tuple[bool | None, str]:
    from gate.measure.registry import get_metric

    spec = get_metric(metric)
    return (spec.higher_is_better, spec.unit) if spec is not None else (None, "")


def build_history(reports: list[tuple[Path, dict]], *, blessed: frozenset[str] = frozenset(),
                  order: str = "time") -> History:
    """Releases and per-metric rows from checked report.json documents. blessed: sha256 of blessed models."""
    items = list(reports)
    if order == "time":
        # stable: reports without a readable time keep their given order, after the timed ones
        keyed = [(_when(doc["provenance"].get("finished")), i) for i, (_, doc) in enumerate(items)]
        items = [items[i] for _, i in sorted(keyed, key=lambda k: (k[0] is None, k[0] or datetime.min, k[1]))]
    labels = _labels([p for p, _ in items])
    releases, rows_by_metric = [], {}
    for index, ((path, doc), label) in enumerate(zip(items, labels), start=1):
        prov = doc["provenance"]
        releases.append(Release(index=index, label=label, path=str(path), finished=prov.get("finished"),
                                verdict=doc["verdict"], policy_sha256=prov["policy"]["sha256"]))
        for cand in doc["candidates"]:
            sha = (cand.get("model") or {}).get("sha256") or prov["models"].get(cand["name"])
            judged: dict[str, list[dict]] = {}
            for rule in cand["rules"]:
                judged.setdefault(rule["metric"], []).append(rule)
            for metric, rules in judged.items():
                m = (cand.get("metrics") or {}).get(metric) or {}
                interval = m.get("candidate_interval") or {}
                rows_by_metric.setdefault(metric, []).append(Row(
                    release=index, candidate=cand["name"], sha256=sha, metric=metric, value=m.get("candidate"),
                    low=interval.get("low"), high=interval.get("high"),
                    status=min((r["status"] for r in rules), key=_SEVERITY.index),
                    rules=tuple(RuleOutcome(rule=r["rule"], status=r["status"], blocking=r["blocking"],
                                            observed=r["observed"], bound_text=r["bound_text"]) for r in rules),
                    verdict=cand["verdict"], blessed=sha is not None and sha in blessed))
    metrics = []
    for metric, rows in rows_by_metric.items():
        first_blessed = next((r for r in rows if r.blessed and r.value is not None), None)
        reference = first_blessed or next((r for r in rows if r.value is not None), None)
        rows = [_with_drift(r, reference) for r in rows]
        higher, unit = _metric_spec(metric)
        metrics.append(MetricHistory(metric=metric, higher_is_better=higher, unit=unit, rows=tuple(rows),
                                     reference=_with_drift(reference, reference) if reference else None,
                                     reference_blessed=first_blessed is not None))
    return History(releases=tuple(releases), metrics=tuple(metrics), blessed=frozenset(blessed))


def _with_drift(row: Row, reference: Row | None) -> Row:
    from dataclasses import replace

    if reference is None or row.value is None or reference.value is None:
        return replace(row, drift=None)
    return replace(row, drift=row.value - reference.value)


# ---------------------------------------------------------------- writing

def chart(metric: MetricHistory, releases: tuple[Release, ...]) -> str:
    """The metric's values across releases with their intervals (inline SVG with a text alternative)."""
    from gate.report.charts import history_svg

    points = [{"x": r.release, "name": r.candidate, "value": r.value, "low": r.low, "high": r.high,
               "verdict": r.verdict, "blessed": r.blessed} for r in metric.rows]
    ref = metric.reference.value if metric.reference is not None else None
    return history_svg(points, metric=metric.metric, labels=[r.label for r in releases],
                       higher_is_better=metric.higher_is_better, reference=ref,
                       reference_label="first blessed release" if metric.reference_blessed else "first release")


def write_history(history: History, out_dir: Path) -> list[Path]:
    """history.md and history.html in out_dir (written atomically); their paths."""
    from markupsafe import Markup

    from gate.report import atomic_write
    from gate.report.render import environment

    data = history.to_dict()
    charts = {m.metric: Markup(chart(m, history.releases)) for m in history.metrics}
    written = []
    for name, autoescape in (("history.md", False), ("history.html", True)):
        template = environment(None, autoescape=autoescape).get_template(f"{name}.j2")
        atomic_write(out_dir / name, template.render(history=data, charts=charts))
        written.append(out_dir / name)
    return written
