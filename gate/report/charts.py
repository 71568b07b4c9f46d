"""Charts for the HTML report: matplotlib drawn to inline SVG, deterministic and colour-blind safe.

matplotlib is imported only when a chart is drawn, so a run without subgroups
never pays its import time.
"""

from __future__ import annotations

import io
from contextlib import contextmanager

# Okabe-Ito: distinguishable with every common colour-vision deficiency
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#999999"


@contextmanager
def _figure(width: float, height: float):
    """A figure with deterministic SVG output (fixed ids, text kept as text), always closed."""
    import matplotlib
    # Figure with the SVG canvas, not pyplot: no GUI backend machinery, a much lighter import
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": "gate", "svg.fonttype": "none", "font.size": 9}):
        fig = Figure(figsize=(width, height))
        FigureCanvasSVG(fig)
        yield fig, fig.add_subplot()


def _short(text: str, length: int = 40) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def forest_svg(rows: list[dict], *, metric: str, confidence: float, higher_is_better: bool) -> str:
    """Per-subgroup delta (candidate - base) with its interval, worst on top.

    rows: {label, delta, low, high}; intervals that exclude 0 on the harmful side
    are drawn in vermillion with a square marker (colour is never the only cue).
    """
    rows = [r for r in rows if r.get("delta") is not None]
    if not rows:
        return ""
    with _figure(7.0, 0.9 + 0.28 * len(rows)) as (fig, ax):
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
        description = "; ".join(f"{r['label']}: {r['delta']:+.4f} ({r.get('low')} to {r.get('high')})"
                                for r in rows)
        return _figure_svg(fig, f"change of {metric} per subgroup", description)


def _figure_svg(fig, title: str, description: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # inline: no XML declaration or doctype
    from markupsafe import escape

    head = svg.index(">") + 1
    # a text alternative inside the image itself, for screen readers and text extraction
    return (svg[:head].replace("<svg ", '<svg role="img" ', 1) + f"<title>{escape(title)}</title>"
            f"<desc>{escape(description)}</desc>" + svg[head:])


def pareto_svg(points: list[dict], *, quality: str, higher_is_better: bool, cost: str, cost_label: str) -> str:
    """Quality against a cost (size, latency) for the base and every candidate.

    points: {name, quality, cost, verdict ("base" | "pass" | "fail")}. The frontier
    joins the points no other point beats on both axes.
    """
    points = [p for p in points if p.get("quality") is not None and p.get("cost") is not None]
    if len(points) < 3:
        return ""  # base and one candidate: the table says it all, no chart (and no matplotlib import)

    def better(a, b):  # a at least as good as b on both axes, strictly on one
        qa, qb = (a["quality"], b["quality"]) if higher_is_better else (-a["quality"], -b["quality"])
        return qa >= qb and a["cost"] <= b["cost"] and (qa > qb or a["cost"] < b["cost"])

    frontier = sorted((p for p in points if not any(better(o, p) for o in points)), key=lambda p: p["cost"])
    style = {"base": ("black", "D"), "pass": (BLUE, "o"), "fail": (VERMILLION, "s")}
    with _figure(7.0, 4.2) as (fig, ax):
        ax.plot([p["cost"] for p in frontier], [p["quality"] for p in frontier], color=GREY,
                linestyle="--", linewidth=1, label="Pareto frontier")
        for kind, label in (("base", "base"), ("pass", "passes"), ("fail", "fails")):
            chosen = [p for p in points if p["verdict"] == kind]
            if chosen:
                colour, marker = style[kind]
                ax.scatter([p["cost"] for p in chosen], [p["quality"] for p in chosen], color=colour,
                           marker=marker, s=36, label=label, zorder=3)
        for p in points:
            ax.annotate(_short(p["name"], 28), (p["cost"], p["quality"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
        ax.set_xlabel(cost_label)
        ax.set_ylabel(f"{quality} ({'higher' if higher_is_better else 'lower'} is better)")
        ax.grid(color="#e0e0e0", linewidth=0.5)
        ax.legend(loc="best", fontsize=8, frameon=False)
        fig.tight_layout()
        description = "; ".join(f"{p['name']}: {quality} {p['quality']:.4f}, {cost} {p['cost']:.4g}"
                                for p in points)
        return _figure_svg(fig, f"{quality} against {cost}", description)


def latency_svg(base: dict, candidate: dict, *, name: str) -> str:
    """Latency distributions of base and candidate as quantile curves (measured interleaved)."""
    curves = [(q, label) for q, label in ((base, "base"), (candidate, name)) if q and q.get("values")]
    if not curves:
        return ""
    with _figure(7.0, 3.2) as (fig, ax):
        for (q, label), colour, style in zip(curves, ("black", BLUE), ("-", "--")):
            ax.plot(q["values"], [100 * level for level in q["levels"]], color=colour, linestyle=style,
                    marker="o", markersize=3, label=_short(label, 30))
        ax.set_xlabel("latency per call (ms)")
        ax.set_ylabel("percentile")
        ax.grid(color="#e0e0e0", linewidth=0.5)
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        fig.tight_layout()
        description = "; ".join(
            f"{label}: " + ", ".join(f"p{100 * lv:g} {v:.4g} ms" for lv, v in zip(q["levels"], q["values"]))
            for q, label in curves)
        return _figure_svg(fig, f"latency of base and {name}", description)
