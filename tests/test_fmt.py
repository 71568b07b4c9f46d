"""Formatting filters on edge values: a failing number never prints as a passing one."""

import pytest

from gate import fmt
from gate.report.render import md


def test_value_just_over_the_bound_gets_the_digits_that_show_it():
    assert fmt.number(0.010004, 0.01) != fmt.number(0.01)
    assert float(fmt.number(0.010004, 0.01)) > 0.01
    assert fmt.number(0.0099996, 0.01) != "0.0100"


def test_plain_numbers():
    assert fmt.number(0.12345) == "0.1235"
    assert fmt.number(-0.0) == "0.0000"
    assert fmt.number(None) == "n/a" and fmt.number(float("nan")) == "n/a"
    assert fmt.number(1234567.0, metric="parameters") == "1,234,567"
    # every whole-number metric of the registry, not only parameters; a fraction of one keeps its digits
    assert fmt.number(17226.0, metric="nonzero_parameters") == "17,226"
    assert fmt.number(1632.0, metric="bytes_fp32") == "1,632"
    assert fmt.number(98304.0, metric="macs") == "98,304"
    assert fmt.number(0.05, metric="parameters") == "0.0500"
    assert fmt.number(17226.5, metric="accuracy") == "17,226.5"
    assert fmt.number(float("inf")) == "inf"


@pytest.mark.parametrize("x,bad", [(0.99996, "100.0%"), (0.99999999, "100.0%"), (0.00004, "0.0%")])
def test_pct_never_rounds_onto_100_or_0(x, bad):
    assert fmt.pct(x) != bad
    assert fmt.pct(x).endswith("%")


def test_pct_exact_ends():
    assert fmt.pct(1.0) == "100.0%" and fmt.pct(0.0) == "0.0%" and fmt.pct(0.5) == "50.0%"


def test_signed():
    assert fmt.signed(0.01) == "+0.0100" and fmt.signed(-0.01) == "-0.0100" and fmt.signed(0.0) == "+0.0000"


@pytest.mark.parametrize("name", ["| <img src=x onerror=alert(1)> |", "a|b\nc", "**bold** [x](javascript:1)",
                                  "`code`", "ünïcødé ✓ 名前"])
def test_markdown_cells_cannot_break_tables_or_inject_markup(name):
    cell = md(name)
    assert "<" not in cell and ">" not in cell and "\n" not in cell
    # every pipe is escaped, so a table row keeps its column count
    assert cell.count("|") == cell.count("\\|")
    assert "ü" in md("ünïcødé") and "名前" in md("名前")
