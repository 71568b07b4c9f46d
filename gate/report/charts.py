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


def _place_labels(ax, points: list[dict], *, fontsize: float = 8.0) -> list[tuple[float, float]]:
    """Offsets (in points) for each point's label so that no two labels, and no label and marker, overlap.

    Greedy: each label, in order, takes the first of a ring of positions around its point whose box is free;
    boxes are estimated from the text length (0.6 em per character), in display units. Names that would
    not fit anywhere keep the last candidate, further out."""
    scale = ax.figure.dpi / 72.0
    width_of = lambda text: 0.6 * fontsize * len(text) * scale  # noqa: E731 - one estimate, used twice
    height = 1.25 * fontsize * scale
    marker = 4.0 * scale
    anchors = [tuple(ax.transData.transform((p["cost"], p["quality"]))) for p in points]
    taken = [(x - marker, y - marker, x + marker, y + marker) for x, y in anchors]  # every marker
    ring = [(5, 4), (5, -12), (-5, 4), (-5, -12), (0, 10), (0, -18)]
    candidates = ring + [(dx * k, dy * k) for k in (2, 3) for dx, dy in ring]
    offsets = []
    for p, (x, y) in zip(points, anchors):
        w = width_of(_short(p["name"], 28))
        chosen, box = None, None
        for dx, dy in candidates:
            left = x + dx * scale - (w if dx < 0 else (w / 2 if dx == 0 else 0))
            bottom = y + dy * scale
            box = (left, bottom, left + w, bottom + height)
            if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                chosen = (dx, dy)
                break
        chosen = chosen or candidates[-1]
        taken.append(box)
        offsets.append(chosen)
    return offsets


def _quality_limits(points: list[dict], quality: str) -> tuple[float, float]:
    """The quality axis: every interval in view, and never narrower than two points of a proportion-like
    metric (one sample's worth of accuracy drawn over the whole height makes noise look like a cliff)."""
    lows = [p.get("low", p["quality"]) if p.get("low") is not None else p["quality"] for p in points]
    highs = [p.get("high", p["quality"]) if p.get("high") is not None else p["quality"] for p in points]
    low, high = min(lows), max(highs)
    scale = max(abs(low), abs(high), 1e-12)
    floor = 0.02 if 0.0 <= low and high <= 1.0 else 0.02 * scale
    pad = max((high - low) * 0.15, (floor - (high - low)) / 2, 0.0)
    return low - pad, high + pad


def pareto_svg(points: list[dict], *, quality: str, higher_is_better: bool, cost: str, cost_label: str,
               confidence: float | None = None) -> str:
    """Quality against a cost (size, latency) for the base and every candidate.

    points: {name, quality, cost, verdict ("base" | "pass" | "fail"), low, high (the quality's interval,
    optional)}. The frontier joins the points no other point beats on both axes; labels are placed so none
    overlap; whiskers show each candidate's interval.
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
                whiskers = [p for p in chosen if p.get("low") is not None and p.get("high") is not None]
                if whiskers:
                    ax.errorbar([p["cost"] for p in whiskers], [p["quality"] for p in whiskers],
                                yerr=[[p["quality"] - p["low"] for p in whiskers],
                                      [p["high"] - p["quality"] for p in whiskers]],
                                fmt="none", ecolor=colour, elinewidth=1, capsize=3, zorder=2)
        ax.set_ylim(*_quality_limits(points, quality))
        costs = [p["cost"] for p in points]
        span = (max(costs) - min(costs)) or max(abs(max(costs)), 1e-12)
        ax.set_xlim(min(costs) - 0.08 * span, max(costs) + 0.35 * span)  # room for labels on the right
        for p, offset in zip(points, _place_labels(ax, points)):
            ax.annotate(_short(p["name"], 28), (p["cost"], p["quality"]), textcoords="offset points",
                        xytext=offset, fontsize=8, ha="right" if offset[0] < 0 else ("center" if offset[0] == 0 else "left"))
        ax.set_xlabel(cost_label)
        level = f", {confidence:.0%} interval" if confidence else ""
        ax.set_ylabel(f"{quality} ({'higher' if higher_is_better else 'lower'} is better{level})")
        ax.grid(color="#e0e0e0", linewidth=0.5)
        ax.legend(loc="best", fontsize=8, frameon=False)
        fig.tight_layout()
        description = "; ".join(f"{p['name']}: {quality} {p['quality']:.4f}"
                                + (f" ({p['low']:.4f} to {p['high']:.4f})" if p.get("low") is not None else "")
                                + f", {cost} {p['cost']:.4g}" for p in points)
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


def reliability_svg(base: list[dict] | None, candidate: list[dict] | None, *, name: str) -> str:
    """Reliability diagram: accuracy against mean confidence per bin for base and candidate on one axes, with
    the diagonal a perfectly calibrated model lies on. Tables: {low, high, count, confidence, accuracy}.
    Drawn without matplotlib (gate/report/svg.py): every report with scores has one."""
    from gate.report.svg import Chart, Series, render

    # as the latency chart: the base solid black, the candidate dashed blue; the markers differ too
    curves = [(label, [b for b in table or [] if b.get("count")], style)
              for label, table, style in (("base", base, ("black", None, "circle")),
                                          (name, candidate, (BLUE, "5 3", "square")))]
    curves = [c for c in curves if c[1]]
    if not curves:
        return ""
    description = "; ".join(
        f"{label}: " + ", ".join(f"{b['low']:.2f}-{b['high']:.2f}: confidence {b['confidence']:.3f}, accuracy "
                                 f"{b['accuracy']:.3f}, {b['count']:,} samples" for b in bins)
        for label, bins, _ in curves)
    series = [Series(label=_short(label, 30), points=[(b["confidence"], b["accuracy"]) for b in bins],
                     colour=colour, dash=dash, marker=marker) for label, bins, (colour, dash, marker) in curves]
    return render(Chart(title=f"reliability of base and {name}", description=description,
                        xlabel="mean confidence in bin (highest class probability)", ylabel="accuracy in bin",
                        series=series, x_range=(0.0, 1.0), y_range=(0.0, 1.0), width=420, height=400,
                        guides=[((0.0, 0.0), (1.0, 1.0))]))


def history_svg(points: list[dict], *, metric: str, labels: list[str], higher_is_better: bool | None,
                reference: float | None, reference_label: str) -> str:
    """A metric across releases: each candidate's value with its interval as a whisker, one line per candidate
    name; a failing verdict is a vermillion square, a blessed model a black ring (shape and colour, never colour
    alone); the dashed line is the value drift is measured from.

    points: {x (release index, 1-based), name, value, low, high, verdict, blessed}."""
    points = [p for p in points if p.get("value") is not None]
    if not points:
        return ""
    with _figure(7.0, 3.4) as (fig, ax):
        for name in sorted({p["name"] for p in points}):
            series = sorted((p for p in points if p["name"] == name), key=lambda p: p["x"])
            ax.plot([p["x"] for p in series], [p["value"] for p in series], color=GREY, linewidth=1, zorder=1)
        # one collection per kind of mark, not artists per point: hundreds of releases stay a fraction of a second
        for fail, (colour, marker) in ((False, (BLUE, "o")), (True, (VERMILLION, "s"))):
            chosen = [p for p in points if (p["verdict"] != "pass") == fail]
            if not chosen:
                continue
            ax.vlines([p["x"] for p in chosen],
                      [p["low"] if p.get("low") is not None else p["value"] for p in chosen],
                      [p["high"] if p.get("high") is not None else p["value"] for p in chosen],
                      colors=colour, linewidth=2, zorder=2)
            ax.scatter([p["x"] for p in chosen], [p["value"] for p in chosen], color=colour, marker=marker, s=25,
                       zorder=3)
        blessed = [p for p in points if p.get("blessed")]
        if blessed:
            ax.scatter([p["x"] for p in blessed], [p["value"] for p in blessed], s=121, facecolors="none",
                       edgecolors="black", linewidths=1.2, zorder=4)
        if reference is not None:
            ax.axhline(reference, color=GREY, linewidth=1, linestyle="--")
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels([_short(label, 18) for label in labels], rotation=30 if len(labels) > 4 else 0,
                           ha="right" if len(labels) > 4 else "center")
        ax.set_xlim(0.5, len(labels) + 0.5)
        direction = "" if higher_is_better is None else f" ({'higher' if higher_is_better else 'lower'} is better)"
        ax.set_ylabel(f"{metric}{direction}")
        ax.grid(axis="y", color="#e0e0e0", linewidth=0.5)
        fig.tight_layout()
        ref = f"; dashed line: {reference_label} ({reference:.4f})" if reference is not None else ""
        description = "; ".join(
            f"{labels[p['x'] - 1]} {p['name']}: {p['value']:.4f} ({p.get('low')} to {p.get('high')}), "
            f"{p['verdict']}{', blessed' if p.get('blessed') else ''}" for p in sorted(points, key=lambda p: p["x"]))
        return _figure_svg(fig, f"{metric} across releases", description + ref)


def layers_svg(rows: list[dict], *, first_growth: int | None, name: str) -> str:
    """SQNR against the base along the base's graph order (gate/measure/tensors.py): where the error enters.

    rows: the comparison's rows {tensor, op, exact, sqnr_db}. Exact tensors sit on a grey line above the
    highest finite value (hollow triangles); the first tensor where the error grows is a vermillion square
    (shape and colour, never colour alone). Drawn without matplotlib (gate/report/svg.py)."""
    from gate.report.svg import Chart, Series, render

    finite = [(i, r["sqnr_db"]) for i, r in enumerate(rows) if r.get("sqnr_db") is not None]
    if not finite:
        return ""  # every tensor exact: the sentence above the table says it, a flat line would not
    ceiling = max(v for _, v in finite) + 10
    exact = [i for i, r in enumerate(rows) if r.get("exact")]
    series = [Series(label="SQNR (dB)", points=[(float(i), v) for i, v in finite], colour=BLUE, size=2.5)]
    guides, notes = [], []
    if exact:
        guides.append(((0.0, ceiling), (float(len(rows) - 1), ceiling)))
        series.append(Series(label="exact (no error)", points=[(float(i), ceiling) for i in exact], colour=GREY,
                             marker="hollow-triangle", line=False))
    if first_growth is not None and rows[first_growth].get("sqnr_db") is not None:
        row = rows[first_growth]
        series.append(Series(label="error first grows", points=[(float(first_growth), row["sqnr_db"])],
                             colour=VERMILLION, marker="square", line=False, size=5))
        notes.append((float(first_growth), row["sqnr_db"], _short(row["tensor"], 30), VERMILLION))
    ticks = [(float(i), _short(r["tensor"], 18)) for i, r in enumerate(rows)] if len(rows) <= 30 else None
    parts = []
    if first_growth is not None:
        row = rows[first_growth]
        value = f"{row['sqnr_db']:.1f} dB" if row.get("sqnr_db") is not None else "new NaN or infinite values"
        parts.append(f"error first grows at {row['tensor']} ({row['op']}): {value}")
    lowest = sorted(finite, key=lambda p: p[1])[:5]
    parts.append("lowest: " + ", ".join(f"{rows[i]['tensor']} {v:.1f} dB" for i, v in lowest))
    parts.append(f"{len(exact)} of {len(rows)} tensors exact")
    return render(Chart(title=f"SQNR of {name} against the base, tensor by tensor", description="; ".join(parts),
                        xlabel="tensor, in the base's graph order", ylabel="SQNR against the base (dB)",
                        series=series, x_range=(-0.5, len(rows) - 0.5), x_ticks=ticks, guides=guides, notes=notes,
                        height=300))
