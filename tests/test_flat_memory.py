"""Flat memory (issue 12): the narrow per-sample vectors, the chunked transients and the dropped pages give the
numbers of the wide, whole-array code they replace, bit for bit, and nothing overflows where narrow integers
are combined (label * k + prediction)."""

import mmap
import os
import sys
import warnings

import numpy as np
import pytest

from conftest import candidate, lookup_model, read_report, run_main, write_npz, write_policy
from gate import pages
from gate.measure import agreement, calibration, fast, quality
from gate.measure.quality import ECE_BINS, ece_bin
from gate.measure.compare import compare
from gate.predictions import (SCORES, AgreementCollector, Classes, Collector, Predictions, index_dtype, label_indices,
                              narrow_indices)


@pytest.mark.parametrize("high, low, expected", [
    (0, 0, np.int8), (126, 0, np.int8), (127, 0, np.int8), (128, 0, np.int16), (32767, 0, np.int16),
    (32768, 0, np.int32), (2 ** 31 - 1, 0, np.int32), (2 ** 31, 0, np.int64), (5, -128, np.int8),
    (5, -129, np.int16), (5, -(2 ** 31) - 1, np.int64)])
def test_index_dtype_is_the_narrowest_signed_type_holding_the_range(high, low, expected):
    assert index_dtype(high, low) == np.dtype(expected)


@pytest.mark.parametrize("values, dtype", [
    (np.array([0, 9, 3], dtype=np.int64), np.int8), (np.array([0, 40000, 32768], dtype=np.int64), np.int32),
    (np.array([0, 200], dtype=np.uint64), np.int16), (np.array([-200, 100], dtype=np.int64), np.int16),
    (np.array([1, 2 ** 40], dtype=np.int64), np.int64)])
def test_integer_labels_are_narrowed_to_the_same_values(values, dtype):
    y = label_indices(values, None, data="data.npz", model="base.onnx")
    assert y.dtype == np.dtype(dtype)
    assert np.array_equal(y.astype(np.int64), values.astype(np.int64))


def test_text_labels_become_narrow_class_indices():
    names = tuple(f"c{i}" for i in range(300))
    y = label_indices(np.array(["c299", "c0", "c150", "c299"]), Classes(names, "data.classes in the policy"),
                      data="data.npz", model="base.onnx")
    assert y.dtype == np.int16 and y.tolist() == [299, 0, 150, 299]


def test_narrow_indices_leaves_floats_and_empty_arrays_alone():
    for values in (np.array([0.5, 1.0]), np.array([], dtype=np.int64), np.array([True, False])):
        assert narrow_indices(values) is values


@pytest.mark.parametrize("k", [10, 200, 40000])
def test_collector_stores_class_and_rank_narrow_with_the_int64_values(k):
    rng = np.random.default_rng(k)
    n = 300
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[:5] = 0.0  # ties: the argmax is the first class, the rank counts classes strictly above
    y = rng.integers(0, k, n)
    if k > 32767:
        y[:100] = rng.integers(32768, k, 100)  # labels beyond int16
        logits[100:150, 39999] += 10.0  # predictions beyond int16
    col = Collector(n=n, task="classification", scores="logits", keep_probs=False, where="m.onnx",
                    labels_where="data.npz")
    for start in range(0, n, 64):
        col.add(logits[start:start + 64], y[start:start + 64], start, min(start + 64, n))
    p = col.result()
    assert p.pred.dtype == p.true_rank.dtype == index_dtype(k - 1)
    logp = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    assert np.array_equal(p.pred, logp.argmax(axis=1))
    true = logp[np.arange(n), y]
    assert np.array_equal(p.true_rank, (logp > true[:, None]).sum(axis=1))


def test_label_outputs_keep_their_own_values_in_int64():
    col = Collector(n=3, task="classification", scores="auto", keep_probs=False, where="m.onnx",
                    labels_where="data.npz")
    col.add(np.array([70000, -3, 2 ** 40], dtype=np.int64), None, 0, 3)
    assert col.pred.dtype == np.int64 and col.pred.tolist() == [70000, -3, 2 ** 40]


def _preds(pred: np.ndarray, k: int, rng) -> Predictions:
    n = len(pred)
    conf = rng.random(n)
    conf[:len(ECE_BINS)] = ECE_BINS  # confidences on the bin edges
    return Predictions(kind="probabilities", pred=pred, values=None, true_prob=rng.random(n) * conf,
                       true_rank=rng.integers(0, k, n).astype(index_dtype(k - 1)), probs=None, n_classes=k,
                       top_prob=conf, sum_sq_prob=conf ** 2 + rng.random(n) * (1 - conf) ** 2)


def _wide(p: Predictions) -> Predictions:
    from dataclasses import replace
    return replace(p, pred=p.pred.astype(np.int64), true_rank=p.true_rank.astype(np.int64))


@pytest.mark.parametrize("k", [127, 128, 300])
def test_narrow_labels_and_predictions_give_the_int64_numbers(k):
    """label * k + prediction overflows int8 at k = 127 (126 * 127 > 127) and int16 at k = 300 (299 * 300 >
    32767): every metric, table and resampled count must be formed in int64 all the same. More samples than
    one chunk (quality.CHUNK), so the chunked sums are checked too."""
    rng = np.random.default_rng(k)
    n = quality.CHUNK + 4321
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    pred_b = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    pred_c = np.where(rng.random(n) < 0.9, pred_b, rng.integers(0, k, n))
    narrow_y = narrow_indices(y)
    assert narrow_y.dtype == index_dtype(k - 1)
    base = _preds(pred_b.astype(index_dtype(k - 1)), k, rng)
    cand = _preds(pred_c.astype(index_dtype(k - 1)), k, rng)
    for name in ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro",
                 "top_5_accuracy", "log_loss", "ece", "brier_score"):
        fn = quality.function_for(name)
        assert fn(base, narrow_y, None) == fn(_wide(base), y, None), name
    assert np.array_equal(quality.confusion(narrow_y, base.pred, k),
                          np.bincount(y * k + pred_b, minlength=k * k).reshape(k, k).astype(np.float64))
    assert agreement.change_matrix(base, cand) == agreement.change_matrix(_wide(base), _wide(cand))
    assert agreement.flip_counts(base, cand, narrow_y) == agreement.flip_counts(_wide(base), _wide(cand), y)
    narrow_cells = fast.cell_bootstrap(narrow_y, base.pred, cand.pred, n_resamples=20, seed=1)
    wide_cells = fast.cell_bootstrap(y, pred_b, pred_c, n_resamples=20, seed=1)
    for field in ("labels", "support", "tp_base", "predicted_base", "tp_cand", "predicted_cand"):
        assert np.array_equal(getattr(narrow_cells, field), getattr(wide_cells, field)), field
    assert calibration.calibration(base, cand, narrow_y) == calibration.calibration(_wide(base), _wide(cand), y)


def _old_reliability(p, y):
    """The whole-array reliability table the chunked one replaced."""
    m = len(ECE_BINS) - 1
    bins = ece_bin(p.top_prob)
    return (np.bincount(bins, minlength=m), np.bincount(bins, weights=p.top_prob, minlength=m),
            np.bincount(bins, weights=(p.pred == y).astype(np.float64), minlength=m))


@pytest.mark.parametrize("seed", range(3))
def test_chunked_bin_sums_and_in_place_means_are_the_whole_array_bits(seed):
    rng = np.random.default_rng(seed)
    n = 2 * quality.CHUNK + 777
    y = rng.integers(0, 10, n)
    p = _preds(np.where(rng.random(n) < 0.8, y, rng.integers(0, 10, n)).astype(np.int8), 10, rng)
    p = Predictions(**{**p.__dict__, "top_prob": p.top_prob * rng.choice([1e-9, 1.0], n)})  # sums of unequal sizes
    count, conf, right = quality.binned_confidence(p.top_prob, p.pred, y)
    old_count, old_conf, old_right = _old_reliability(p, y)
    assert np.array_equal(count, old_count) and np.array_equal(right, old_right)
    assert conf.tobytes() == old_conf.tobytes()
    w = rng.random(n) * 10.0 ** rng.integers(-12, 12, n)
    bins = ece_bin(rng.random(n))
    assert quality.bin_sums(bins, w, 15).tobytes() == np.bincount(bins, weights=w, minlength=15).tobytes()
    correct = (p.pred == y).astype(np.float64)
    gap = np.bincount(bins := ece_bin(p.top_prob), weights=correct, minlength=15) - \
        np.bincount(bins, weights=p.top_prob, minlength=15)
    assert quality.ece(p, y) == float(np.abs(gap).sum() / n)
    assert quality.brier_score(p, y) == float(np.maximum(p.sum_sq_prob - 2.0 * p.true_prob + 1.0, 0.0).mean())
    assert quality.log_loss(p, y) == float(-np.log(np.clip(p.true_prob, 1e-15, 1.0)).mean())
    assert quality.per_sample("log_loss", p, y).tobytes() == (-np.log(np.clip(p.true_prob, 1e-15, 1.0))).tobytes()
    assert quality.per_sample("brier_score", p, y).tobytes() == \
        np.maximum(p.sum_sq_prob - 2.0 * p.true_prob + 1.0, 0.0).tobytes()
    idx = rng.integers(0, n, n)  # a resample: the metrics over an index set too
    assert quality.ece(p, y, idx) == quality.ece(p.take(idx), y[idx])


def test_a_model_with_more_classes_than_int16_holds_is_measured_exactly(tmp_path):
    """40,000 classes, labels and predictions beyond 32767: the report's numbers are the direct ones (the
    confusion metrics from a table of the classes present, not one of 40,000^2 cells)."""
    from sklearn import metrics as skm

    k, n = 40000, 48
    rng = np.random.default_rng(7)
    y = np.concatenate([rng.integers(32768, k, n // 2), rng.integers(0, 100, n // 2)])
    base_table = rng.normal(size=(n, k)).astype(np.float32)
    right = rng.random(n) < 0.8
    base_table[np.arange(n), np.where(right, y, (y + 1) % k)] += 20.0
    cand_table = base_table.copy()
    cand_table[:6] = base_table[:6] + rng.normal(scale=40.0, size=(6, k)).astype(np.float32)  # a few flips
    lookup_model(tmp_path / "base.onnx", base_table)
    lookup_model(tmp_path / "cand.onnx", cand_table)
    write_npz(tmp_path / "data.npz", y)
    policy = write_policy(tmp_path / "policy.yaml", [{"metric": "accuracy", "max_drop": 0.5}],
                          candidates={"cand": "cand.onnx"}, data={"path": "data.npz", "inputs": {"idx": "idx"},
                                                                  "labels": "label"})
    result = run_main("check", "--policy", policy, "--out", tmp_path / "out", "--no-progress")
    assert result.code in (0, 1), result
    report = read_report(tmp_path / "out")
    metrics = candidate(report, "cand")["metrics"]

    def log_softmax(t):
        z = t.astype(np.float64) - t.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lb, lc = log_softmax(base_table), log_softmax(cand_table)
    pb, pc = lb.argmax(axis=1), lc.argmax(axis=1)
    assert pb.max() > 32767 and y.max() > 32767
    assert metrics["accuracy"]["base"] == np.mean(pb == y) and metrics["accuracy"]["candidate"] == np.mean(pc == y)
    assert metrics["flip_rate"]["candidate"] == np.mean(pb != pc)
    assert metrics["negative_flip_rate"]["candidate"] == np.mean((pb == y) & (pc != y))
    true_b = lb[np.arange(n), y]
    assert metrics["top_5_accuracy"]["base"] == np.mean((lb > true_b[:, None]).sum(axis=1) < 5)
    # the probabilities are stored in float32 (docs/statistics.md): -log p moves by at most 6e-8 per sample
    assert metrics["log_loss"]["base"] == pytest.approx(float(-np.mean(true_b)), abs=1e-7)
    for name, fn in (("balanced_accuracy", skm.balanced_accuracy_score),
                     ("f1_macro", lambda a, b: skm.f1_score(a, b, average="macro", zero_division=0)),
                     ("f1_weighted", lambda a, b: skm.f1_score(a, b, average="weighted", zero_division=0))):
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the case itself
            warnings.simplefilter("ignore")
            expected = fn(y, pc)
        assert metrics[name]["candidate"] == pytest.approx(expected, abs=1e-12), name
    flips = candidate(report, "cand")["flips"]  # fewer than the 20 largest changes: every flip is listed
    assert flips["count"] == len(flips["largest"]) == int((pb != pc).sum()) > 0
    assert {(r["index"], r["label"], r["base"], r["candidate"]) for r in flips["largest"]} == \
        {(int(i), int(y[i]), int(pb[i]), int(pc[i])) for i in np.flatnonzero(pb != pc)}


def _resident_pages(array: np.ndarray) -> int:
    """Pages of the array's memory map present in this process (the present bit of /proc/self/pagemap)."""
    mm = array._mmap
    start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    count = len(mm) // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as handle:
        handle.seek(start // mmap.PAGESIZE * 8)
        entries = np.frombuffer(handle.read(count * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


def _cold_column(tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """(the rows, the same rows memory-mapped from a file out of the page cache, so they are read back by
    readahead into large folios): 12,000 x 784 float32, 38 MB, 3 KB a row."""
    path = tmp_path / "x.npy"
    rows = np.random.default_rng(0).standard_normal((12000, 784), dtype=np.float32)
    np.save(path, rows)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return rows, np.load(path, mmap_mode="r")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/pagemap") or
                    not hasattr(mmap, "MADV_DONTNEED") or not hasattr(os, "posix_fadvise"),
                    reason="page residency is read from Linux's pagemap")
def test_a_column_read_and_dropped_batch_by_batch_keeps_no_page(tmp_path):
    """Linux maps a file's cached pages a whole (large) folio at a time, so reading batch i maps the tail of
    batch i - 1 again after it was dropped; the drop reaches back one folio to take those too."""
    _, column = _cold_column(tmp_path)
    for start in range(0, len(column), 1000):
        float(np.asarray(column[start:start + 1000]).sum())  # the model reads the batch
        pages.drop_rows([column], start, start + 1000)
    assert _resident_pages(column) == 0


def _collected(k: int = 10, n: int = 5000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    raw_b = rng.normal(size=(n, k)).astype(np.float32)
    raw_c = raw_b + rng.normal(scale=0.05, size=(n, k)).astype(np.float32)
    cols = [Collector(n=n, task="classification", scores="logits", keep_probs=False, where=f"{w}.onnx",
                      labels_where="data.npz") for w in ("base", "cand")]
    agree = AgreementCollector(n)
    for start in range(0, n, 1024):
        stop = min(start + 1024, n)
        lb = cols[0].add(raw_b[start:stop], y[start:stop], start, stop)
        lc = cols[1].add(raw_c[start:stop], y[start:stop], start, stop)
        agree.add(raw_b[start:stop], raw_c[start:stop], lb, lc, start, stop)
    return cols[0].result(), cols[1].result(), agree.result(), y


def test_scores_are_stored_in_float32_and_averaged_in_float64():
    base, cand, agree, y = _collected()
    for vector in (base.true_prob, base.top_prob, base.sum_sq_prob, agree.kl, agree.cosine, agree.max_abs):
        assert vector.dtype == SCORES
    for name, vector in (("kl_divergence", agree.kl), ("cosine_similarity", agree.cosine)):
        m = compare(name, base=base, cand=cand, agreement=agree, y=y, task="classification", confidence=0.95,
                    bootstrap=200, seed=0, with_interval=False)
        assert m.candidate == float(vector.astype(np.float64).mean()), name
    m = compare("max_abs_diff", base=base, cand=cand, agreement=agree, y=y, task="classification",
                confidence=0.95, bootstrap=200, seed=0, with_interval=False)
    assert m.candidate == float(agree.max_abs.max())
    assert quality.log_loss(cand, y) == float(-np.log(np.clip(cand.true_prob.astype(np.float64), 1e-15, 1)).mean())
    assert quality.brier_score(cand, y) == float(np.maximum(cand.sum_sq_prob.astype(np.float64)
                                                            - 2.0 * cand.true_prob.astype(np.float64) + 1.0, 0).mean())
    assert quality.per_sample("log_loss", cand, y).dtype == quality.per_sample("brier_score", cand, y).dtype == \
        np.float64


def test_float32_scores_move_the_metrics_by_rounding_only():
    """The same outputs collected in float64 (the scores before rounding) give the metrics to within float32's
    rounding of each sample's score (6e-8 relative)."""
    base, cand, agree, y = _collected(seed=3)
    rng = np.random.default_rng(3)  # the same draws as _collected, in float64
    n, k = len(y), 10
    rng.integers(0, k, n)
    raw_b = rng.normal(size=(n, k)).astype(np.float32).astype(np.float64)
    lb = raw_b - raw_b.max(axis=1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(axis=1, keepdims=True))
    true_b = lb[np.arange(n), y]
    assert quality.log_loss(base, y) == pytest.approx(float(-true_b.mean()), abs=1e-7)
    probs = np.exp(lb)
    brier = np.maximum((probs ** 2).sum(axis=1) - 2 * np.exp(true_b) + 1, 0).mean()
    assert quality.brier_score(base, y) == pytest.approx(float(brier), rel=1e-6)


def test_a_probability_below_float32_range_is_clipped_as_in_float64():
    """log_loss clips at 1e-15: a true-class probability of 1e-50 is 0 in float32 and 1e-50 in float64, and
    both are read as 1e-15."""
    n = 4
    logits = np.array([[0.0, -115.0]] * n, dtype=np.float32)  # p(class 1) = e^-115 = 1.9e-50
    col = Collector(n=n, task="classification", scores="logits", keep_probs=False, where="m.onnx",
                    labels_where="data.npz")
    col.add(logits, np.ones(n, dtype=np.int64), 0, n)
    p = col.result()
    assert p.true_prob.dtype == SCORES and np.all(p.true_prob == 0.0)
    assert quality.log_loss(p, np.ones(n, dtype=np.int64)) == float(-np.log(1e-15))


def test_agreement_beyond_float32_range_keeps_its_vector_in_float64():
    """A max |diff| (or KL) of 1e150 would be an infinity in float32: that vector turns float64 and keeps every
    value, earlier batches included; the others stay float32."""
    agree = AgreementCollector(4)
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    agree.add(a, a + 0.5, None, None, 0, 2)
    agree.add(a, np.array([[1e150, 2.0], [3.0, 4.0]]), None, None, 2, 4)
    r = agree.result()
    assert r.max_abs.dtype == np.float64 and r.max_abs.tolist() == [0.5, 0.5, 1e150, 0.0]
    assert r.cosine.dtype == SCORES and r.kl is None


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/pagemap") or
                    not hasattr(mmap, "MADV_DONTNEED") or not hasattr(os, "posix_fadvise"),
                    reason="page residency is read from Linux's pagemap")
def test_rows_read_in_the_looks_random_order_leave_few_pages_mapped(tmp_path):
    """Sequential looks read a memory-mapped column in a random order (gate.views.Reordered): every scattered
    row maps a whole folio, so one batch mapped most of the file and a pass kept all of it. Rows are now read
    in pieces whose pages are handed back at once: after a pass no page stays, and a batch never has more
    than a few pieces' worth mapped."""
    from gate.views import Reordered

    rows, column = _cold_column(tmp_path)
    order = np.random.default_rng(1).permutation(len(column))
    view = Reordered(column, order)
    total = len(column._mmap) // mmap.PAGESIZE
    most = 0
    for start in range(0, len(view), 1000):
        batch = view[start:start + 1000]
        assert np.array_equal(batch, rows[order[start:start + 1000]])  # the same rows, in the looks' order
        most = max(most, _resident_pages(column))
    assert _resident_pages(column) == 0
    assert most < total // 4, (most, total)
