"""Charts for the HTML report: matplotlib drawn to inline SVG, deterministic and colour-blind safe.

matplotlib is imported only when a chart is drawn, so a run without subgroups
never pays its import time.
"""

from __future__ import annotations

import io
import re

# Okabe-Ito: distinguishable with every common colour-vision deficiency
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#999999"


def _short(text: str, length: int = 40) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def forest_svg(rows: list[dict], *, metric: str, confidence: float, higher_is_better: bool) -> str:
    """Per-subgroup delta (candidate - base) with its interval, worst on top.

    rows: {label, delta, low, high}; intervals that exclude 0 on the harmful side
    are drawn in vermillion with a square marker (colour is never the only cue).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    rows = [r for r in rows if r.get("delta") is not None]
    if not rows:
        return ""
    with matplotlib.rc_context({"svg.hashsalt": "gate", "svg.fonttype": "none", "font.size": 9}):
        height = 0.9 + 0.28 * len(rows)
        fig, ax = plt.subplots(figsize=(7.0, height))
        try:
            for i, row in enumerate(reversed(rows)):
                low = row["low"] if row.get("low") is not None else row["delta"]
                high = row["high"] if row.get("high") is not None else row["delta"]
                harmful = high < 0 if higher_is_better else low > 0
                colour, marker = (VERMILLION, "s") if harmful else (BLUE, "o")
                ax.plot([low, high], [i, i], color=colour, linewidth=2)
                ax.plot([row["delta"]], [i], marker=marker, color=colour, markersize=5)
            ax.axvline(0.0, color=GREY, linewidth=1, linestyle="--")
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels([_short(r["label"]) for r in reversed(rows)])
            ax.set_xlabel(f"{metric}: candidate − base, with {confidence:.0%} interval")
            ax.grid(axis="x", color="#e0e0e0", linewidth=0.5)
            fig.tight_layout()
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        finally:
            plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # inline: no XML declaration or doctype
    return re.sub(r'<svg ', '<svg role="img" ', svg, count=1)
