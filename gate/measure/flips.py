"""The samples whose prediction changed: which ones, how, and in which subgroups.

A flip is one sample the candidate predicts differently from the base. With labels
it is negative (base right, candidate wrong), positive (base wrong, candidate right)
or neutral (both wrong, differently); without labels only "changed". The list is
what a reviewer opens first after a failing flip or accuracy rule: flips.csv and
the report's table of the largest changes are made from it.
"""

from __future__ import annotations

import numpy as np

from gate.predictions import Classes, Predictions

# rows kept per candidate; the counts are always exact. results.json (indented JSON, ~500 bytes a row: 5 MB a
# candidate at the cap) must stay well under the 100 MB the loader reads (gate/contract.py) with many candidates
MAX_ROWS = 10_000
LARGEST = 20  # rows with the largest change of the true-class probability, shown in report.html
THUMBNAILS = 8  # first negative flips drawn in report.html when the input is an image
DIGITS = 6  # probabilities are stored rounded: the list is for reading, the metrics use full precision

NEGATIVE, POSITIVE, NEUTRAL, CHANGED = "negative", "positive", "neutral", "changed"
_KIND_ORDER = {NEGATIVE: 0, POSITIVE: 1, NEUTRAL: 2, CHANGED: 3}


def class_name(index: int, classes: Classes | None):
    """A class index as the user names it (the policy's data.classes or the model's own labels)."""
    if classes is not None and 0 <= index < len(classes.names):
        name = classes.names[index]
        name = name.item() if hasattr(name, "item") else name
        return name if isinstance(name, (str, int)) and not isinstance(name, bool) else str(name)
    return int(index)


def _rounded(x) -> float | None:
    return None if x is None else round(float(x), DIGITS)


def flip_table(base: Predictions, cand: Predictions, y: np.ndarray | None, *, classes: Classes | None = None,
               groups: dict[str, np.ndarray] | None = None, lines: np.ndarray | None = None,
               limit: int = MAX_ROWS) -> dict | None:
    """{count, negative, positive, neutral, rows, capped, groups, largest} for one candidate, or None when
    either model gives no class predictions.

    rows: negative flips first, then positive, neutral (or unlabelled) ones; within a kind the largest change
    of the true-class probability first, then data order. A row: index (0-based, data order), line (CSV data),
    kind, label, base / candidate (predicted classes), base_score / candidate_score (the probability each gave
    its own prediction), base_true / candidate_true (the probability of the true class), change
    (candidate_true - base_true), groups {column: value}. Scores are None for a model that gives labels only."""
    if base.pred is None or cand.pred is None:
        return None
    changed = np.flatnonzero(base.pred != cand.pred)
    if y is not None:
        base_right, cand_right = base.pred[changed] == y[changed], cand.pred[changed] == y[changed]
        kinds = np.where(base_right & ~cand_right, NEGATIVE, np.where(~base_right & cand_right, POSITIVE, NEUTRAL))
    else:
        kinds = np.full(len(changed), CHANGED)
    with_true = y is not None and base.true_prob is not None and cand.true_prob is not None
    change = (cand.true_prob[changed] - base.true_prob[changed]) if with_true else np.zeros(len(changed))
    order = np.lexsort((changed, -np.abs(change), np.array([_KIND_ORDER[k] for k in kinds], dtype=np.int64)))
    kept = order[:limit]
    columns = groups or {}
    # the largest changes of the true-class probability whatever their kind (data order without scores)
    largest = np.lexsort((changed, -np.abs(change)))[:LARGEST] if with_true else order[:LARGEST]
    counts = {kind: int((kinds == kind).sum()) for kind in (NEGATIVE, POSITIVE, NEUTRAL)} if y is not None else \
        {NEGATIVE: None, POSITIVE: None, NEUTRAL: None}
    return {"count": int(len(changed)), **counts, "capped": len(changed) > len(kept), "groups": list(columns),
            "rows": _rows(kept, changed, kinds, change if with_true else None, base, cand, y, classes, columns, lines),
            "largest": _rows(largest, changed, kinds, change if with_true else None, base, cand, y, classes, columns,
                             lines),
            "thumbnails": []}


def _rows(positions: np.ndarray, changed: np.ndarray, kinds: np.ndarray, change: np.ndarray | None,
          base: Predictions, cand: Predictions, y: np.ndarray | None, classes: Classes | None,
          columns: dict[str, np.ndarray], lines: np.ndarray | None) -> list[dict]:
    """The rows of the flips at these positions of `changed`, a column at a time (thousands of rows: a
    Python call per cell would cost more than the rest of a warm run's judging)."""
    idx = changed[positions]
    names: dict[int, object] = {}

    def named(values: np.ndarray) -> list:
        out = []
        for v in values.tolist():
            if v not in names:
                names[v] = class_name(int(v), classes)
            out.append(names[v])
        return out

    def scores(p: Predictions, vector: str) -> list:
        values = getattr(p, vector)
        if values is None or (vector == "true_prob" and y is None):
            return [None] * len(idx)
        return [round(v, DIGITS) for v in values[idx].astype(np.float64).tolist()]

    n = len(idx)
    cols = {
        "index": idx.tolist(), "line": lines[idx].astype(np.int64).tolist() if lines is not None else [None] * n,
        "kind": [str(k) for k in kinds[positions].tolist()], "label": named(y[idx]) if y is not None else [None] * n,
        "base": named(base.pred[idx]), "candidate": named(cand.pred[idx]),
        "base_score": scores(base, "top_prob"), "candidate_score": scores(cand, "top_prob"),
        "base_true": scores(base, "true_prob"), "candidate_true": scores(cand, "true_prob"),
        "change": [round(v, DIGITS) for v in change[positions].astype(np.float64).tolist()] if change is not None
        else [None] * n}
    # named as gate/measure/groups.py names subgroups: the text of the value
    group_texts = {name: [str(v) for v in values[idx]] for name, values in columns.items()}
    keys = list(cols)
    return [{**dict(zip(keys, row)), "groups": {name: texts[i] for name, texts in group_texts.items()}}
            for i, row in enumerate(zip(*cols.values()))] if n else []


def first_negative(flips: dict | None, k: int = THUMBNAILS) -> list[dict]:
    """The first k negative flips of the list (the largest losses of the true-class probability first)."""
    return [r for r in (flips or {}).get("rows", []) if r["kind"] == NEGATIVE][:k]
