"""gate check with a per-group rule over thousands of subgroups, with and without sequential looks.

A stranger's policy may group by a column with thousands of values (a user, a device id). Each subgroup is
judged on its own, so this is the per-subgroup cost of the interval work. Lookup-table models (the tests'
conftest) keep the models' own time out of it: the ratio against the same run with only an overall
accuracy rule is the price of the subgroups. No wall-clock assertion; the figures go to the summary.

    python -m pytest benchmarks/test_many_subgroups.py --benchmark-only -s

Measured (29 Nov, 2 vCPU): 5,000 subgroups on 100,000 samples took 20 s before the relative change's
posterior (16,000 draws a subgroup) was drawn only for relative per-group rules, 3.2 s after; with
sequential looks 50 s -> 7.5 s.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SUMMARY
from test_quality_speed import _env, _gate_executable, _load, _run


def _tests_helpers():
    """tests/conftest.py's model and data builders (a module of the same name as this folder's conftest)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("gate_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_T = _tests_helpers()

N, GROUPS, ROUNDS = 100_000, 5_000, 3


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many-subgroups")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, N)
    _T.base_and_copy(root, y, user=np.array([f"u{i:05d}" for i in range(GROUPS)])[np.arange(N) % GROUPS])
    data = {"path": "data.npz", "groups": ["user"]}
    overall = [{"metric": "accuracy", "max_drop": 0.05}]
    per_group = overall + [{"metric": "accuracy", "max_drop": 0.05, "per": "group", "min_samples": 10}]
    for name, rules, top in (("overall", overall, {}), ("groups", per_group, {}),
                             ("groups-looks", per_group, {"sequential": True})):
        _T.write_policy(root / f"{name}.yaml", rules, candidates={"same": "same.onnx"}, data=data, batch_size=1000,
                     **top)
    return root


def test_a_per_group_rule_over_5000_subgroups(benchmark, lab, tmp_path):
    env = _env(tmp_path)
    load_before = _load()

    def command(name: str) -> list[str]:
        return [*_gate_executable(), "check", "--policy", str(lab / f"{name}.yaml"), "--out",
                str(tmp_path / name), "--no-progress"]

    names = ("overall", "groups", "groups-looks")
    for name in names:  # warm-up: byte code, page cache
        _, _, proc = _run(command(name), env, lab)
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
    times: dict[str, list[float]] = {name: [] for name in names}

    def one_round():
        for name in names:
            seconds, _, proc = _run(command(name), env, lab)
            assert proc.returncode in (0, 1), proc.stderr[-2000:]
            times[name].append(seconds)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    med = {name: statistics.median(v) for name, v in times.items()}
    benchmark.extra_info.update({"seconds": times, "n_samples": N, "groups": GROUPS})
    line = (f"many subgroups ({GROUPS:,} on {N:,} samples, load {load_before}): overall rule {med['overall']:.2f} s, "
            f"+ per-group rule {med['groups']:.2f} s ({med['groups'] / med['overall']:.1f}x), with sequential "
            f"looks {med['groups-looks']:.2f} s ({med['groups-looks'] / med['overall']:.1f}x)")
    SUMMARY.append(line)
    print("\n" + line)
