"""The audit report in a real browser: Debian's Chromium, driven headless through Playwright."""

import re
import shutil

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from conftest import logits_for, lookup_model, make_scenario, run_main, write_npz, write_policy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="alert(1)">|evil'
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Three candidates (one failing, one with a hostile name), subgroups, a class-change matrix."""
    root = tmp_path_factory.mktemp("html")
    s = make_scenario(1200, 1000, 60, 5, k=4, seed=3)
    same = make_scenario(1200, 1000, 0, 0, k=4, seed=3)
    lookup_model(root / "base.onnx", logits_for(s.base, 4))
    lookup_model(root / "worse.onnx", logits_for(s.cand, 4, seed=1))
    lookup_model(root / "same.onnx", logits_for(same.cand, 4, seed=2))
    region = np.array(["north", "south", "east"])[np.arange(1200) % 3]
    write_npz(root / "data.npz", s.y, region=region)
    write_policy(root / "policy.yaml", [
        {"metric": "accuracy", "max_drop": 0.01},
        {"metric": "accuracy", "per": "group", "max_drop": 0.03},
        {"metric": "flip_rate", "max": 0.1},
    ], candidates={"worse": "worse.onnx", HOSTILE: "same.onnx", "same-again": "same.onnx"},
        data={"path": "data.npz", "labels": "label", "groups": ["region"]}, inconclusive="warn")
    result = run_main("check", "--policy", root / "policy.yaml", "--out", root / "out")
    assert result.code == 1, result
    return root / "out" / "report.html"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_loads_offline_with_no_console_errors_and_no_requests(report, browser):
    page = browser.new_page()
    console, requests, dialogs, failed = [], [], [], []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(report.as_uri(), wait_until="load")
    page.wait_for_timeout(300)  # let any lazy resource or handler fire if there were one
    assert [c for c in console if c[0] in ("error", "pageerror", "warning")] == []
    assert requests == [report.as_uri()], "the report must not fetch anything"
    assert failed == [] and dialogs == []
    page.close()


def test_verdict_and_every_candidate_are_on_the_rendered_page(report, browser):
    page = browser.new_page()
    page.goto(report.as_uri())
    text = page.inner_text("body")
    assert page.title() == "Compression gate: FAIL"
    assert text.index("FAIL") < text.index("Candidates"), "the verdict comes first"
    for name in ("worse", "same-again", HOSTILE):
        assert name in text, name
    # the hostile name is text, not markup
    assert page.locator("img").count() == 0
    assert "region=north" in text and "Provenance" in text
    charts = page.locator("svg[role=img]")
    assert charts.count() >= 2  # Pareto chart and the subgroup chart
    assert all(charts.nth(i).locator("title").count() == 1 for i in range(charts.count()))
    page.close()


def test_prints_to_pdf_with_a_page_per_candidate(report, browser, tmp_path):
    page = browser.new_page()
    page.goto(report.as_uri())
    page.emulate_media(media="print")
    pdf = tmp_path / "report.pdf"
    page.pdf(path=str(pdf), format="A4", print_background=True)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    # summary, three candidates each from a new page, provenance
    assert pages >= 5
    page.close()


def test_pareto_labels_do_not_overlap_and_candidates_have_whiskers(demo_dir, browser):
    """The demo's size chart: int8-dynamic sits next to int8-static-qdq and pruned-50 on the base, the pairs
    whose labels used to be drawn over each other. Measured as Chromium lays the text out."""
    page = browser.new_page()
    page.goto((demo_dir / "report" / "report.html").as_uri())
    chart = page.locator("svg[role=img]").first
    assert chart.locator("title").text_content() == "accuracy against size"
    names = ["base", "int8-dynamic", "int8-static-qdq", "fp16", "pruned-50", "pruned-90"]
    boxes = {}
    for text in chart.locator("text").all():
        label = text.text_content().strip()
        if label in names:
            boxes[label] = text.bounding_box()
    assert set(boxes) == set(names)

    def overlap(a, b):
        return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and \
            a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]

    clashes = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if overlap(boxes[a], boxes[b])]
    assert clashes == []
    description = chart.locator("desc").text_content()
    assert re.search(r"pruned-90: accuracy 0\.8\d+ \(0\.\d+ to 0\.\d+\)", description)  # the interval is drawn
    page.close()
