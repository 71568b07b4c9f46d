"""Peak memory: each model in its own subprocess, against the same process without the model.

The worker (this module run as `python -m gate.measure.memory`) imports numpy and
onnxruntime and loads the input batch in both modes; in "model" mode it also
creates the session and runs inference. peak_memory_mb is the model worker's
high-water resident set minus the baseline worker's, so the interpreter, the
libraries and the input are not charged to the model, and one model's arena
never hides another's.

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
    mode, model, feeds_path, threads, provider, runs = argv
    import numpy as np
    import onnxruntime as ort

    with np.load(feeds_path, allow_pickle=False) as archive:
        feeds = {k: archive[k] for k in archive.files}
    if mode == "model":
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        session = ort.InferenceSession(model, options, providers=providers)
        for _ in range(int(runs)):
            session.run(None, feeds)
    print(json.dumps({"vm_hwm_kb": _vm_hwm_kb()}))
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
    if report.get("vm_hwm_kb") is not None:
        return {"peak_bytes": report["vm_hwm_kb"] * 1024, "method": "VmHWM of the worker"}
    return {"peak_bytes": maxrss, "method": "ru_maxrss from os.wait4"}


def peak_memory(models: dict[str, tuple[Path, dict]], *, threads: int, provider: str,
                runs: int = 10) -> dict[str, dict]:
    """name -> {peak_mb, rss_mb, baseline_mb, method} (or {error}) for every (path, feeds) model.

    Each model's worker gets the feeds it is timed with; a baseline worker (no model) runs once per distinct
    feed, so the input is never charged to the model.
    """
    import numpy as np

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gate-memory-") as tmp:
        work = Path(tmp)
        baselines: dict[int, dict] = {}
        for name, (path, feeds) in models.items():
            feeds_path = work / f"feeds-{len(out)}.npz"
            np.savez(feeds_path, **feeds)
            size = feeds_path.stat().st_size
            if size not in baselines:  # the baseline holds the same input: only the model differs
                baselines[size] = _run_worker(["baseline", "-", str(feeds_path), str(threads), provider, "0"], work)
            base = baselines[size]
            got = _run_worker(["model", str(path), str(feeds_path), str(threads), provider, str(runs)], work)
            if "error" in got or "error" in base:
                out[name] = {"error": got.get("error") or base.get("error")}
                continue
            out[name] = {"peak_mb": max(got["peak_bytes"] - base["peak_bytes"], 0) / MB,
                         "rss_mb": got["peak_bytes"] / MB, "baseline_mb": base["peak_bytes"] / MB,
                         "method": got["method"], "runs": runs}
    return out


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
