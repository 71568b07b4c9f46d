"""flips.csv: every changed prediction of every candidate, one row each, safe to open in a spreadsheet.

Class names, subgroup values and candidate names are user data. The csv module quotes commas,
quotes and line breaks; a text cell that starts with =, +, -, @, a tab or a carriage return gets
a leading apostrophe (as OWASP advises against CSV injection), so a spreadsheet shows it as text
and never runs it as a formula. Numbers are written as numbers.
"""

from __future__ import annotations

import csv
import io
import re

from gate.measurements import Measurements

FILE = "flips.csv"
COLUMNS = ("candidate", "index", "line", "kind", "true_label", "base_prediction", "candidate_prediction",
           "base_score", "candidate_score", "base_true_score", "candidate_true_score", "true_score_change")
_ROW_KEYS = ("index", "line", "kind", "label", "base", "candidate", "base_score", "candidate_score", "base_true",
             "candidate_true", "change")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> object:
    """A value as a CSV cell: None is empty, text that a spreadsheet would read as a formula is quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def flips_csv(m: Measurements) -> str | None:
    """The text of flips.csv, or None when no candidate has a list of flips (regression, every candidate failed).

    One header row, then each candidate's rows in its stored order (negative flips first); a candidate whose
    list was cut at gate.measure.flips.MAX_ROWS ends with a line starting with '#' that says so."""
    listed = [c for c in m.candidates if c.flips is not None]
    if not listed:
        return None
    groups = list(dict.fromkeys(g for c in listed for g in c.flips.get("groups", [])))
    # a group column named like a fixed column keeps its values apart
    headers = [f"group:{g}" if g in COLUMNS else g for g in groups]
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: CRLF line ends, quotes where a cell needs them
    writer.writerow([cell(h) for h in (*COLUMNS, *headers)])
    for c in listed:
        rows = c.flips.get("rows", [])
        for row in rows:
            writer.writerow([cell(c.name), *(cell(row.get(k)) for k in _ROW_KEYS),
                             *(cell(row.get("groups", {}).get(g)) for g in groups)])
        if c.flips.get("capped"):
            # written as it is, not as a quoted cell: a reader's comment="#" skips it (no commas in the figures,
            # and no line break from the candidate's name)
            name = re.sub(r"[\x00-\x1f\x7f]", " ", c.name)
            buffer.write(f"# {name}: the first {len(rows)} of {c.flips['count']} changed predictions "
                         f"(negative flips first); the counts are in report.json\r\n")
    return buffer.getvalue()
