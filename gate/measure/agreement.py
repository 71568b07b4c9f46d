"""Base-vs-candidate fidelity, per sample: flips and output closeness."""

from __future__ import annotations

import numpy as np

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
