"""Blessed baselines: the releases a candidate is judged against besides its base.

`gate bless` appends a record to BASELINE_DIR/blessings.json and stores the blessed model's per-sample
predictions and scores on the calibration data next to it (an .npz of plain arrays, read without pickle).
A rule with `vs: baseline` compares a candidate with the last blessed release, `vs: first_baseline` with
the first one (the drift over every release since), paired on those stored outputs: the old model file is
not needed.

Nothing here is trusted unread: the record is checked field by field and the outputs file against the
sha256 the record holds. A damaged or mismatched baseline makes the rules against it errors with the
reason, never a pass; the other rules are judged as usual.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from gate.files import save_npz, sha256_of
from gate.measure.registry import VECTORS as PER_SAMPLE
from gate.measurements import ReleaseComparison
from gate.predictions import Predictions

FORMAT = 1
RECORD = "blessings.json"
MAX_RECORD_BYTES = 16 * 1024 * 1024
# the per-sample vectors of gate.predictions.Predictions a blessed release keeps (probs only when measured)
VECTORS = tuple(PER_SAMPLE)
_SHA = re.compile(r"^[0-9a-f]{64}$")


class BaselineProblem(Exception):
    """Why a baseline cannot be used: the rules against it say so."""


@dataclass(frozen=True, kw_only=True)
class Blessing:
    """One blessed release, as recorded by `gate bless`."""
    index: int  # 1 for the first release blessed in this folder
    name: str
    model_sha256: str
    model_path: str
    data_sha256: str
    n_samples: int
    task: str
    kind: str  # how the model's outputs were read (Predictions.kind)
    n_classes: int | None
    policy_sha256: str
    gate_version: str
    blessed_at: str
    report_sha256: str
    verdict: str  # the candidate's verdict in the report it was blessed from
    forced: bool  # blessed although it did not pass (`--force`), with a reason
    reason: str | None
    metrics: dict  # the candidate's measured values in that report, for history and reading
    outputs: str  # the .npz file of per-sample outputs, in the baseline folder
    outputs_sha256: str

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def summary(self) -> dict:
        """What a report shows about the release a candidate was compared with."""
        return {k: getattr(self, k) for k in ("index", "name", "model_sha256", "blessed_at", "forced", "reason",
                                              "data_sha256", "gate_version")}


_TYPES = {"index": int, "name": str, "model_sha256": str, "model_path": str, "data_sha256": str, "n_samples": int,
          "task": str, "kind": str, "n_classes": (int, type(None)), "policy_sha256": str, "gate_version": str,
          "blessed_at": str, "report_sha256": str, "verdict": str, "forced": bool, "reason": (str, type(None)),
          "metrics": dict, "outputs": str, "outputs_sha256": str}


def _record(entry, i: int) -> Blessing:
    if not isinstance(entry, dict):
        raise BaselineProblem(f"blessing {i + 1} is not an object")
    missing = [k for k in _TYPES if k not in entry]
    if missing:
        raise BaselineProblem(f"blessing {i + 1} lacks {', '.join(missing)}")
    for key, kind in _TYPES.items():
        value = entry[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BaselineProblem(f"blessing {i + 1}: {key} has the wrong type ({type(value).__name__})")
    for key in ("model_sha256", "data_sha256", "outputs_sha256"):
        if not _SHA.match(entry[key]):
            raise BaselineProblem(f"blessing {i + 1}: {key} is not a sha256")
    if entry["n_samples"] < 1 or entry["index"] != i + 1:
        raise BaselineProblem(f"blessing {i + 1}: index or n_samples is out of order")
    name = entry["outputs"]
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".npz"):
        raise BaselineProblem(f"blessing {i + 1}: outputs {name!r} is not a file name in the baseline folder")
    return Blessing(**{k: entry[k] for k in _TYPES})


def read_blessings(folder: Path) -> list[Blessing]:
    """Every blessed release in the folder, first to last; [] when nothing was blessed yet.
    BaselineProblem when the record is damaged."""
    path = folder / RECORD
    if not os.path.lexists(path):
        return []
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise BaselineProblem(f"{path} is not a plain file (a folder, a link or a device)")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise BaselineProblem(f"{path} is larger than {MAX_RECORD_BYTES // 2**20} MB")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BaselineProblem(f"{path} is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("blessings"), list):
        raise BaselineProblem(f"{path} is not a blessing record of format {FORMAT}")
    if not doc["blessings"]:
        raise BaselineProblem(f"{path} holds no blessing (`gate bless` never writes an empty record)")
    return [_record(entry, i) for i, entry in enumerate(doc["blessings"])]


def _finite(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_outputs(folder: Path, blessing: Blessing) -> Predictions:
    """The blessed release's per-sample outputs, checked against the sha256 its record holds."""
    path = folder / blessing.outputs
    if not os.path.lexists(path) or not stat.S_ISREG(os.lstat(path).st_mode):
        raise BaselineProblem(f"the stored outputs {path} are missing (or not a plain file)")
    if sha256_of(path) != blessing.outputs_sha256:
        raise BaselineProblem(f"the stored outputs {path} do not match the sha256 recorded when release "
                              f"{blessing.index} ({blessing.name}) was blessed: they were changed, so they are not "
                              "used; bless the release again")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # damaged zip members: the hash matched, so the writer was broken
        raise BaselineProblem(f"the stored outputs {path} cannot be read: {type(exc).__name__}") from None
    unknown = set(arrays) - set(VECTORS)
    if unknown:
        raise BaselineProblem(f"the stored outputs {path} hold unknown arrays: {', '.join(sorted(unknown))}")
    for key, arr in arrays.items():
        # one number per sample, or one row of class scores (probs)
        want = 2 if key == "probs" else (arr.ndim if key == "values" else 1)
        if arr.dtype.kind not in "iuf" or arr.ndim != want or arr.ndim == 0 or len(arr) != blessing.n_samples or \
                (key == "probs" and arr.shape[1] != blessing.n_classes):
            raise BaselineProblem(f"the stored outputs {path}: {key} is not {blessing.n_samples:,} numbers")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BaselineProblem(f"the stored outputs {path}: {key} holds NaN or infinite values")
    return Predictions(kind=blessing.kind, n_classes=blessing.n_classes,
                       **{k: arrays.get(k) for k in VECTORS})


def outputs_arrays(pred: Predictions) -> dict[str, np.ndarray]:
    """What a blessing stores of a model's outputs: every per-sample vector the metrics read."""
    return {k: np.asarray(getattr(pred, k)) for k in VECTORS if getattr(pred, k) is not None}


def append_blessing(folder: Path, fields_: dict, pred: Predictions) -> Blessing:
    """Store the outputs and append the record; both written atomically, the record last, under a lock."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".blessings.lock", "a") as lock:  # two releases blessed at once must not lose one
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            existing = read_blessings(folder)
        except BaselineProblem as exc:
            from gate.errors import GateInputError

            raise GateInputError(f"cannot take another blessing: {exc}", path=folder / RECORD,
                                 fix="restore the baseline folder from where it is kept (a commit or a release "
                                     "asset); the gate does not overwrite a damaged record") from None
        return _append(folder, existing, fields_, pred)


def _append(folder: Path, existing: list[Blessing], fields_: dict, pred: Predictions) -> Blessing:
    from gate.report import atomic_write

    index = len(existing) + 1
    name = f"release-{index:04d}-{fields_['model_sha256'][:12]}.npz"
    blessing = Blessing(index=index, kind=pred.kind, n_classes=pred.n_classes, outputs=name,
                        outputs_sha256=save_npz(folder / name, outputs_arrays(pred)), **fields_)
    doc = {"format": FORMAT, "blessings": [b.to_dict() for b in existing] + [blessing.to_dict()]}
    atomic_write(folder / RECORD, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return blessing


# ------------------------------------------------------------------ measuring against blessed releases

@dataclass(frozen=True)
class Loaded:
    """A release ready to compare with, or why there is none."""
    blessing: Blessing | None
    outputs: Predictions | None
    status: str  # "compared" | "missing" | "damaged"
    reason: str | None = None


def load_releases(folder: Path, wanted: set[str]) -> dict[str, Loaded]:
    """The releases the rules name (vs: baseline -> the last blessed, first_baseline -> the first), loaded once
    for every candidate."""
    try:
        if os.path.lexists(folder) and not folder.is_dir():
            raise BaselineProblem(f"{folder} is not a folder")
        blessings = read_blessings(folder)
    except (BaselineProblem, OSError) as exc:
        return {vs: Loaded(None, None, "damaged", f"the baseline record is damaged: {exc}") for vs in wanted}
    if not blessings:
        return {vs: Loaded(None, None, "missing", f"{folder} holds no blessed release yet (no {RECORD}); "
                                                  "`gate bless` records one from a passing report")
                for vs in wanted}
    out = {}
    for vs in wanted:
        blessing = blessings[-1] if vs == "baseline" else blessings[0]
        try:
            out[vs] = Loaded(blessing, load_outputs(folder, blessing), "compared")
        except (BaselineProblem, OSError) as exc:
            out[vs] = Loaded(blessing, None, "damaged", str(exc))
    return out


def compare_with_release(loaded: Loaded, *, metrics: list[str], cand: Predictions, cand_sha256: str | None,
                         y, data_sha256: str, task: str, confidence: float, bootstrap: int,
                         seed: int, samples: np.ndarray | None = None) -> ReleaseComparison:
    """One candidate against one blessed release, paired on the samples. samples: the file index of each
    sample the candidate gave (sequential looks read them in a random order and may stop early); the
    release's outputs, stored in the file's order, are taken at them. None: every sample, in the file's order."""
    from gate.measure.compare import as_the_base_itself, compare

    release = loaded.blessing.summary() if loaded.blessing else None
    if loaded.status != "compared":
        return ReleaseComparison(status=loaded.status, release=release, reason=loaded.reason)
    b = loaded.blessing
    problem = None
    if b.data_sha256 != data_sha256:
        problem = (f"release {b.index} ({b.name}) was blessed on other calibration data (sha256 "
                   f"{b.data_sha256[:12]}, now {data_sha256[:12]}): a paired comparison needs the same samples; "
                   "bless a release on this data")
    elif b.task != task or (b.n_samples != (len(y) if y is not None else b.n_samples) if samples is None else
                            len(samples) and int(np.max(samples)) >= b.n_samples):
        problem = f"release {b.index} ({b.name}) was blessed for another task or sample count"
    elif b.n_classes != cand.n_classes or (b.kind == "labels") != (cand.kind == "labels"):
        problem = (f"release {b.index} ({b.name}) gave {b.n_classes} class scores ({b.kind}); this candidate "
                   f"gives {cand.n_classes} ({cand.kind})")
    if problem:
        return ReleaseComparison(status="different_data", release=release, reason=problem)
    outputs = loaded.outputs if samples is None else loaded.outputs.take(np.asarray(samples))
    out = {}
    for metric in metrics:
        result = compare(metric, base=outputs, cand=cand, agreement=None, y=y, task=task,
                         confidence=confidence, bootstrap=bootstrap, seed=seed, with_interval=True)
        # the blessed model itself: no difference by construction, not an estimate from the samples
        out[metric] = as_the_base_itself(result) if cand_sha256 == b.model_sha256 else result
    return ReleaseComparison(status="compared", release=release, metrics=out)
