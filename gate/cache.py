"""A cache of the base model's outputs on the calibration data (`--cache DIR`).

The base rarely changes between pull requests, yet every run paid for a full pass of it. Its raw outputs
are kept in DIR under a key made of everything that decides them: the sha256 of every file of the base
model and of the data, the input mapping, the output read, the batch size (some graphs give other outputs
at other batch sizes), the backend's version and the gate's. A later run with the same key reads them
instead of running the base.

A cache entry is a file of outputs (.npz, plain arrays, read without pickle) and a record (.json) holding
the key and the outputs' sha256. Nothing is trusted unread: an entry whose record does not parse, whose key
differs or whose outputs do not match their sha256 is recomputed (and rewritten), with a note saying why.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gate import __version__
from gate.files import save_npz, sha256_of

FORMAT = 2  # 2: the record holds the outputs' shape and dtype, checked before they are read
MAX_RECORD_BYTES = 1_000_000
_DTYPES = ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "<u2", "<u4", "<u8", "|b1")


@dataclass(frozen=True)
class CacheState:
    """What the cache did in this run, for provenance and the report."""
    status: str  # "hit" | "stored" | "refreshed" (an entry was there but not usable) | "off"
    key: str | None = None  # the entry's digest
    note: str | None = None  # why an entry was not used

    def to_dict(self) -> dict:
        return {"status": self.status, "key": self.key, "note": self.note}


def base_key(*, model_files: list[str], data_sha256: str, n: int, inputs: dict, output: str | None,
             batch: int, backend: dict, preprocessing: str | None = None) -> dict:
    """Everything the base's raw outputs depend on. model_files: every file of the model (external data too);
    preprocessing: how a folder of images becomes arrays (the files' sha256 does not change with it)."""
    return {"format": FORMAT, "gate": __version__, "model": [sha256_of(Path(p)) for p in model_files],
            "data": data_sha256, "n": n, "inputs": {str(k): str(v) for k, v in sorted(inputs.items())},
            "output": output, "batch": batch, "backend": backend, "preprocessing": preprocessing}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _paths(folder: Path, digest: str) -> tuple[Path, Path]:
    stem = f"base-{digest[:32]}"
    return folder / f"{stem}.json", folder / f"{stem}.npz"


def load(folder: Path, key: dict) -> tuple[np.ndarray | None, tuple[str, ...], CacheState]:
    """(raw outputs, the base runner's notes, state); outputs None when there is no usable entry."""
    digest = _digest(key)
    record_path, outputs_path = _paths(folder, digest)
    if not os.path.lexists(record_path):
        return None, (), CacheState("stored", digest)
    try:
        for path in (record_path, outputs_path):  # a FIFO would block the read, a link read elsewhere
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise ValueError(f"{path.name} is not a plain file")
        if record_path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError("its record is too large")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("key") != key:
            raise ValueError("its record was written for other inputs")
        shape, dtype = record.get("shape"), record.get("dtype")
        if not (isinstance(shape, list) and 1 <= len(shape) <= 2 and shape[0] == key["n"] and
                all(isinstance(d, int) and 0 < d <= 1_000_000 for d in shape) and dtype in _DTYPES):
            raise ValueError("its record does not describe one row of outputs per sample")
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if outputs_path.stat().st_size > expected + 4096:  # checked before a byte is decompressed
            raise ValueError("its outputs file is larger than its record says")
        if sha256_of(outputs_path) != record.get("outputs_sha256"):
            raise ValueError("its outputs do not match the sha256 in its record")
        with np.load(outputs_path, allow_pickle=False) as npz:
            raw = npz["raw"]
        if list(raw.shape) != shape or raw.dtype.str != np.dtype(dtype).str:
            raise ValueError(f"it holds outputs of shape {raw.shape}, not the {tuple(shape)} its record says")
        notes = record.get("notes") or []
        if not all(isinstance(n, str) for n in notes):
            raise ValueError("its notes are not text")
    except Exception as exc:  # any damage at all: recompute, never a traceback or a trusted guess
        why = str(exc) if isinstance(exc, ValueError) else f"it cannot be read ({type(exc).__name__})"
        return None, (), CacheState("refreshed", digest, f"the cached base outputs in {folder} were not used: "
                                                         f"{why}; the base was run again and the entry rewritten")
    return raw, tuple(notes), CacheState("hit", digest)


def store(folder: Path, key: dict, raw: np.ndarray, notes: tuple[str, ...]) -> None:
    """Write the outputs, then the record that vouches for them (a reader never sees a record without its
    outputs); each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    record_path, outputs_path = _paths(folder, _digest(key))
    save_npz(outputs_path, {"raw": raw})
    from gate.report import atomic_write

    atomic_write(record_path, json.dumps({"key": key, "outputs_sha256": sha256_of(outputs_path),
                                          "shape": list(raw.shape), "dtype": raw.dtype.str,
                                          "notes": list(notes)}, indent=2) + "\n")


class CachedRunner:
    """The base runner with its outputs served from the cache: everything but `run` is the real runner's
    (perturbed runs, timing, the layer diagnosis and thumbnails still use the model)."""

    def __init__(self, runner, raw: np.ndarray, notes: tuple[str, ...]) -> None:
        self._runner, self._raw, self.notes = runner, raw, notes

    def run(self, start: int, stop: int) -> np.ndarray:
        return self._raw[start:stop]

    def __getattr__(self, name):
        return getattr(self._runner, name)


class RecordingRunner:
    """The base runner, keeping what it returns so the cache can be filled after the pass."""

    def __init__(self, runner) -> None:
        self._runner, self.parts = runner, []

    def run(self, start: int, stop: int) -> np.ndarray:
        out = self._runner.run(start, stop)
        self.parts.append(out)
        return out

    def outputs(self) -> np.ndarray:
        return np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]

    def __getattr__(self, name):
        return getattr(self._runner, name)
