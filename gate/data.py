"""Calibration data -> columns the models are fed from, once for every model."""

from __future__ import annotations

import csv
import fnmatch
import struct
import threading
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gate.checks import Where, check_cast, check_feature, check_group, check_labels
from gate.errors import GateInputError
from gate.files import check_readable, sha256_of
from gate.policy import DataSpec

LABEL_GUESSES = ("label", "labels", "y", "target")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    path: Path
    digest: Future  # sha256, computed in a thread while the models run
    size_bytes: int
    columns: dict[str, np.ndarray]  # whole columns, shared by every model (sliced, never copied per model)
    labels_key: str | None
    group_keys: tuple = ()
    row_lines: np.ndarray | None = None  # CSV: the line of every sample, for messages
    _stacked: dict = field(default_factory=dict, repr=False)
    _checked: set = field(default_factory=set, repr=False)  # columns that passed the feature check

    @property
    def where(self) -> Where:
        return Where(path=self.path, lines=self.row_lines)

    @property
    def sha256(self) -> str:
        return self.digest.result()

    @property
    def n(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def labels(self) -> np.ndarray | None:
        return self.columns[self.labels_key] if self.labels_key else None

    def column(self, spec: str | list, *, for_input: str, model: Path) -> np.ndarray:
        """A data key, a column, a list of columns or a glob of columns, as one array.

        Every column that feeds a model passes the input checker once (not once per model)."""
        if isinstance(spec, str) and spec in self.columns:
            self._check_feature(spec, for_input, model)
            return self.columns[spec]
        names = self._expand(spec)
        if not names:
            raise GateInputError(f"has no key or column {spec!r} for the input '{for_input}' of {model.name}",
                                 path=self.path, fix=f"map the input to one of: {', '.join(self.columns)[:300]}")
        for name in names:
            self._check_feature(name, for_input, model)
        key = tuple(names)
        if key not in self._stacked:
            # one stacked copy per mapping, shared by all models
            self._stacked[key] = np.column_stack([self.columns[n] for n in names])
        return self._stacked[key]

    def check_cast(self, spec: str | list, want, *, for_input: str, model: Path) -> None:
        """The columns of `spec` hold values that a narrowing cast to `want` keeps (checked once per type)."""
        names = [spec] if isinstance(spec, str) and spec in self.columns else self._expand(spec)
        for name in names:
            key = (name, np.dtype(want).str)
            if key not in self._checked:
                check_cast(self.columns[name], want, name, self.where,
                           used_by=f"the input '{for_input}' of {model.name}")
                self._checked.add(key)

    def _check_feature(self, name: str, for_input: str, model: Path) -> None:
        if name not in self._checked:
            check_feature(self.columns[name], name, self.where, used_by=f"the input '{for_input}' of {model.name}")
            self._checked.add(name)

    def _expand(self, spec: str | list) -> list[str]:
        patterns = [spec] if isinstance(spec, str) else list(spec)
        names: list[str] = []
        for pattern in patterns:
            hits = [c for c in self.columns if fnmatch.fnmatchcase(c, pattern)]
            if not hits:
                return []
            names.extend(h for h in hits if h not in names)
        return names

    def feature_keys(self) -> list[str]:
        used = {self.labels_key, *[g for g in self.group_keys if isinstance(g, str)]}
        return [k for k in self.columns if k not in used]


def _stored_member(path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray | None:
    """A memory map of an uncompressed .npy member: samples are read from disk as batches need them.

    None when the member is compressed or not a plain array (then it is read the ordinary way).
    """
    info = archive.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            return None
        offset = handle.tell()
    if dtype.hasobject or not shape or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # numpy would call any non-zip file a pickle
        raise GateInputError("is not an .npz archive (a .npz is a zip file of .npy arrays)", path=path,
                             fix="write it with numpy.savez or numpy.savez_compressed")
    try:
        with np.load(path, allow_pickle=False) as archive, zipfile.ZipFile(path) as zipped:
            columns = {}
            for key in archive.files:
                mapped = _stored_member(path, zipped, key)
                columns[key] = mapped if mapped is not None else archive[key]
            return columns
    except ValueError as exc:
        if "pickle" in str(exc):
            raise GateInputError("holds pickled Python objects, which the gate never loads", path=path,
                                 fix="save plain numeric or string arrays: np.savez(path, x=x.astype(np.float32), ...)") from None
        raise GateInputError(f"is not a readable .npz archive: {exc}", path=path,
                             fix="write it with numpy.savez or numpy.savez_compressed") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise GateInputError(f"is not a readable .npz archive: {exc}", path=path,
                             fix="write it with numpy.savez or numpy.savez_compressed") from None


def _as_numbers(values: list[str]) -> np.ndarray:
    try:
        numbers = np.array(values, dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=str)
    if np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)) and \
            all("." not in v and "e" not in v.lower() for v in values[:1000]):
        return numbers.astype(np.int64)
    return numbers


def _load_csv(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns (numbers where every cell of a column is one, else text) and the line of every row."""
    try:
        # utf-8-sig: a byte-order mark (as Excel writes) is dropped, not glued to the first column name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise GateInputError("is empty; a header row is expected", path=path, line=1,
                                     fix="first row: column names")
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise GateInputError(f"has {len(row)} fields where the header has {len(header)}", path=path,
                                         line=reader.line_num, fix="every row needs one value per header column")
                if "\0" in "".join(row):  # numpy's text arrays would drop it silently and misreport the cell
                    col = next(header[i] for i, cell in enumerate(row) if "\0" in cell)
                    raise GateInputError(f"column {col!r} holds a NUL byte at line {reader.line_num}", path=path,
                                         line=reader.line_num, fix="write plain text numbers; a NUL byte is "
                                         "never part of a number")
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise GateInputError("is not UTF-8 text", path=path, fix="save the CSV as UTF-8") from None
    except csv.Error as exc:  # a field over the csv module's limit, a NUL byte, a broken quote
        raise GateInputError(f"is not a readable CSV: {exc}", path=path, line=reader.line_num or None,
                             fix="write plain comma-separated numbers and names, one sample per line") from None
    if not rows:
        raise GateInputError("has a header but no rows", path=path, line=2, fix="add calibration samples")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise GateInputError(f"has the column {dupes[0]!r} twice", path=path, line=1, fix="give columns unique names")
    columns = {name: _as_numbers([r[i] for r in rows]) for i, name in enumerate(header)}
    return columns, np.asarray(lines, dtype=np.int64)


def load_dataset(spec: DataSpec, *, max_mb: float) -> Dataset:
    path = spec.path
    size = check_readable(path, "calibration data", max_mb)
    suffix = path.suffix.lower()
    lines = None
    if suffix == ".npz":
        columns = _load_npz(path)
    elif suffix == ".csv":
        columns, lines = _load_csv(path)
    else:
        raise GateInputError(f"has the unsupported format {suffix or '(no extension)'}", path=path,
                             fix="give a .npz or .csv file")
    if not columns:
        raise GateInputError("holds no arrays", path=path, fix="store the model inputs and labels in it")
    scalars = [k for k, v in columns.items() if v.ndim == 0]
    if scalars:
        raise GateInputError(f"holds a single value (a 0-d array) under the key {scalars[0]!r}, not one value per "
                             "sample", path=path, fix=f"store {scalars[0]!r} with one row per sample, or leave it out "
                             "of the calibration data")
    lengths = {k: len(v) for k, v in columns.items()}
    n = max(lengths.values())
    short = [k for k, length in lengths.items() if length != n]
    if short:
        raise GateInputError(f"has arrays of different lengths: {', '.join(f'{k}={lengths[k]}' for k in short[:5])} "
                             f"but others have {n}", path=path, fix="every key must hold one row per sample")
    if n == 0:
        raise GateInputError("has no samples", path=path, fix="add calibration samples")
    labels = spec.labels
    if labels is None:
        labels = next((g for g in LABEL_GUESSES if g in columns), None)
    elif labels not in columns:
        raise GateInputError(f"has no labels key {labels!r}", path=path,
                             fix=f"set data.labels to one of: {', '.join(columns)[:300]}")
    where = Where(path=path, lines=lines)
    if labels is not None:
        columns[labels] = _one_per_sample(columns[labels])
        check_labels(columns[labels], labels, where)
    for group in spec.groups:
        for key in (group if isinstance(group, tuple) else (group,)):
            if key not in columns:
                raise GateInputError(f"has no group column {key!r}", path=path,
                                     fix=f"set data.groups to columns of: {', '.join(columns)[:300]}")
            columns[key] = _one_per_sample(columns[key])
            check_group(columns[key], key, where)
    # hashing re-reads the whole file: overlap it with inference (hashlib releases the GIL)
    digest: Future = Future()

    def hash_in_background() -> None:
        try:
            digest.set_result(sha256_of(path))
        except BaseException as exc:  # surfaced where the hash is read
            digest.set_exception(exc)

    threading.Thread(target=hash_in_background, name="gate-data-sha256", daemon=True).start()
    return Dataset(path=path, digest=digest, size_bytes=size, columns=columns,
                   labels_key=labels, group_keys=tuple(spec.groups), row_lines=lines)


def _one_per_sample(array: np.ndarray) -> np.ndarray:
    """An (n, 1) column as (n,) (a view): labels and groups saved as column vectors."""
    return array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array
