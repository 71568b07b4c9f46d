"""Where and with what a run happened, so a result can be traced and refused when mixed."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
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
    """The repository, commit and pull request a CI run is for; the local git commit otherwise."""
    keys = ("GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_RUN_ID", "GITHUB_EVENT_NAME",
            "GITHUB_SERVER_URL")
    out = {k.lower(): os.environ[k] for k in keys if os.environ.get(k)}
    match = re.match(r"refs/pull/(\d+)/", os.environ.get("GITHUB_REF", ""))
    if match:
        out["pull_request"] = int(match.group(1))
    if "github_sha" not in out:
        commit = _git("rev-parse", "HEAD")
        if commit:
            out["git_commit"] = commit
            out["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def command() -> str:
    """The command line that reproduces this run, from the directory it ran in."""
    argv = shlex.join(["gate", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "gate"
    return f"cd {shlex.quote(os.getcwd())} && {argv}"
