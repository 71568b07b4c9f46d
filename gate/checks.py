"""One input checker: every data column that enters the gate passes here before a model sees it.

Model inputs (finite values; numbers, not text; values that survive the cast to the model's
type), labels (finite, one per sample) and group columns (one value per sample, no NaN). Each
message names the file, the data key or CSV column, the first bad sample (and its CSV line) and
the value, and says how to fix it. Large arrays are read in chunks, so a memory-mapped column is
never copied whole.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gate.errors import GateInputError
from gate.pages import drop

CHUNK_ELEMENTS = 1 << 20  # values per pass: a 4 MB mask at most, whatever the column's size


@dataclass(frozen=True, kw_only=True)
class Where:
    """The file a column comes from, and the CSV line of every row (None for .npz). `noun` says how the
    format names a column (a format string: "column {!r}" for Parquet/Arrow, "file '{}.npy'" for a folder)."""
    path: Path
    lines: np.ndarray | None = None
    noun: str | None = None
    ids: np.ndarray | None = None  # row -> the sample's index in the file, when rows are read in another order

    def column(self, name: str) -> str:
        if self.noun is not None:
            return self.noun.format(name)
        return f"column {name!r}" if self.lines is not None else f"key {name!r}"

    def sample(self, row: int) -> str:
        index = int(self.ids[row]) if self.ids is not None else row
        if self.lines is not None:
            return f"line {int(self.lines[row])} (sample {index})"
        return f"sample {index} (row index, from 0)"

    def line(self, row: int | None) -> int | None:
        return int(self.lines[row]) if self.lines is not None and row is not None else None


def _row_chunks(array: np.ndarray):
    per_row = int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim > 1 else 1
    rows = max(1, CHUNK_ELEMENTS // max(1, per_row))
    for lo in range(0, len(array), rows):
        chunk = array[lo:lo + rows]
        yield lo, chunk
        drop(chunk)  # checked: a memory-mapped column's pages go back, it is never held whole


def nonfinite(array: np.ndarray) -> tuple[int, tuple, object] | None:
    """(count, index of the first, its value) of the NaN and Inf values of a floating or complex
    array, read in chunks; None when every value is finite (or the array cannot hold NaN)."""
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)):
        return None
    count, first, value = 0, None, None
    for lo, chunk in _row_chunks(array):
        finite = np.isfinite(chunk)
        if finite.all():
            continue
        bad = ~finite
        count += int(np.count_nonzero(bad))
        if first is None:
            at = np.unravel_index(int(np.argmax(bad)), chunk.shape)
            first = (lo + int(at[0]),) + tuple(int(i) for i in at[1:])
            value = chunk[at].item()
    return (count, first, value) if count else None


def first_not_number(values: np.ndarray) -> tuple[int, str] | None:
    """(row, cell) of the first text value that is not a number, or None."""
    rows = values.reshape(len(values), -1)
    for row in range(len(rows)):
        for cell in rows[row]:
            try:
                float(cell)
            except (TypeError, ValueError):
                return row, str(cell)
    return None


def _value_text(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_feature(array: np.ndarray, name: str, where: Where, *, used_by: str) -> None:
    """A column that feeds a model input: numbers, all finite."""
    if array.dtype.kind in "US":
        found = first_not_number(array)
        if found is not None:
            row, cell = found
            what = "is empty" if not cell.strip() else f"holds {cell[:60]!r}"
            raise GateInputError(
                f"{where.column(name)} feeds {used_by}, but {where.sample(row)} {what}, which is not a number "
                f"(so the whole column was read as text)", path=where.path, line=where.line(row),
                fix="make every cell of a model input a number (fill or drop that sample), or map the input to "
                "another column under data: inputs: in the policy")
        return
    if array.dtype.kind == "V":
        raise GateInputError(f"{where.column(name)} feeds {used_by}, but holds records ({array.dtype}), not numbers",
                             path=where.path, fix=f"store {name!r} as a plain numeric array")
    found = nonfinite(array)
    if found is not None:
        count, first, value = found
        inner = f", position {first[1:]} within the sample" if np.prod(array.shape[1:], dtype=np.int64) > 1 else ""
        raise GateInputError(
            f"{where.column(name)} feeds {used_by}, but holds {count} non-finite value{'s' * (count != 1)} "
            f"(NaN or Inf); the first is {_value_text(value)} at {where.sample(first[0])}{inner}",
            path=where.path, line=where.line(first[0]),
            fix="drop or impute those samples: a model fed NaN or Inf gives meaningless outputs, and the gate "
            "would compare them as if they were predictions")


def check_cast(array: np.ndarray, want, name: str, where: Where, *, used_by: str) -> None:
    """Values that a narrowing cast to the model's input type would change silently: integers out of
    range (int64 -> int32 wraps around) and floats beyond the type's range (-> fp16 turns into Inf)."""
    want = np.dtype(want)
    have = array.dtype
    if have == want or np.can_cast(have, want, casting="safe") or have == np.bool_:
        return
    if want.kind in "iu" and have.kind in "iu":
        info = np.iinfo(want)
    elif want.kind == "f" and have.kind in "fiu":
        info = np.finfo(want)
    else:
        return
    lo, hi = info.min, info.max
    for start, chunk in _row_chunks(array):
        if chunk.size == 0:
            continue
        finite = chunk if have.kind in "iu" else chunk[np.isfinite(chunk)]
        if finite.size == 0 or (finite.min() >= lo and finite.max() <= hi):
            continue
        bad = (chunk < lo) | (chunk > hi)
        at = np.unravel_index(int(np.argmax(bad)), chunk.shape)
        row = start + int(at[0])
        raise GateInputError(
            f"{where.column(name)} feeds {used_by}, which takes {want.name}, but {where.sample(row)} holds "
            f"{_value_text(chunk[at].item())}, outside the range of {want.name} ({lo:g} to {hi:g}); the cast "
            "would change it silently", path=where.path, line=where.line(row),
            fix=f"check the data of {name!r} (wrong column?), or export the model with a wider input type")


def check_labels(array: np.ndarray, name: str, where: Where) -> None:
    """Labels and regression targets: finite numbers (text class names are fine), one row per sample."""
    if array.ndim > 2:
        raise GateInputError(f"has labels of shape {tuple(array.shape)} in {where.column(name)}; one label (or one "
                             "row of regression targets) per sample is expected", path=where.path,
                             fix=f"store {name!r} as a 1-D array of class indices or targets")
    if array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind in "biuf" and len(array) and \
            bool(np.all((array == 0) | (array == 1))) and bool(np.all(array.sum(axis=1) == 1)):
        raise GateInputError(f"has one-hot labels in {where.column(name)} (shape {tuple(array.shape)}); the gate "
                             "takes one class index per sample", path=where.path,
                             fix=f"store the class indices: np.argmax({name}, axis=1)")
    found = nonfinite(array)
    if found is not None:
        count, first, value = found
        raise GateInputError(
            f"has {count} missing or infinite label{'s' * (count != 1)} (NaN or Inf) in {where.column(name)}; "
            f"the first is {_value_text(value)} at {where.sample(first[0])}", path=where.path,
            line=where.line(first[0]),
            fix="every calibration sample needs a true label (or regression target): drop the unlabeled samples")


def check_group(array: np.ndarray, name: str, where: Where) -> None:
    """A subgroup column: one value per sample, no NaN (it would become a subgroup called 'nan')."""
    if array.ndim != 1:
        raise GateInputError(f"has the group {where.column(name)} of shape {tuple(array.shape)}; a group column "
                             "holds one value per sample", path=where.path,
                             fix=f"store {name!r} as a 1-D array (one subgroup name or code per sample)")
    found = nonfinite(array)
    if found is not None:
        count, first, value = found
        raise GateInputError(
            f"has {count} missing value{'s' * (count != 1)} (NaN or Inf) in the group {where.column(name)}; "
            f"the first is {_value_text(value)} at {where.sample(first[0])}", path=where.path,
            line=where.line(first[0]),
            fix=f"fill them with a named subgroup (e.g. 'unknown'), so missing values are judged as a group "
            f"on purpose, or drop those samples")


def check_input_names(mapping: dict, names: list[str], model: Path) -> None:
    """Every key of data.inputs names an input of the model (a typo is never ignored silently)."""
    unknown = [key for key in mapping if key not in names]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(str(key), names, n=1)
    listed = ", ".join(repr(n) for n in names) if names else "(none)"
    text = (f"has no input named {key!r}, which data.inputs in the policy maps to {mapping[key]!r}; "
            f"its inputs are: {listed}")
    if close:
        text += f" (did you mean {close[0]!r}?)"
    example = close[0] if close else (names[0] if names else "INPUT")
    raise GateInputError(text, path=model, fix=f"under data: inputs: in the policy, key each mapping by an input "
                         f"name of the model, e.g. {{{example}: {mapping[key]}}}")
