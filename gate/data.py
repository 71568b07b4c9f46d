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
    _stacked: dict = field(default_factory=dict, repr=False)

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
        """A data key, a column, a list of columns or a glob of columns, as one array."""
        if isinstance(spec, str) and spec in self.columns:
            return self.columns[spec]
        names = self._expand(spec)
        if not names:
            raise GateInputError(f"has no key or column {spec!r} for the input '{for_input}' of {model.name}",
                                 path=self.path, fix=f"map the input to one of: {', '.join(self.columns)[:300]}")
        key = tuple(names)
        if key not in self._stacked:
            # one stacked copy per mapping, shared by all models
            self._stacked[key] = np.column_stack([self.columns[n] for n in names])
        return self._stacked[key]

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


def _load_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise GateInputError("is empty; a header row is expected", path=path, line=1,
                                     fix="first row: column names")
            rows = []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise GateInputError(f"has {len(row)} fields where the header has {len(header)}", path=path,
                                         line=reader.line_num, fix="every row needs one value per header column")
                rows.append(row)
    except UnicodeDecodeError:
        raise GateInputError("is not UTF-8 text", path=path, fix="save the CSV as UTF-8") from None
    if not rows:
        raise GateInputError("has a header but no rows", path=path, line=2, fix="add calibration samples")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise GateInputError(f"has the column {dupes[0]!r} twice", path=path, line=1, fix="give columns unique names")
    return {name: _as_numbers([r[i] for r in rows]) for i, name in enumerate(header)}


def load_dataset(spec: DataSpec, *, max_mb: float) -> Dataset:
    path = spec.path
    size = check_readable(path, "calibration data", max_mb)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        columns = _load_npz(path)
    elif suffix == ".csv":
        columns = _load_csv(path)
    else:
        raise GateInputError(f"has the unsupported format {suffix or '(no extension)'}", path=path,
                             fix="give a .npz or .csv file")
    if not columns:
        raise GateInputError("holds no arrays", path=path, fix="store the model inputs and labels in it")
    lengths = {k: len(v) if v.ndim else 0 for k, v in columns.items()}
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
    for group in spec.groups:
        for key in (group if isinstance(group, tuple) else (group,)):
            if key not in columns:
                raise GateInputError(f"has no group column {key!r}", path=path,
                                     fix=f"set data.groups to columns of: {', '.join(columns)[:300]}")
    # hashing re-reads the whole file: overlap it with inference (hashlib releases the GIL)
    digest: Future = Future()

    def hash_in_background() -> None:
        try:
            digest.set_result(sha256_of(path))
        except BaseException as exc:  # surfaced where the hash is read
            digest.set_exception(exc)

    threading.Thread(target=hash_in_background, name="gate-data-sha256", daemon=True).start()
    return Dataset(path=path, digest=digest, size_bytes=size, columns=columns,
                   labels_key=labels, group_keys=tuple(spec.groups))
