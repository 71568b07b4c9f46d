"""Peak memory: each model in its own subprocess, against the same process without the model.

The worker (this module run as `python -m gate.measure.memory`) is told the model's backend
(gate/models/: ONNX, torch) and, in both modes, imports that backend's libraries and holds the input
batch (`memory_baseline`). In "model" mode it loads the model through the backend's own checks and
loaders (`memory_call`: for torch, gate.safety's checks and the runner's loaders, as in the gate
process), runs inference and lists the modules loading and running imported; the "baseline" worker
imports those modules instead. peak_memory_mb is the model worker's high-water resident set minus the
baseline worker's, so the interpreter, the libraries (onnxruntime; torch, and the ~100 MB of sympy,
networkx and torch internals torch.export's loader brings) and the input are not charged to the model,
and one model's arena never hides another's.

The high-water mark is read by the worker itself from /proc/self/status
(VmHWM) where Linux has it. `os.wait4`'s ru_maxrss is the fallback: on Linux
a child inherits the parent's peak at fork (the gate process, with its own
onnxruntime sessions and data, would be reported for every model), which is
measured here, so it is not used when VmHWM exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1_000_000
TIMEOUT_S = 600


def _vm_hwm_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _worker(argv: list[str]) -> int:
    mode, spec_path, feeds_path, threads, provider, runs, modules_path = argv
    import importlib

    import numpy as np

    from gate.errors import GateInputError
    from gate.models import BACKENDS

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    backend = BACKENDS[spec["backend"]]
    with np.load(feeds_path, allow_pickle=False) as archive:
        feeds = {k: archive[k] for k in archive.files}
    held = backend.memory_baseline(feeds, int(threads))  # noqa: F841 - held until the peak is read
    before = set(sys.modules)
    if mode == "model":
        try:
            call = backend.memory_call(spec, feeds, int(threads), provider)
        except GateInputError as exc:  # the parent reads the last line of stderr: the message, not the fix
            print(" ".join(exc.render().split())[:300], file=sys.stderr)
            return 1
        for _ in range(int(runs)):
            call()
    else:  # the libraries the model's worker imported while loading and running it, without the model
        for name in json.loads(Path(modules_path).read_text(encoding="utf-8")):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - a module importable only in its parent's context: skipped
                continue
    imported = sorted(set(sys.modules) - before) if mode == "model" else []
    print(json.dumps({"vm_hwm_kb": _vm_hwm_kb(), "imported": imported}))
    return 0


def _run_worker(args: list[str], workdir: Path) -> dict:
    import gate

    env = dict(os.environ)
    root = str(Path(gate.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out_path, err_path = workdir / "worker.out", workdir / "worker.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # files, not pipes: the child is reaped with os.wait4, which Popen.communicate would do first
        proc = subprocess.Popen([sys.executable, "-m", "gate.measure.memory", *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    if proc.returncode != 0 or not text:
        tail = err_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the memory worker exited {proc.returncode}: {tail[0][:300]}"}
    report = json.loads(text[-1])
    # ru_maxrss is in KiB on Linux, bytes on macOS
    maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    imported = report.get("imported", [])
    if report.get("vm_hwm_kb") is not None:
        return {"peak_bytes": report["vm_hwm_kb"] * 1024, "method": "VmHWM of the worker", "imported": imported}
    return {"peak_bytes": maxrss, "method": "ru_maxrss from os.wait4", "imported": imported}


def peak_memory(models: dict[str, tuple[Path | dict, dict]], *, threads: int, provider: str,
                runs: int = 10) -> dict[str, dict]:
    """name -> {peak_mb, rss_mb, baseline_mb, method} (or {error}) for every (model, feeds) pair; a model is its
    backend's memory_spec (gate/models/), or the path of an ONNX file.

    Each model's worker gets the feeds it is timed with and reports the modules it imported while loading and
    running the model (torch.export's loader alone brings ~100 MB of sympy, networkx and torch internals); the
    baseline worker holds the same feeds and imports the backend's libraries and those modules, without the
    model. One baseline serves every model with the same backend, input size and modules.
    """
    import numpy as np

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gate-memory-") as tmp:
        work = Path(tmp)
        baselines: dict[tuple, dict] = {}
        for i, (name, (model, feeds)) in enumerate(models.items()):
            spec = model if isinstance(model, dict) else {"backend": "onnx", "path": str(model)}
            spec_path, feeds_path = work / f"model-{i}.json", work / f"feeds-{i}.npz"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            np.savez(feeds_path, **feeds)
            got = _run_worker(["model", str(spec_path), str(feeds_path), str(threads), provider, str(runs), "-"],
                              work)
            if "error" in got:
                out[name] = {"error": got["error"]}
                continue
            key = (spec["backend"], feeds_path.stat().st_size, tuple(got["imported"]))
            if key not in baselines:  # the same libraries and input: only the model differs
                modules_path = work / f"modules-{i}.json"
                modules_path.write_text(json.dumps(got["imported"]), encoding="utf-8")
                baselines[key] = _run_worker(["baseline", str(spec_path), str(feeds_path), str(threads), provider,
                                              "0", str(modules_path)], work)
            base = baselines[key]
            if "error" in base:
                out[name] = {"error": base["error"]}
                continue
            out[name] = {"peak_mb": max(got["peak_bytes"] - base["peak_bytes"], 0) / MB,
                         "rss_mb": got["peak_bytes"] / MB, "baseline_mb": base["peak_bytes"] / MB,
                         "method": got["method"], "runs": runs}
    return out


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
