"""Where and with what a run happened, so a result can be traced and refused when mixed."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata

from gate import __version__

PACKAGES = ("onnxruntime", "onnx", "numpy", "scikit-learn", "jinja2", "pyyaml", "torch")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"gate": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"hostname": platform.node(), "os": platform.platform(), "machine": platform.machine(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": usable}


def ci() -> dict:
    keys = ("GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_RUN_ID", "GITHUB_EVENT_NAME")
    return {k.lower(): os.environ[k] for k in keys if os.environ.get(k)}


def command() -> str:
    return shlex.join(["gate", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "gate"
