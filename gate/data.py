"""Calibration data -> columns the models are fed from, once for every model.

One reader per format (READERS: npz, csv, parquet, arrow/feather, a folder of .npy files, a folder of
images with a labels CSV); each turns its file into whole columns (memory-mapped where the format
allows; images decoded batch by batch, gate/imagefolder.py) and nothing after load_dataset knows
which format they came from.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import os
import struct
import threading
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gate import imagefolder
from gate.checks import Where, check_cast, check_feature, check_group, check_labels
from gate.errors import GateInputError
from gate.files import MB, check_readable, sha256_in_background, sha256_of
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
    sample_ids: np.ndarray | None = None  # row -> the sample's index in the file (rows read in another order)
    noun: str | None = None  # how messages name a column ("column {!r}"); None: key, or column for a CSV
    missing: dict = field(default_factory=dict)  # text column -> (count, first row) of its missing (null) cells
    rows_path: Path | None = None  # the file row_lines count in, when it is not `path` (an image folder's CSV)
    default_features: tuple | None = None  # the keys that feed a model unless the policy maps others (None: all)
    _stacked: dict = field(default_factory=dict, repr=False)
    _checked: set = field(default_factory=set, repr=False)  # columns that passed the feature check

    @property
    def where(self) -> Where:
        return Where(path=self.rows_path or self.path, lines=self.row_lines, noun=self.noun, ids=self.sample_ids)

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
        lazy = [n for n in names if isinstance(self.columns[n], imagefolder.ImageColumn)]
        if lazy and len(names) > 1:
            others = ", ".join(n for n in names if n not in lazy)[:200]
            raise GateInputError(f"is mapped by {spec!r} to the input '{for_input}' of {model.name}, which joins "
                                 f"the images {lazy[0]!r} with other columns ({others})",
                                 path=self.path, fix=f"map the input to {lazy[0]!r} alone, and other inputs to the "
                                 "other columns")
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
                column, used_by = self.columns[name], f"the input '{for_input}' of {model.name}"
                if isinstance(column, imagefolder.ImageColumn):
                    column.check_cast(want, used_by=used_by)  # from the declared preprocessing, decoding nothing
                else:
                    check_cast(column, want, name, self.where, used_by=used_by)
                self._checked.add(key)

    def _check_feature(self, name: str, for_input: str, model: Path) -> None:
        if name not in self._checked:
            _check_missing(self, name, f"feeds the input '{for_input}' of {model.name}")
            if isinstance(self.columns[name], imagefolder.ImageColumn):
                self._checked.add(name)  # pixels scaled by finite numbers: finite by construction, never read whole
                return
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
        return [k for k in self.columns if k not in used and
                (self.default_features is None or k in self.default_features)]


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


def _load_csv(path: Path, text: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns (numbers where every cell of a column is one, else text; the columns named in `text` always
    text) and the line of every row."""
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
    columns = {name: np.array([r[i] for r in rows], dtype=str) if name in text else _as_numbers([r[i] for r in rows])
               for i, name in enumerate(header)}
    return columns, np.asarray(lines, dtype=np.int64)


# ---- Parquet and Arrow IPC (pyarrow, an optional extra) ------------------------------------

PYARROW_FIX = "install the extra that reads it: pip install 'gate[parquet]' (or save the data as .npz)"


def _pyarrow(path: Path, what: str):
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401  (list lengths, string widths)
    except ImportError:
        raise GateInputError(f"is {what}, which needs pyarrow, and pyarrow is not installed", path=path,
                             fix=PYARROW_FIX) from None
    return pyarrow


def _arrow_type_problem(pa, t) -> str | None:
    """Why a column of Arrow type `t` cannot become one array per sample (None: it can)."""
    types = pa.types
    if types.is_dictionary(t):
        return _arrow_type_problem(pa, t.value_type)
    if types.is_integer(t) or types.is_floating(t) or types.is_boolean(t):
        return None
    if _is_text(pa, t):
        return None
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        inner = t.value_type
        if types.is_integer(inner) or types.is_floating(inner) or types.is_boolean(inner):
            return None
        if types.is_list(inner) or types.is_large_list(inner) or types.is_fixed_size_list(inner):
            return _arrow_type_problem(pa, inner)
        return f"a list of {inner}, not of numbers"
    if types.is_struct(t):
        return f"a nested struct ({t})"
    return f"of the type {t}"


def _is_text(pa, t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or \
        getattr(pa.types, "is_string_view", lambda _: False)(t)


def _fixed_bytes(pa, t) -> int:
    """Bytes per sample of a column of numbers or fixed-size lists of numbers (0: not known before reading)."""
    types = pa.types
    if types.is_dictionary(t):
        return _fixed_bytes(pa, t.value_type)
    if types.is_fixed_size_list(t):
        return t.list_size * _fixed_bytes(pa, t.value_type)
    if types.is_integer(t) or types.is_floating(t):
        return max(1, t.bit_width // 8)
    return 1 if types.is_boolean(t) else 0


def _check_arrow_schema(pa, schema, path: Path) -> None:
    names = list(schema.names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GateInputError(f"has the column {dupes[0]!r} twice", path=path, fix="give columns unique names")
    for f in schema:
        problem = _arrow_type_problem(pa, f.type)
        if problem is not None:
            raise GateInputError(f"column {f.name!r} is {problem}, which the gate cannot read as one array per sample",
                                 path=path, fix=f"store {f.name!r} as numbers, text, a category or a fixed-length list "
                                 "of numbers (flatten nested columns into columns of their own), or drop it")


class _Budget:
    """Bytes of decoded columns, against the size limit: a small compressed file cannot unpack without bound."""

    def __init__(self, path: Path, max_mb: float):
        self.path, self.limit, self.used = path, max_mb * MB, 0

    def spend(self, nbytes: int, name: str) -> None:
        self.used += int(nbytes)
        if self.used > self.limit:
            raise GateInputError(f"decodes to over {self.limit / MB:g} MB (the size limit) by column {name!r}",
                                 path=self.path, fix="raise max_file_mb in the policy if this size is expected, or "
                                 "give fewer or smaller columns")


def _arrow_to_numpy(pa, arr, name: str, path: Path, row0: int, budget: _Budget) -> tuple[np.ndarray, int, int | None]:
    """One Arrow array (a row group or record batch of one column) as numpy: (values, missing text cells, the
    first one's row). Numbers without nulls stay views of Arrow's buffers (of the memory map, for IPC files)."""
    types = pa.types
    t = arr.type
    if types.is_dictionary(t) and _is_text(pa, t.value_type):  # a text category: its words, sized first
        words = arr.dictionary
        widest = (pa.compute.max(pa.compute.utf8_length(words)).as_py() or 0) if len(words) else 0
        budget.spend(len(arr) * max(1, widest) * 4, name)
        words = np.array(words.to_pylist() or [""], dtype=str)
        missing, first = int(arr.null_count), None
        if missing:
            first = row0 + int(np.argmax(np.asarray(arr.is_null())))
        return words[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)], missing, first
    if types.is_dictionary(t):  # a numeric category: its values
        arr = arr.dictionary_decode()
        t = arr.type
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        if arr.null_count:
            row = row0 + int(np.argmax(np.asarray(arr.is_null())))
            raise GateInputError(f"column {name!r} has {arr.null_count} missing (null) lists; the first at row {row}",
                                 path=path, fix=f"give every sample a value of {name!r}, or drop those samples")
        if types.is_fixed_size_list(t):
            width = t.list_size
        else:
            lengths = np.asarray(pa.compute.list_value_length(arr))
            width = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (lengths != width).any():
                row = row0 + int(np.argmax(lengths != width))
                raise GateInputError(f"column {name!r} holds lists of different lengths: {width} at row {row0} but "
                                     f"{int(lengths[row - row0])} at row {row}", path=path,
                                     fix=f"give every sample of {name!r} the same number of values")
        flat = arr.flatten()
        if flat.null_count and not types.is_list(flat.type) and not types.is_large_list(flat.type) and \
                not types.is_fixed_size_list(flat.type):
            raise GateInputError(f"column {name!r} holds {flat.null_count} missing (null) values inside its lists",
                                 path=path, fix=f"fill or drop the samples with missing values in {name!r}")
        values, _, _ = _arrow_to_numpy(pa, flat, name, path, row0, budget)
        return values.reshape((len(arr), width) + values.shape[1:]), 0, None
    if types.is_integer(t) or types.is_floating(t) or types.is_boolean(t):
        if arr.null_count and not types.is_floating(t):
            arr = arr.cast(pa.float64())  # nulls become NaN, which the input checker names by sample
        budget.spend(len(arr) * arr.type.bit_width // 8 if arr.type.bit_width >= 8 else len(arr), name)
        return arr.to_numpy(zero_copy_only=False), 0, None
    # text: numpy stores it at a fixed width, so the widest cell decides the size; checked before converting
    widest = pa.compute.max(pa.compute.utf8_length(arr)).as_py() or 0
    budget.spend(len(arr) * max(1, widest) * 4, name)
    missing, first = int(arr.null_count), None
    if missing:
        first = row0 + int(np.argmax(np.asarray(arr.is_null())))
        arr = arr.fill_null("")
    return np.array(arr.to_pylist(), dtype=str) if len(arr) else np.array([], dtype=str), missing, first


def _assemble(pieces: list[np.ndarray], name: str, path: Path) -> np.ndarray:
    """The pieces of one column (row groups, record batches) as one array; one piece is returned as it is."""
    if len(pieces) == 1:
        return pieces[0]
    inner = {p.shape[1:] for p in pieces}
    if len(inner) > 1:
        raise GateInputError(f"column {name!r} holds lists of different lengths in different row groups or batches "
                             f"({', '.join(str(s[0]) for s in sorted(inner) if s)})", path=path,
                             fix=f"give every sample of {name!r} the same number of values")
    if pieces[0].dtype.kind == "U":
        return np.concatenate(pieces)
    out = np.empty((sum(len(p) for p in pieces),) + pieces[0].shape[1:], dtype=np.result_type(*pieces))
    at = 0
    for p in pieces:
        out[at:at + len(p)] = p
        at += len(p)
    return out


@dataclass
class _Loaded:
    columns: dict[str, np.ndarray]
    lines: np.ndarray | None = None
    noun: str | None = None
    missing: dict = field(default_factory=dict)
    source: Path | None = None  # the file `lines` count in, when it is not data.path itself
    features: tuple | None = None  # the keys that feed a model unless the policy maps others (None: every key)


def _collect(pa, schema_names: list[str], batches, path: Path, budget: _Budget) -> _Loaded:
    """Columns from (name, row of the first sample, Arrow array) pieces, in file order."""
    pieces: dict[str, list] = {n: [] for n in schema_names}
    missing: dict = {}
    for name, row0, arr in batches:
        values, count, first = _arrow_to_numpy(pa, arr, name, path, row0, budget)
        pieces[name].append(values)
        if count:
            was = missing.get(name, (0, first))
            missing[name] = (was[0] + count, was[1])
    columns = {n: _assemble(p, n, path) for n, p in pieces.items() if p}
    return _Loaded(columns=columns, noun="column {!r}", missing=missing)


def _read_parquet(path: Path, max_mb: float) -> _Loaded:
    """Column by column, one row group at a time; the schema and the decoded size are checked first."""
    pa = _pyarrow(path, "a Parquet file")
    import pyarrow.parquet as pq

    budget = _Budget(path, max_mb)
    try:
        schema = pq.read_schema(path, memory_map=True)
        # text stays dictionary-encoded as the file stores it, so a repeated long word is sized before it is copied
        pf = pq.ParquetFile(path, memory_map=True, read_dictionary=[f.name for f in schema if _is_text(pa, f.type)])
        meta = pf.metadata
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise GateInputError(f"is not a readable Parquet file: {exc}", path=path,
                             fix="write it again completely (pandas.DataFrame.to_parquet or pyarrow.parquet."
                             "write_table); an interrupted copy leaves a file without its footer") from None
    index = set()
    pandas = schema.pandas_metadata or {}
    for item in pandas.get("index_columns", []):
        if isinstance(item, str):
            index.add(item)  # pandas' stored index: not calibration data
    names = [n for n in schema.names if n not in index]
    _check_arrow_schema(pa, pa.schema([schema.field(n) for n in names]), path)
    # before reading: numbers and fixed-size lists by their width, the rest by their size in the file's metadata
    # (text is also sized by its widest cell as each row group is read, before it becomes a numpy array)
    unpacked = sum(meta.num_rows * _fixed_bytes(pa, schema.field(n).type) for n in names)
    unpacked += sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
                    for c in range(meta.num_columns)
                    if meta.schema.column(c).path.split(".")[0] in names
                    and not _fixed_bytes(pa, schema.field(meta.schema.column(c).path.split(".")[0]).type))
    if unpacked > budget.limit:
        raise GateInputError(f"unpacks to {unpacked / MB:,.1f} MB, over the limit of {max_mb:g} MB", path=path,
                             fix="raise max_file_mb in the policy if this size is expected")

    def pieces():
        for name in names:
            row0 = 0
            for g in range(meta.num_row_groups):
                try:
                    column = pf.read_row_group(g, columns=[name], use_threads=False).column(0)
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise GateInputError(f"column {name!r} cannot be read (row group {g}): {exc}", path=path,
                                         fix="write the file again completely") from None
                for chunk in column.chunks:
                    yield name, row0, chunk
                    row0 += len(chunk)

    return _collect(pa, names, pieces(), path, budget)


def _read_arrow(path: Path, max_mb: float) -> _Loaded:
    """Arrow IPC (Feather v2): memory-mapped, one record batch at a time; uncompressed numeric columns of a
    one-batch file stay views of the map (read from disk as batches need them)."""
    pa = _pyarrow(path, "an Arrow IPC (Feather) file")
    budget = _Budget(path, max_mb)
    try:
        source = pa.memory_map(str(path), "r")
        try:
            reader = pa.ipc.open_file(source)
            count, get = reader.num_record_batches, reader.get_batch
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)  # the streaming format (.arrows, .ipc)
            batches = list(reader)
            count, get = len(batches), batches.__getitem__
        schema = reader.schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise GateInputError(f"is not a readable Arrow IPC / Feather v2 file: {exc}", path=path,
                             fix="write it with pyarrow.feather.write_feather (version 2) or pyarrow.ipc.new_file; "
                             "an interrupted copy leaves a file without its footer") from None
    _check_arrow_schema(pa, schema, path)

    def pieces():
        row0 = 0
        for i in range(count):
            try:
                batch = get(i)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise GateInputError(f"record batch {i} cannot be read: {exc}", path=path,
                                     fix="write the file again completely") from None
            for j, name in enumerate(schema.names):
                yield name, row0, batch.column(j)
            row0 += batch.num_rows

    return _collect(pa, list(schema.names), pieces(), path, budget)


# ---- a folder of .npy files --------------------------------------------------------------

def _npy_header(path: Path) -> tuple[tuple, bool, np.dtype, int]:
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except ValueError as exc:
            raise GateInputError(f"is not a readable .npy array: {exc}", path=path,
                                 fix="write it with numpy.save") from None
        return shape, fortran, dtype, handle.tell()


def _npy_files(folder: Path) -> list[Path]:
    """The .npy files of a folder; links that lead out of it are refused (a pull request could point one at any
    file of the runner)."""
    inside = folder.resolve()
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() != ".npy":
            continue
        if entry.is_symlink():
            target = Path(os.path.realpath(entry))
            if not target.is_relative_to(inside):
                raise GateInputError(f"holds {entry.name!r}, a symbolic link to {target}, outside the folder",
                                     path=folder, fix=f"copy the array into the folder instead of linking {entry.name!r}")
        files.append(entry)
    return files


def _read_npy_folder(folder: Path, max_mb: float) -> tuple[_Loaded, list[Path], int]:
    """One memory-mapped .npy file per key (data/pixels.npy -> key 'pixels'); never unpickled."""
    files = _npy_files(folder)
    if not files:
        raise GateInputError("is a folder with no .npy files", path=folder,
                             fix="save one array per key into it (numpy.save(folder / 'pixels.npy', x)), point "
                             "data.path at a .npz, .csv, .parquet or .feather file, or, for a folder of images, "
                             "describe them under data.images in the policy")
    total, columns = 0, {}
    for file in files:
        total += check_readable(file, "calibration data file", max_mb)
        if total > max_mb * MB:
            raise GateInputError(f"holds {total / MB:,.1f} MB of .npy files, over the limit of {max_mb:g} MB",
                                 path=folder, fix="raise max_file_mb in the policy if this size is expected")
        shape, fortran, dtype, offset = _npy_header(file)
        if dtype.hasobject:
            raise GateInputError("holds pickled Python objects, which the gate never loads", path=file,
                                 fix="save plain numeric or string arrays: np.save(path, x.astype(np.float32))")
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = file.stat().st_size
        if size < need:
            raise GateInputError(f"is truncated: its header declares {shape} {dtype} ({need:,} bytes), the file has "
                                 f"{size:,}", path=file, fix="write the array again completely (numpy.save)")
        key = file.stem
        if not shape or 0 in shape:
            columns[key] = np.load(file, allow_pickle=False)
        else:
            columns[key] = np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape,
                                     order="F" if fortran else "C")
    return _Loaded(columns=columns, noun="file '{}.npy'"), files, total


def _folder_sha256(files: list[Path], root: Path | None = None) -> str:
    """The folder's digest: sha256 of the lines 'name<TAB>sha256 of the file', in the order given (name order for
    a folder of .npy files); names relative to `root` when given (images in subfolders), else file names."""
    manifest = "".join(f"{f.relative_to(root).as_posix() if root else f.name}\t{sha256_of(f)}\n" for f in files)
    return hashlib.sha256(manifest.encode("utf-8")).hexdigest()


# ---- a folder of images with a labels CSV (gate/imagefolder.py) -----------------------------

def _read_image_folder(folder: Path, images: imagefolder.ImageSpec, max_mb: float
                       ) -> tuple[_Loaded, list[Path], int]:
    """The CSV's columns, its `file` column replaced by the column `image` that decodes images batch by batch.
    -> (columns, the files the digest covers: the CSV, then every image it lists in path order, their size)."""
    try:
        is_folder = folder.is_dir()
    except (OSError, ValueError):
        is_folder = False
    if not is_folder:
        raise GateInputError("is not a folder, but data.images in the policy describes a folder of images",
                             path=folder, fix="point data.path at the folder that holds the images and their "
                             "labels CSV, or drop data.images for a data file")
    labels_csv = imagefolder.labels_path(folder, images.labels)
    size = check_readable(labels_csv, "labels CSV of the image folder", max_mb)
    columns, lines = _load_csv(labels_csv, text=(imagefolder.FILE_COLUMN,))
    if imagefolder.FILE_COLUMN not in columns:
        raise GateInputError(f"has no column {imagefolder.FILE_COLUMN!r} (the image of each row); its columns are "
                             f"{', '.join(columns)[:300]}", path=labels_csv, line=1,
                             fix=f"name the column of image paths (relative to the folder) "
                             f"{imagefolder.FILE_COLUMN!r}")
    if imagefolder.IMAGE_KEY in columns:
        raise GateInputError(f"has a column {imagefolder.IMAGE_KEY!r}, the name the decoded images take",
                             path=labels_csv, line=1, fix=f"rename that column")
    files, total = imagefolder.image_files(folder, labels_csv, columns.pop(imagefolder.FILE_COLUMN), lines, max_mb)
    column = imagefolder.ImageColumn(files, lines, folder=folder, labels_csv=labels_csv, spec=images)
    hashed = [labels_csv, *sorted(set(files), key=lambda f: f.relative_to(folder).as_posix())]
    # the CSV's other columns describe the images (labels, groups, notes): a model is fed the images by default
    return (_Loaded(columns={imagefolder.IMAGE_KEY: column, **columns}, lines=lines, source=labels_csv,
                    features=(imagefolder.IMAGE_KEY,)), hashed, size + total)


# ---- the registry -----------------------------------------------------------------------

@dataclass(frozen=True)
class Reader:
    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, float], _Loaded]


def _read_npz(path: Path, max_mb: float) -> _Loaded:
    return _Loaded(columns=_load_npz(path))


def _read_csv(path: Path, max_mb: float) -> _Loaded:
    columns, lines = _load_csv(path)
    return _Loaded(columns=columns, lines=lines)


READERS: tuple[Reader, ...] = (
    Reader("npz", (".npz",), _read_npz),
    Reader("csv", (".csv",), _read_csv),
    Reader("parquet", (".parquet", ".pq"), _read_parquet),
    Reader("arrow", (".arrow", ".feather", ".ipc", ".arrows"), _read_arrow),
)
FOLDER = "a folder of .npy files"


def reader_for(path: Path) -> Reader | None:
    suffix = path.suffix.lower()
    return next((r for r in READERS if suffix in r.suffixes), None)


def _check_missing(dataset_or_where, name: str, used: str) -> None:
    missing = dataset_or_where.missing.get(name)
    if missing:
        count, first = missing
        where = dataset_or_where.where
        raise GateInputError(f"{where.column(name)} {used}, but has {count} missing (null) value{'s' * (count != 1)}; "
                             f"the first at {where.sample(first)}", path=where.path,
                             fix=f"fill them (e.g. with 'unknown' for a subgroup) or drop those samples")


def load_dataset(spec: DataSpec, *, max_mb: float) -> Dataset:
    path = spec.path
    reader = reader_for(path)
    files: list[Path] | None = None
    root: Path | None = None  # names in the folder digest are relative to it (images in subfolders)
    try:
        folder = reader is None and path.is_dir()
    except (OSError, ValueError):
        folder = False
    if spec.images is not None:
        loaded, files, size = _read_image_folder(path, spec.images, max_mb)
        root = path
    elif folder:
        loaded, files, size = _read_npy_folder(path, max_mb)
    else:
        size = check_readable(path, "calibration data", max_mb)
        if reader is None:
            raise GateInputError(f"has the unsupported format {path.suffix.lower() or '(no extension)'}", path=path,
                                 fix="give a .npz, .csv, .parquet or .feather/.arrow file, or a folder of .npy files")
        loaded = reader.read(path, max_mb)
    columns, lines = loaded.columns, loaded.lines
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
        raise GateInputError(f"has no labels key {labels!r}", path=loaded.source or path,
                             fix=f"set data.labels to one of: {', '.join(columns)[:300]}")
    where = Where(path=loaded.source or path, lines=lines, noun=loaded.noun)
    if labels is not None:
        _check_missing(_Checked(where, loaded.missing), labels, "holds the labels")
        columns[labels] = _one_per_sample(columns[labels])
        check_labels(columns[labels], labels, where)
    for group in spec.groups:
        for key in (group if isinstance(group, tuple) else (group,)):
            if key not in columns:
                raise GateInputError(f"has no group column {key!r}", path=loaded.source or path,
                                     fix=f"set data.groups to columns of: {', '.join(columns)[:300]}")
            _check_missing(_Checked(where, loaded.missing), key, "is a group column")
            columns[key] = _one_per_sample(columns[key])
            check_group(columns[key], key, where)
    # hashing re-reads the whole file: overlap it with imports and inference (hashlib releases the GIL)
    if files is None:
        digest = sha256_in_background(path)
    else:
        digest = Future()

        def hash_in_background() -> None:
            try:
                digest.set_result(_folder_sha256(files, root))
            except BaseException as exc:  # surfaced where the hash is read
                digest.set_exception(exc)

        threading.Thread(target=hash_in_background, name="gate-data-sha256", daemon=True).start()
    return Dataset(path=path, digest=digest, size_bytes=size, columns=columns,
                   labels_key=labels, group_keys=tuple(spec.groups), row_lines=lines, noun=loaded.noun,
                   missing=loaded.missing, rows_path=loaded.source, default_features=loaded.features)


@dataclass(frozen=True)
class _Checked:
    where: Where
    missing: dict


def _one_per_sample(array: np.ndarray) -> np.ndarray:
    """An (n, 1) column as (n,) (a view): labels and groups saved as column vectors."""
    return array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array
