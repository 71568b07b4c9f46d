"""The flipped samples (flips.csv, report.html) and the reliability diagram, on lookup-table models whose every
prediction and score the test chooses: exactly b negative, c positive and e neutral flips, known indices,
known probabilities.

- flips.csv has one row per changed prediction, negative first, with the user's class names, both models'
  scores and the subgroups; `gate measure` + `gate judge` write the same file as `gate check`;
- hostile class names, subgroup values and candidate names stay text in the CSV (quoted, no formula) and in
  the HTML (escaped);
- image inputs: thumbnails of the first negative flips inline in report.html, with alt text;
- the reliability table against a hand computation, and its chart in report.html.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import (IR_VERSION, OPSET, logits_for, lookup_model, make_scenario, read_report, run_main, softmax,
                      write_npz, write_policy)

from gate.measure.calibration import calibration, reliability
from gate.measure.quality import ECE_BINS, ece
from gate.predictions import Predictions

CLASSES = ["cat", "=1+1", 'dog, "big"']  # a formula and a comma-and-quote among the class names
REGIONS = ['=HYPERLINK("http://evil.example","click")', 'north, "upper"\nside', "<script>alert(1)</script>",
           "+42", "@sum", "-1", "plain"]
LABELS_ONLY = "@lab,x"  # a candidate name that would be a formula and splits a naive CSV row


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _unguarded(cell: str) -> str:
    """What a spreadsheet user reads: the apostrophe marks text, it is not part of the value."""
    return cell[1:] if cell[:1] == "'" else cell


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("flips")
    s = make_scenario(140, 110, 7, 3, k=3, seed=4, extra_flips=2)
    base_logits, cand_logits = logits_for(s.base, 3, seed=2), logits_for(s.cand, 3, seed=3)
    lookup_model(d / "base.onnx", base_logits)
    lookup_model(d / "c.onnx", cand_logits)
    lookup_model(d / "lab.onnx", cand_logits, kind="label")
    region = np.array([REGIONS[i % len(REGIONS)] for i in range(s.n)])
    device = np.array(["phone", "laptop"] * (s.n // 2))
    write_npz(d / "data.npz", np.array(CLASSES)[s.y], region=region, device=device)
    # ece and brier_score are judged (so measured); the labels-only candidate cannot give them: it fails (error)
    rules = [{"metric": "accuracy", "max_drop": 0.5}, {"metric": "ece", "max": 1}, {"metric": "brier_score", "max": 2}]
    policy = write_policy(d / "policy.yaml", rules, candidates={"c": "c.onnx", LABELS_ONLY: "lab.onnx"},
                          bootstrap=100, data={"path": "data.npz", "labels": "label", "groups": ["region", "device"],
                                               "classes": CLASSES})
    check = run_main("check", "--policy", policy, "--out", d / "checked", "--no-progress")
    assert check.code == 1, check
    measure = run_main("measure", "--policy", policy, "--out", d / "results.json", "--no-progress")
    assert measure.code == 0, measure
    judge = run_main("judge", d / "results.json", "--policy", policy, "--out", d / "judged")
    assert judge.code == 1, judge
    verdicts = {c["name"]: c["verdict"] for c in read_report(d / "checked")["candidates"]}
    assert verdicts == {"c": "pass", LABELS_ONLY: "fail"}
    return SimpleNamespace(dir=d, s=s, base_p=softmax(base_logits.astype(np.float64)),
                           cand_p=softmax(cand_logits.astype(np.float64)), region=region, device=device,
                           rows=_csv_rows(d / "checked" / "flips.csv"), report=read_report(d / "checked"),
                           html=(d / "checked" / "report.html").read_text(encoding="utf-8"))


def _of(run, name: str) -> list[dict]:
    return [r for r in run.rows if _unguarded(r["candidate"]) == name]


def test_flips_csv_has_one_row_per_changed_prediction_negative_first(run):
    s, rows = run.s, _of(run, "c")
    changed = np.flatnonzero(s.base != s.cand)
    negative = np.flatnonzero((s.base == s.y) & (s.cand != s.y))
    positive = np.flatnonzero((s.base != s.y) & (s.cand == s.y))
    assert len(rows) == len(changed) == s.b + s.c + 2 == 12
    assert sorted(int(r["index"]) for r in rows) == changed.tolist()
    kinds = [r["kind"] for r in rows]
    assert kinds == ["negative"] * 7 + ["positive"] * 3 + ["neutral"] * 2
    assert sorted(int(r["index"]) for r in rows[:7]) == negative.tolist()
    assert sorted(int(r["index"]) for r in rows[7:10]) == positive.tolist()
    for r in rows:
        i = int(r["index"])
        assert _unguarded(r["true_label"]) == CLASSES[s.y[i]]
        assert (_unguarded(r["base_prediction"]), _unguarded(r["candidate_prediction"])) == \
            (CLASSES[s.base[i]], CLASSES[s.cand[i]])
        assert float(r["base_score"]) == pytest.approx(run.base_p[i].max(), abs=1e-6)
        assert float(r["candidate_score"]) == pytest.approx(run.cand_p[i].max(), abs=1e-6)
        assert float(r["base_true_score"]) == pytest.approx(run.base_p[i, s.y[i]], abs=1e-6)
        assert float(r["candidate_true_score"]) == pytest.approx(run.cand_p[i, s.y[i]], abs=1e-6)
        assert float(r["true_score_change"]) == pytest.approx(run.cand_p[i, s.y[i]] - run.base_p[i, s.y[i]], abs=2e-6)
        assert (_unguarded(r["region"]), r["device"]) == (run.region[i], run.device[i])
        assert r["line"] == ""  # npz data has no lines
    # within a kind: the largest change of the true-class probability first
    for kind in ("negative", "positive", "neutral"):
        changes = [abs(float(r["true_score_change"])) for r in rows if r["kind"] == kind]
        assert changes == sorted(changes, reverse=True)
    flips = next(c for c in run.report["candidates"] if c["name"] == "c")["flips"]
    assert (flips["count"], flips["negative"], flips["positive"], flips["neutral"], flips["capped"]) == \
        (12, 7, 3, 2, False)
    assert "rows" not in flips and len(flips["largest"]) == 12 and flips["thumbnails"] == []
    # the same counts as the judged flip metrics
    metrics = next(c for c in run.report["candidates"] if c["name"] == "c")["metrics"]
    assert metrics["flip_rate"]["candidate"] == pytest.approx(12 / s.n)


def test_a_labels_only_candidate_lists_its_flips_without_scores(run):
    s, rows = run.s, _of(run, LABELS_ONLY)
    assert len(rows) == 12 and [r["kind"] for r in rows] == ["negative"] * 7 + ["positive"] * 3 + ["neutral"] * 2
    assert all(r["candidate_score"] == r["candidate_true_score"] == r["true_score_change"] == "" for r in rows)
    assert all(r["base_score"] for r in rows)
    for kind in ("negative", "positive", "neutral"):  # no change to order by: data order
        indices = [int(r["index"]) for r in rows if r["kind"] == kind]
        assert indices == sorted(indices)
    cal = next(c for c in run.report["candidates"] if c["name"] == LABELS_ONLY)["calibration"]
    assert cal["candidate"] is None and cal["ece_candidate"] is None and len(cal["base"]) == 15


def test_hostile_names_and_values_stay_text_in_the_csv_and_the_html(run):
    text = (run.dir / "checked" / "flips.csv").read_text(encoding="utf-8")
    raw = list(csv.reader(io.StringIO(text)))
    assert len(raw) == 1 + 24  # the newline inside a subgroup value is quoted, not a new row
    header = raw[0]
    for row in raw[1:]:
        assert len(row) == len(header)
        for cell in row:  # no cell a spreadsheet runs as a formula: text is guarded, numbers are plain numbers
            assert not cell.startswith(("=", "+", "-", "@")) or re.fullmatch(r"-\d+(\.\d+)?(e-\d+)?", cell), cell
    cells = {cell for row in raw[1:] for cell in row}
    assert {"'" + REGIONS[0], "'+42", "'@sum", "'-1", "'=1+1", "'" + LABELS_ONLY} <= cells
    assert 'north, "upper"\nside' in cells and 'dog, "big"' in cells
    assert '"north, ""upper""\nside"' in text  # quoted as RFC 4180 says
    # numbers stay numbers: a negative change is written as one, not guarded as text
    assert any(float(row[header.index("true_score_change")]) < 0 for row in raw[1:] if row[0] == "c")
    html = run.html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "=HYPERLINK(&#34;http://evil.example&#34;,&#34;click&#34;)" in html


def test_measure_then_judge_writes_the_same_flips_csv_as_check(run):
    checked = (run.dir / "checked" / "flips.csv").read_bytes()
    assert (run.dir / "judged" / "flips.csv").read_bytes() == checked
    results = json.loads((run.dir / "results.json").read_text(encoding="utf-8"))["gate_results"]
    assert [len(c["flips"]["rows"]) for c in results["candidates"]] == [12, 12]


def test_the_largest_changes_are_listed_in_report_html(run):
    flips = next(c for c in run.report["candidates"] if c["name"] == "c")["flips"]
    changes = [abs(r["change"]) for r in flips["largest"]]
    assert changes == sorted(changes, reverse=True)
    assert "<h3>Flipped samples</h3>" in run.html
    assert "12 prediction(s) changed: 7 from right to wrong" in run.html
    top = flips["largest"][0]
    assert f'<td class="num">{top["index"]}</td>' in run.html


def test_reliability_chart_per_candidate_in_report_html(run):
    assert "<title>reliability of base and c</title>" in run.html
    assert f"<title>reliability of base and {LABELS_ONLY}</title>" in run.html
    cal = next(c for c in run.report["candidates"] if c["name"] == "c")["calibration"]
    metrics = next(c for c in run.report["candidates"] if c["name"] == "c")["metrics"]
    assert cal["ece_candidate"] == pytest.approx(metrics["ece"]["candidate"])
    assert cal["ece_base"] == pytest.approx(metrics["ece"]["base"])
    assert cal["brier_candidate"] == pytest.approx(metrics["brier_score"]["candidate"])
    assert sum(b["count"] for b in cal["base"]) == sum(b["count"] for b in cal["candidate"]) == run.s.n


def test_a_long_list_is_capped_with_exact_counts_csv_lines_and_a_note_in_the_file():
    from gate.measure.flips import flip_table
    from gate.measurements import CandidateMeasurements, Measurements, ModelInfo
    from gate.report.flips import flips_csv

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    base_pred, cand_pred = np.array([0, 0, 0, 1, 1, 1, 0, 1]), np.array([1, 1, 0, 0, 0, 1, 1, 1])
    true_base, true_cand = np.array([.9, .8, .7, .4, .9, .8, .3, .6]), np.array([.2, .6, .7, .9, .1, .8, .4, .6])

    def preds(pred, true):
        return Predictions(kind="probabilities", pred=pred, values=None, true_prob=true, true_rank=None, probs=None,
                           n_classes=2, top_prob=np.maximum(true, 1 - true), sum_sq_prob=true ** 2 + (1 - true) ** 2)

    table = flip_table(preds(base_pred, true_base), preds(cand_pred, true_cand), y, lines=np.arange(2, 10), limit=3,
                       groups={"=g": np.array(list("abcdabcd"))})
    # changed: 0 (neg, -0.7), 1 (neg, -0.2), 3 (pos, +0.5), 4 (neg, -0.8), 6 (pos, +0.1)
    counts = (table["count"], table["negative"], table["positive"], table["neutral"], table["capped"])
    assert counts == (5, 3, 2, 0, True)
    assert [(r["index"], r["line"], r["kind"]) for r in table["rows"]] == \
        [(4, 6, "negative"), (0, 2, "negative"), (1, 3, "negative")]
    assert [r["index"] for r in table["largest"]] == [4, 0, 3, 1, 6]  # every kind, the largest change first
    assert table["rows"][0]["groups"] == {"=g": "a"} and table["rows"][0]["change"] == pytest.approx(-0.8)
    m = Measurements(task="classification", n_samples=8, confidence=0.95, seed=0, bootstrap=100,
                     base=ModelInfo(name="base", path="b"), data={}, provenance={},
                     candidates=(CandidateMeasurements(info=ModelInfo(name="c", path="c"), flips=table),))
    lines = list(csv.reader(io.StringIO(flips_csv(m))))
    assert lines[0][-1] == "'=g" and [row[1] for row in lines[1:4]] == ["4", "0", "1"]
    assert lines[-1] == ["# c: the first 3 of 5 changed predictions (negative flips first); the counts are in "
                         "report.json"]


# ---------------------------------------------------------------- the reliability table by hand

def test_reliability_table_against_a_hand_computation():
    edge = float(ECE_BINS[9])  # 9/15: on an edge, it belongs to the bin below (upper edges are inside)
    conf = np.array([0.95, 0.95, 0.95, 0.55, 0.55, edge, 0.25])
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    pred = np.array([0, 1, 0, 0, 2, 1, 1])  # bin 14: 2 of 3 right; bin 8: 1 of 3; bin 3: 0 of 1
    p = Predictions(kind="probabilities", pred=pred, values=None, true_prob=np.full(7, 0.5), true_rank=None,
                    probs=None, n_classes=3, top_prob=conf, sum_sq_prob=np.full(7, 0.5))
    table = reliability(p, y)
    assert len(table) == 15 and [b["count"] for b in table] == [0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 3]
    assert (table[14]["confidence"], table[14]["accuracy"]) == (pytest.approx(0.95), pytest.approx(2 / 3, abs=1e-6))
    assert table[8]["confidence"] == pytest.approx((0.55 + 0.55 + 0.6) / 3, abs=1e-6)
    assert table[8]["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert (table[3]["confidence"], table[3]["accuracy"]) == (0.25, 0.0)
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert (table[8]["low"], table[8]["high"]) == (pytest.approx(8 / 15, abs=1e-6), pytest.approx(0.6, abs=1e-6))
    by_hand = (3 * abs(2 / 3 - 0.95) + 3 * abs(1 / 3 - 1.7 / 3) + 1 * abs(0 - 0.25)) / 7
    cal = calibration(p, p, y)
    assert cal["ece_base"] == pytest.approx(by_hand) == ece(p, y)
    assert cal["bins"] == 15 and cal["base"] == cal["candidate"] == table
    labels_only = Predictions(kind="labels", pred=pred, values=None, true_prob=None, true_rank=None, probs=None,
                              n_classes=None)
    assert calibration(labels_only, labels_only, y) is None and calibration(p, p, None) is None


# ---------------------------------------------------------------- image inputs: thumbnails

def _image_lookup_model(path: Path, table: np.ndarray) -> Path:
    """Logits = table[idx] + 0 x (image @ zeros): the prediction is chosen by the test, the image is a real
    (1, 8, 8) float input the model is fed."""
    k = table.shape[1]
    nodes = [helper.make_node("Gather", ["table", "idx"], ["gathered"], axis=0),
             helper.make_node("Squeeze", ["gathered", "axis1"], ["rows"]),
             helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "zeros"], ["nothing"]),
             helper.make_node("Add", ["rows", "nothing"], ["logits"])]
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.zeros((64, k), dtype=np.float32), "zeros")]
    graph = helper.make_graph(nodes, "image-lookup",
                              [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1]),
                               helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("thumbs")
    s = make_scenario(90, 80, 10, 2, k=3, seed=5)
    # 8 x 8 pictures of 0..16 grey levels, as scikit-learn's digits (without importing scikit-learn: 1-2 s)
    pixels = np.random.default_rng(5).integers(0, 17, size=(90, 1, 8, 8)).astype(np.float32)
    _image_lookup_model(d / "base.onnx", logits_for(s.base, 3, seed=6))
    _image_lookup_model(d / "c.onnx", logits_for(s.cand, 3, seed=7))
    write_npz(d / "data.npz", s.y, image=pixels)
    policy = write_policy(d / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"c": "c.onnx"}, bootstrap=100, data={"path": "data.npz", "labels": "label"})
    check = run_main("check", "--policy", policy, "--out", d / "out", "--no-progress")
    assert check.code == 0, check
    return SimpleNamespace(s=s, pixels=pixels, report=read_report(d / "out"),
                           html=(d / "out" / "report.html").read_text(encoding="utf-8"))


def test_thumbnails_of_the_first_negative_flips_are_inline_in_report_html(images):
    from PIL import Image

    s = images.s
    flips = images.report["candidates"][0]["flips"]
    assert flips["negative"] == 10
    thumbs = flips["thumbnails"]
    assert len(thumbs) == 8  # the first 8 of the 10 negative flips, in the list's order
    negative_rows = [int(i) for i in np.flatnonzero((s.base == s.y) & (s.cand != s.y))]
    assert {t["index"] for t in thumbs} <= set(negative_rows) and all(t["input"] == "image" for t in thumbs)
    for t in thumbs:
        i = t["index"]
        alt = f"sample {i}: true class {s.y[i]}, base predicts {s.base[i]}, c predicts {s.cand[i]}"
        assert f'<img src="data:image/png;base64,{t["png"]}" alt="{alt}"' in images.html
        # the picture is the sample's own digit, scaled to 0..255 on its range
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(t["png"]))))
        x = images.pixels[i, 0].astype(np.float64)
        assert picture.shape == (8, 8)
        assert np.array_equal(picture, np.round((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8))
    assert "src=\"http" not in images.html and "src='http" not in images.html  # nothing from outside


def test_thumbnails_shrink_large_images_and_skip_what_is_not_an_image():
    from PIL import Image

    from gate.measure.thumbnails import as_image, png_base64

    big = np.linspace(0, 1, 3 * 200 * 130, dtype=np.float32).reshape(3, 200, 130)  # channels first
    picture = Image.open(io.BytesIO(base64.b64decode(png_base64(big))))
    assert picture.size == (33, 50) and picture.mode == "RGB"  # 200 x 130 by 4: at most 64 a side, same aspect
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(png_base64(np.ones((32, 32, 4))))))).shape == (32, 32, 4)
    for not_an_image in (np.zeros(64), np.zeros((1,)), np.zeros((2, 8)), np.zeros((5, 8, 8)), np.array(["a"] * 16)):
        assert as_image(not_an_image) is None and png_base64(not_an_image) is None


# ---------------------------------------------------------------- regression: no flips file

def test_regression_writes_no_flips_csv_and_removes_a_stale_one(tmp_path):
    y = np.linspace(0, 1, 40)
    lookup_model(tmp_path / "base.onnx", y, kind="regression")
    lookup_model(tmp_path / "c.onnx", y + 0.01, kind="regression")
    write_npz(tmp_path / "data.npz", y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "mae", "max": 1}], candidates={"c": "c.onnx"},
                          task="regression", bootstrap=100)
    out = tmp_path / "out"
    out.mkdir()
    (out / "flips.csv").write_text("an earlier run's list\n", encoding="utf-8")
    result = run_main("check", "--policy", policy, "--out", out, "--no-progress")
    assert result.code == 0, result
    assert not (out / "flips.csv").exists()
    cand = read_report(out)["candidates"][0]
    assert cand["flips"] is None and cand["calibration"] is None


def test_the_sandboxed_and_the_plain_template_caches_are_kept_apart(images, tmp_path, monkeypatch):
    """A shipped template compiled in the sandbox (a user overrides another template) calls through
    `environment.call`; loaded from a shared bytecode cache by the plain environment it failed."""
    from gate.report.render import render_html

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    user = tmp_path / "templates"
    user.mkdir()
    (user / "report.md.j2").write_text("{{ report.verdict }}\n", encoding="utf-8")
    assert render_html(images.report, user) == render_html(images.report)  # sandboxed first, then plain
