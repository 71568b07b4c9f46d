"""Line charts written as SVG text, for the charts every report has (where the error enters, reliability).

matplotlib costs about 0.7 s to import, more than the whole measurement of a small model with a warm cache;
charts drawn in every run are simple lines and markers, so they are written here directly. Deterministic,
colour never the only cue (marker shapes and dashes differ), a <title>/<desc> text alternative, text as text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from markupsafe import escape

W, H = 640.0, 300.0
LEFT, RIGHT, TOP, BOTTOM = 58.0, 16.0, 14.0, 44.0


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: str
    marker: str = "circle"  # circle | square | triangle | hollow-triangle
    dash: str | None = None  # an SVG stroke-dasharray, e.g. "5 3"
    line: bool = True
    size: float = 3.0


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    xlabel: str
    ylabel: str
    series: list[Series]
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    x_ticks: list[tuple[float, str]] | None = None  # (position, label); default: nice numbers
    width: float = W
    height: float = H
    guides: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)  # dotted grey
    notes: list[tuple[float, float, str, str]] = field(default_factory=list)  # (x, y, text, colour) labels


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if abs(x) < 1e6 else f"{x:.3g}"


def _tick_text(x: float) -> str:
    return f"{x:g}"


def _marker(kind: str, x: float, y: float, r: float, colour: str) -> str:
    if kind == "square":
        return f'<rect x="{_num(x - r)}" y="{_num(y - r)}" width="{_num(2 * r)}" height="{_num(2 * r)}" fill="{colour}"/>'
    if kind in ("triangle", "hollow-triangle"):
        pts = f"{_num(x)},{_num(y - r)} {_num(x - r)},{_num(y + r)} {_num(x + r)},{_num(y + r)}"
        fill = "none" if kind == "hollow-triangle" else colour
        return f'<polygon points="{pts}" fill="{fill}" stroke="{colour}"/>'
    return f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(r)}" fill="{colour}"/>'


def render(chart: Chart) -> str:
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points]
    x0, x1 = chart.x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    y0, y1 = chart.y_range or ((min(ys), max(ys)) if ys else (0.0, 1.0))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 1.0, y1 + 1.0
    if chart.y_range is None:  # a little air above and below the data
        pad = 0.06 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad
    w, h = chart.width, chart.height
    ticks = chart.x_ticks if chart.x_ticks is not None else [(x, _tick_text(x)) for x in nice_ticks(x0, x1)]
    rotate = chart.x_ticks is not None and len(ticks) > 8
    bottom = BOTTOM + (max(len(label) for _, label in ticks) * 4.5 if rotate and ticks else 0)  # slanted names
    h += bottom - BOTTOM
    pw, ph = w - LEFT - RIGHT, h - TOP - bottom

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * ph

    out = [f'<svg role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(w)} {_num(h)}" '
           f'width="{_num(w)}" height="{_num(h)}" font-family="sans-serif" font-size="10">',
           f"<title>{escape(chart.title)}</title><desc>{escape(chart.description)}</desc>",
           f'<rect x="{_num(LEFT)}" y="{_num(TOP)}" width="{_num(pw)}" height="{_num(ph)}" fill="none" '
           'stroke="#333" stroke-width="0.8"/>']
    for y in nice_ticks(y0, y1):
        if y0 <= y <= y1:
            out.append(f'<line x1="{_num(LEFT)}" y1="{_num(py(y))}" x2="{_num(LEFT + pw)}" y2="{_num(py(y))}" '
                       'stroke="#e0e0e0" stroke-width="0.5"/>')
            out.append(f'<text x="{_num(LEFT - 4)}" y="{_num(py(y) + 3)}" text-anchor="end">{_tick_text(y)}</text>')
    for x, label in ticks:
        if x0 <= x <= x1:
            anchor = 'text-anchor="end" transform="rotate(-50 {0} {1})"' if rotate else 'text-anchor="middle"'
            tx, ty = _num(px(x)), _num(TOP + ph + 12)
            out.append(f'<text x="{tx}" y="{ty}" {anchor.format(tx, ty)}>{escape(label)}</text>')
    for (ax, ay), (bx, by) in chart.guides:
        out.append(f'<line x1="{_num(px(ax))}" y1="{_num(py(ay))}" x2="{_num(px(bx))}" y2="{_num(py(by))}" '
                   'stroke="#999999" stroke-width="1" stroke-dasharray="2 3"/>')
    for s in chart.series:
        points = [(px(x), py(y)) for x, y in s.points]
        if s.line and len(points) > 1:
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            path = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="1.2"{dash}/>')
        out.extend(_marker(s.marker, x, y, s.size, s.colour) for x, y in points)
    for x, y, text, colour in chart.notes:
        out.append(f'<text x="{_num(px(x) + 6)}" y="{_num(py(y) - 6)}" fill="{colour}">{escape(text)}</text>')
    out.append(f'<text x="{_num(LEFT + pw / 2)}" y="{_num(h - 4)}" text-anchor="middle">{escape(chart.xlabel)}</text>')
    out.append(f'<text x="12" y="{_num(TOP + ph / 2)}" text-anchor="middle" '
               f'transform="rotate(-90 12 {_num(TOP + ph / 2)})">{escape(chart.ylabel)}</text>')
    legend_y = TOP + 12
    for s in chart.series:  # legend, top right inside the plot
        lx = LEFT + pw - 150
        if s.line:
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<line x1="{_num(lx)}" y1="{_num(legend_y - 3)}" x2="{_num(lx + 18)}" y2="{_num(legend_y - 3)}" '
                       f'stroke="{s.colour}" stroke-width="1.2"{dash}/>')
        out.append(_marker(s.marker, lx + 9, legend_y - 3, s.size, s.colour))
        out.append(f'<text x="{_num(lx + 24)}" y="{_num(legend_y)}">{escape(s.label[:30])}</text>')
        legend_y += 13
    out.append("</svg>")
    return "".join(out)
