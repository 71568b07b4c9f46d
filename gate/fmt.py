"""Number formatting that never makes a failing value look like a passing one.

Rounding 0.01004 to "0.0100" next to a bound of 0.0100 (or 0.99996 to
"100.0%") hides the very thing a report must show, so every formatter here
adds digits until the shown value differs from the reference it is held against.
"""

from __future__ import annotations

import math


def _plain(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _is_count(metric: str) -> bool:
    """Whole-number metrics (the registry says which) print as integers: 17,226, never 17,226.0."""
    if not metric:
        return False
    from gate.measure.registry import get_metric

    spec = get_metric(metric)
    return spec is not None and spec.count


def number(x: float | None, ref: float | None = None, *, digits: int = 4, metric: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        x = abs(x)  # -0.0 would print as "-0.0000"
    if isinstance(x, int) and not isinstance(x, bool) or _is_count(metric) and float(x).is_integer():
        return f"{x:,.0f}"
    if abs(x) >= 1000:
        digits = 1
        base = f"{x:,.{digits}f}"
    else:
        base = _plain(x, digits)
    if ref is None or x == ref or ref != ref:
        return base
    for more in range(digits, 13):
        shown, shown_ref = _plain(x, more), _plain(ref, more)
        if shown != shown_ref:
            return shown
    return repr(x)


def pct(x: float | None, *, digits: int = 1) -> str:
    """A share as a percentage; 0.99996 never prints as 100.0%, 0.00004 never as 0.0%."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    for more in range(digits, 10):
        shown = f"{100 * x:.{more}f}"
        if (float(shown) == 100 and x < 1) or (float(shown) == 0 and x > 0):
            continue
        return shown + "%"
    return f"{100 * x!r}%"


def signed(x: float | None, *, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = number(x, 0.0, digits=digits)
    return text if text.startswith("-") else "+" + text
