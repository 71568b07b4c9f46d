"""The reliability diagram: accuracy against confidence, bin by bin, for the base and a candidate.

The bins are those of the `ece` metric (15 equal-width bins of the top-label confidence,
gate/measure/quality.py: ece_bin), so the diagram shows exactly the gaps whose weighted sum
is the judged ECE. Quantization often leaves accuracy alone and moves confidence: this is
where that shows.
"""

from __future__ import annotations

import numpy as np

from gate.measure.quality import ECE_BINS, binned_confidence, brier_score, ece
from gate.predictions import Predictions

DIGITS = 6


def reliability(p: Predictions, y: np.ndarray) -> list[dict] | None:
    """Per bin: {low, high, count, confidence (mean), accuracy}; confidence and accuracy None for an empty bin.
    None for a model that gives labels only (no confidence)."""
    if p.top_prob is None or p.pred is None:
        return None
    m = len(ECE_BINS) - 1
    count, conf, right = binned_confidence(p.top_prob, p.pred, y)
    return [{"low": round(float(ECE_BINS[j]), DIGITS), "high": round(float(ECE_BINS[j + 1]), DIGITS),
             "count": int(count[j]),
             "confidence": round(float(conf[j] / count[j]), DIGITS) if count[j] else None,
             "accuracy": round(float(right[j] / count[j]), DIGITS) if count[j] else None} for j in range(m)]


def calibration(base: Predictions, cand: Predictions, y: np.ndarray | None) -> dict | None:
    """{bins, base, candidate, ece_base, ece_candidate, brier_base, brier_candidate}: the reliability tables
    of both models (None for a side that gives labels only); None without labels or without any scores."""
    if y is None:
        return None
    tables = {"base": reliability(base, y), "candidate": reliability(cand, y)}
    if tables["base"] is None and tables["candidate"] is None:
        return None

    def value(fn, p: Predictions, table) -> float | None:
        return None if table is None else float(fn(p, y))

    return {"bins": len(ECE_BINS) - 1, **tables,
            "ece_base": value(ece, base, tables["base"]), "ece_candidate": value(ece, cand, tables["candidate"]),
            "brier_base": value(brier_score, base, tables["base"]),
            "brier_candidate": value(brier_score, cand, tables["candidate"])}
