"""gate history: three real releases (reports of in-process `gate check` runs on the same base and data),
with known accuracies, ordered by when they were judged, blessed by `gate bless`, drift from the first
blessed release, written as history.md and history.html with a chart per judged metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_main
from gate.files import sha256_of
from gate.history import build_history, load_reports
from test_verify import make_release

RULES = [{"metric": "accuracy", "max_drop": 0.05}, {"metric": "flip_rate", "max": 0.1}]
# of the base's 160 right answers of 200 (0.80), each release's candidate loses b and wins c
RELEASES = {"v1": {"int8": (2, 1), "pruned": (30, 0)},  # 0.795 (passes), 0.65 (fails)
            "v2": {"int8-v2": (1, 1)},  # 0.80
            "v3": {"int8-v3": (2, 0)}}  # 0.79
# judged-at times out of order on purpose: time order is v2, v3, v1
FINISHED = {"v1": "2026-03-01T10:00:00+00:00", "v2": "2026-01-01T10:00:00+00:00", "v3": "2026-02-01T10:00:00+00:00"}


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("history")
    out = {}
    for tag, cands in RELEASES.items():
        made = make_release(root / "work" / tag, cands, rules=RULES)
        report = root / "releases" / tag / "report.json"
        report.parent.mkdir(parents=True)
        doc = json.loads((made.out / "report.json").read_text())
        doc["provenance"]["finished"] = FINISHED[tag]
        report.write_text(json.dumps(doc, indent=2))
        out[tag] = report.parent
    return out


def _rows(history, metric):
    [m] = [m for m in history.metrics if m.metric == metric]
    return m, [(history.releases[r.release - 1].label, r.candidate, r.value, r.status, r.verdict, r.blessed, r.drift)
               for r in m.rows]


def test_rows_in_time_order_with_values_statuses_and_drift_from_the_first_report(releases):
    history = build_history(load_reports(list(releases.values())))
    assert [r.label for r in history.releases] == ["v2", "v3", "v1"]
    assert [m.metric for m in history.metrics] == ["accuracy", "flip_rate"]
    m, rows = _rows(history, "accuracy")
    assert not m.reference_blessed and m.higher_is_better is True
    expected = [("v2", "int8-v2", 0.80, "pass", "pass", False, 0.0),
                ("v3", "int8-v3", 0.79, "pass", "pass", False, -0.01),
                ("v1", "int8", 0.795, "pass", "pass", False, -0.005),
                ("v1", "pruned", 0.65, "fail", "fail", False, -0.15)]
    assert [r[:6] for r in rows] == [e[:6] for e in expected]
    assert [r[6] for r in rows] == pytest.approx([e[6] for e in expected])
    v2 = m.rows[0]
    assert v2.low < 0.80 < v2.high and v2.sha256 == sha256_of(releases["v2"].parents[1] / "work/v2/int8-v2.onnx")
    given = build_history(load_reports([releases["v1"], releases["v2"]]), order="given")
    assert [r.label for r in given.releases] == ["v1", "v2"]


def test_drift_is_measured_from_the_first_blessed_release(releases):
    sha_v3 = sha256_of(releases["v3"].parents[1] / "work/v3/int8-v3.onnx")
    history = build_history(load_reports(list(releases.values())), blessed=frozenset({sha_v3}))
    m, rows = _rows(history, "accuracy")
    assert m.reference_blessed and m.reference.candidate == "int8-v3"
    assert [r[5] for r in rows] == [False, True, False, False]
    assert [r[6] for r in rows] == pytest.approx([0.01, 0.0, 0.005, -0.14])


def test_gate_history_writes_markdown_and_html_with_a_chart_per_metric(releases, tmp_path):
    # v2 blessed by the real `gate bless`, read back through --baseline
    work = releases["v2"].parents[1] / "work" / "v2"
    blessed = run_main("bless", work / "report", "--candidate", "int8-v2", "--baseline", tmp_path / "baseline",
                       "--no-progress")
    assert blessed.code == 0, blessed
    result = run_main("history", releases["v1"].parent, "--out", tmp_path / "h", "--baseline", tmp_path / "baseline")
    assert result.code == 0, result
    assert "history of 3 report(s), 2 judged metric(s)" in result.stdout
    md = (tmp_path / "h" / "history.md").read_text()
    assert "Drift is measured from the first blessed release: v2, int8-v2, 0.8000" in md
    assert "| v1 | pruned | " in md and "| 0.6500 | " in md and "| -0.1500 | " in md and "★ blessed" in md
    html = (tmp_path / "h" / "history.html").read_text()
    assert html.count("<svg") == 2
    assert "<title>accuracy across releases</title>" in html and "<title>flip_rate across releases</title>" in html
    # the chart's text alternative holds every value, its verdict and the blessing
    desc = html.split("<title>accuracy across releases</title><desc>", 1)[1].split("</desc>", 1)[0]
    assert "v2 int8-v2: 0.8000" in desc and "blessed" in desc and "v1 pruned: 0.6500" in desc and "fail" in desc


def test_a_damaged_report_is_exit_2_naming_it(releases, tmp_path):
    bad = tmp_path / "v4" / "report.json"
    bad.parent.mkdir()
    doc = json.loads((releases["v1"] / "report.json").read_text())
    doc["candidates"][0]["rules"][0]["status"] = "fine"
    bad.write_text(json.dumps(doc))
    result = run_main("history", releases["v1"], bad, "--out", tmp_path / "h")
    assert result.code == 2 and f"{bad}: not a report.json" in result.stderr and "status" in result.stderr, result
    assert not (tmp_path / "h" / "history.md").exists()
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "manifest.json").write_text("{}")  # a report folder: history files would break its manifest
    into_report = run_main("history", releases["v1"], "--out", report_dir)
    assert into_report.code == 2 and "is a report folder" in into_report.stderr
    assert not (report_dir / "history.md").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_main("history", empty, "--out", tmp_path / "h")
    assert result.code == 2 and "holds no report.json" in result.stderr, result
