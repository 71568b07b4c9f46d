"""Where the time goes: onnxruntime's per-op profile of base and candidate, compared op type by op type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from gate.measure.machine import open_session

if TYPE_CHECKING:
    from gate.measure.settings import SpeedSettings


def op_profile(path: Path, feeds: dict, settings: SpeedSettings, threads: int, workdir: Path, *,
               runs: int = 20, warmup: int = 5) -> dict:
    """Time per inference by op type, from onnxruntime's profiler (names of the optimized graph, so fused
    nodes appear as their fused op type). {op_type: {"us": per run, "nodes": count}}"""
    prefix = str(workdir / f"profile_{abs(hash(str(path))) % 10**8}")
    session = open_session(path, settings, threads, profile_prefix=prefix)
    for _ in range(warmup + runs):
        session.run(None, feeds)
    profile_file = Path(session.end_profiling())
    try:
        events = json.loads(profile_file.read_text(encoding="utf-8"))
    finally:
        profile_file.unlink(missing_ok=True)
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(run_starts) < warmup + 1:
        return {}
    first_timed = run_starts[warmup]
    timed_runs = len(run_starts) - warmup
    by_op: dict[str, dict] = {}
    nodes: dict[str, set] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < first_timed:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        entry = by_op.setdefault(op, {"us": 0.0, "nodes": 0})
        entry["us"] += float(e.get("dur", 0))
        nodes.setdefault(op, set()).add(e["name"])
    for op, entry in by_op.items():
        entry["us"] /= timed_runs
        entry["nodes"] = len(nodes[op])
    return dict(sorted(by_op.items()))


def compare_profiles(base: dict, cand: dict) -> dict:
    """Op types by the change of their time per inference, losses (candidate slower) first."""
    ops = []
    for op in sorted(set(base) | set(cand)):
        b, c = base.get(op, {"us": 0.0, "nodes": 0}), cand.get(op, {"us": 0.0, "nodes": 0})
        ops.append({"op_type": op, "base_us": b["us"], "candidate_us": c["us"], "delta_us": c["us"] - b["us"],
                    "base_nodes": b["nodes"], "candidate_nodes": c["nodes"]})
    ops.sort(key=lambda r: (-r["delta_us"], r["op_type"]))
    return {"base_us": sum(v["us"] for v in base.values()), "candidate_us": sum(v["us"] for v in cand.values()),
            "ops": ops}
