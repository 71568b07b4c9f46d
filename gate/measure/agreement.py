"""Base-vs-candidate fidelity, per sample: flips and output closeness."""

from __future__ import annotations

import numpy as np

from gate.measure.quality import CHUNK
from gate.predictions import Agreement, Predictions


def flip_counts(base: Predictions, cand: Predictions, y: np.ndarray | None) -> dict[str, int | None]:
    """Counts of changed predictions; negative/positive flips need labels."""
    changed = base.pred != cand.pred
    out: dict[str, int | None] = {"flip_rate": int(changed.sum()),
                                  "negative_flip_rate": None, "positive_flip_rate": None}
    if y is not None:
        base_right = base.pred == y
        cand_right = cand.pred == y
        out["negative_flip_rate"] = int((base_right & ~cand_right).sum())
        out["positive_flip_rate"] = int((~base_right & cand_right).sum())
    return out


def per_sample(agreement: Agreement) -> dict[str, np.ndarray | None]:
    """Per-sample vectors whose mean is the metric (bootstrapped like any mean)."""
    return {"kl_divergence": agreement.kl, "cosine_similarity": agreement.cosine}


MAX_MATRIX_CLASSES = 50  # beyond this a k x k table is unreadable; the flips are still counted


def change_matrix(base: Predictions, cand: Predictions) -> dict | None:
    """Which base predictions became which candidate predictions: counts[i][j] = base i -> candidate j."""
    if base.pred is None or cand.pred is None:
        return None
    classes = np.union1d(np.unique(base.pred), np.unique(cand.pred))
    if len(classes) > MAX_MATRIX_CLASSES:
        return None
    k = len(classes)
    counts = np.zeros(k * k, dtype=np.int64)
    for lo in range(0, len(base.pred), CHUNK):  # a chunk of samples at a time: no whole-length int64 codes
        bi = np.searchsorted(classes, base.pred[lo:lo + CHUNK])
        ci = np.searchsorted(classes, cand.pred[lo:lo + CHUNK])
        counts += np.bincount(bi * k + ci, minlength=k * k)
    counts = counts.reshape(k, k)
    return {"classes": [int(c) if np.issubdtype(classes.dtype, np.integer) else str(c) for c in classes],
            "counts": counts.tolist()}
