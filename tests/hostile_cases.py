"""Builders for tests/test_hostile.py: odd models, hostile files and the harness that runs the CLI in-process.

Everything is small and built from scratch (onnx.helper, numpy, pickle.dumps of a payload that is only
ever written to disk); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import IR_VERSION, OPSET, point_external_data  # noqa: F401 - used by test_hostile

LIMIT_S = 10.0  # per case: a hang on 2 shared cores is a large effect, so this is far above a healthy run
ALARM_S = 12.0  # a case still running then is stopped and reported as a hang
MEMORY_HEADROOM = 4 << 30  # bytes of address space a case may add (an alias bomb must not take the machine)


# --------------------------------------------------------------------------------------------
# models whose outputs go wrong in a chosen way
# --------------------------------------------------------------------------------------------

def _save(nodes, inputs, outputs, inits, path: Path, *, check: bool = True, opset: int = OPSET) -> Path:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="gate-tests")
    model.ir_version = IR_VERSION
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def _gather_rows(table: np.ndarray):
    """idx int64 [batch, 1] -> `rows` float32 [batch, k] = table[idx]."""
    inputs = [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])]
    inits = [numpy_helper.from_array(table.astype(np.float32), "table"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["table", "idx"], ["gathered"], axis=0),
             helper.make_node("Squeeze", ["gathered", "axis1"], ["rows"])]
    return inputs, inits, nodes


def log_model(path: Path, positive: np.ndarray, nan_rows: np.ndarray) -> Path:
    """logits = Log(table[idx]): the table is positive except on `nan_rows`, where it is -1, so the model
    itself computes NaN logits for those samples (Log of a negative number), and exactly log(table) elsewhere."""
    table = np.asarray(positive, dtype=np.float32).copy()
    table[nan_rows] = -1.0
    inputs, inits, nodes = _gather_rows(table)
    nodes.append(helper.make_node("Log", ["rows"], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", table.shape[1]])]
    return _save(nodes, inputs, outputs, inits, path)


def div_by_zero_model(path: Path, positive: np.ndarray) -> Path:
    """logits = table[idx] / 0 with a positive table: +Inf everywhere, computed by the model."""
    table = np.asarray(positive, dtype=np.float32)
    inputs, inits, nodes = _gather_rows(table)
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    nodes.append(helper.make_node("Div", ["rows", "zero"], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", table.shape[1]])]
    return _save(nodes, inputs, outputs, inits, path)


def future_opset_model(path: Path, table: np.ndarray) -> Path:
    """A well-formed protobuf that claims opset 99, which no onnxruntime implements."""
    inputs, inits, nodes = _gather_rows(np.asarray(table, dtype=np.float32))
    nodes.append(helper.make_node("Identity", ["rows"], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", table.shape[1]])]
    return _save(nodes, inputs, outputs, inits, path, check=False, opset=99)


# --------------------------------------------------------------------------------------------
# hostile files
# --------------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command: it proves a loader executed a candidate's code."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pickle_bomb(path: Path, sentinel: Path) -> Path:
    """A pickle (protocol 4) that would create `sentinel` if anything unpickled it. Only written, never loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload(f"touch {sentinel}"), protocol=4))
    return path


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """The YAML alias bomb: `width ** levels` leaves from a few hundred bytes of text."""
    lines = ['a: &a ["lol"]']
    prev = "a"
    for i in range(levels):
        name = f"l{i}"
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * width)}]")
        prev = name
    return "\n".join(lines) + "\n"


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")


# --------------------------------------------------------------------------------------------
# the in-process harness
# --------------------------------------------------------------------------------------------

class CaseHang(BaseException):
    """Raised by the alarm: a BaseException, so the CLI's `except Exception` cannot swallow it."""


@dataclass
class Outcome:
    args: list
    code: int | str  # "hang" when the alarm stopped it
    stdout: str
    stderr: str
    seconds: float
    error: str | None = None  # an exception that escaped main()
    warnings: list = field(default_factory=list)  # "Category: message (file:line)" raised while it ran

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr

    def __repr__(self) -> str:
        head = f"gate {' '.join(map(str, self.args))}\n-> exit {self.code} in {self.seconds:.2f} s"
        tail = f"\n--- escaped: {self.error}" if self.error else ""
        if self.warnings:
            head += "\n--- warnings\n" + "\n".join(self.warnings[:10])
        return f"{head}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}{tail}"


def _address_space() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_main(args: list, capsys) -> Outcome:
    """`gate ARGS` in this process, with a hang alarm and a cap on the memory it may add."""
    from gate.cli import main

    args = [str(a) for a in args]
    capsys.readouterr()

    def on_alarm(signum, frame):
        raise CaseHang(f"still running after {ALARM_S:g} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + MEMORY_HEADROOM
    if hard == resource.RLIM_INFINITY or cap < hard:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    error = None
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, ALARM_S)
    caught = warnings.catch_warnings(record=True)
    seen = caught.__enter__()
    warnings.simplefilter("always")
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except CaseHang as exc:
        code, error = "hang", str(exc)
    except BaseException as exc:  # noqa: BLE001 - anything escaping main() is a finding, not a crash of the suite
        code, error = "escaped", f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - started
        caught.__exit__(None, None, None)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    captured = capsys.readouterr()
    shown = [f"{w.category.__name__}: {w.message} ({Path(w.filename).name}:{w.lineno})" for w in seen]
    return Outcome(args=args, code=code, stdout=captured.out, stderr=captured.err, seconds=seconds, error=error,
                   warnings=shown)


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root -> (size, mtime_ns): a sentinel for writes where none belong."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@dataclass
class Expect:
    """What a case demands of the CLI."""
    args: list
    codes: tuple = (2,)
    names: tuple = ()  # each must appear in stdout+stderr (case-insensitive) when the exit code is 2;
    #                    an entry that is itself a tuple is satisfied by any one of its strings
    check: Callable[[Outcome], None] | None = None  # further assertions
    twin: list | None = None  # a clean twin's args: the exit code must be the twin's (0 or 1)
    patterns: tuple = ()  # regular expressions the output must match when the exit code is 2
    notes: dict = field(default_factory=dict)
