"""Shards: `gate measure --shard I/N` on slices of the data, joined by `gate judge` into exactly the measurements
of the whole data (report.json equal apart from provenance), and refused whenever they do not fit together."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import logits_for, lookup_model, make_scenario, read_report, run_main, write_npz, write_policy
from test_properties import first_difference

RULES = [{"metric": "accuracy", "max_drop": 0.05}, {"metric": "f1_macro", "max_drop": 0.05},
         {"metric": "log_loss", "max_increase": 0.5}, {"metric": "accuracy", "per": "group", "max_drop": 0.08},
         {"metric": "accuracy", "per": "class", "max_drop": 0.2, "min_samples": 20},
         {"metric": "flip_rate", "max": 0.1}, {"metric": "kl_divergence", "max": 1.0}]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    s = make_scenario(1000, 800, 40, 10, k=4, seed=3)
    write_npz(root / "data.npz", s.y, region=np.array(["north", "south", "east"])[np.arange(1000) % 3])
    lookup_model(root / "base.onnx", logits_for(s.base, 4, seed=1))
    lookup_model(root / "cand.onnx", logits_for(s.cand, 4, seed=2))
    write_policy(root / "p.yaml", RULES, candidates={"cand": "cand.onnx", "same": "base.onnx"},
                 data={"path": "data.npz", "labels": "label", "groups": ["region"]}, batch_size=64)
    assert run_main("check", "--policy", root / "p.yaml", "--out", root / "whole", "--no-progress").code == 0
    for i in (1, 2, 3):
        result = run_main("measure", "--policy", root / "p.yaml", "--out", root / f"s{i}.json", "--shard", f"{i}/3",
                          "--no-progress")
        assert result.code == 0 and (root / f"s{i}.outputs.npz").is_file(), result
    return root


def _judge(root, *names, out="joined"):
    return run_main("judge", *(root / n for n in names), "--policy", root / "p.yaml", "--out", root / out)


def test_joined_shards_give_the_unsharded_report(lab):
    result = _judge(lab, "s3.json", "s1.json", "s2.json")  # in any order
    assert result.code == 0, result
    whole, joined = read_report(lab / "whole"), read_report(lab / "joined")
    strip = lambda r: {k: v for k, v in r.items() if k != "provenance"}  # noqa: E731
    assert first_difference(strip(whole), strip(joined)) is None
    assert joined["n_samples"] == 1000 and [s["index"] for s in joined["provenance"]["shards"]] == [1, 2, 3]
    assert (lab / "joined" / "flips.csv").read_text() == (lab / "whole" / "flips.csv").read_text()
    shard = json.loads((lab / "s2.json").read_text())["gate_results"]["provenance"]["shard"]
    # whole batches of the policy's 64: 16 batches, 5 + 5 + 6 (the last one short)
    assert (shard["first"], shard["stop"], shard["of"]) == (320, 640, 1000)


def test_shards_that_do_not_fit_together_are_refused(lab, tmp_path):
    root = tmp_path / "lab"
    shutil.copytree(lab, root)
    missing = _judge(root, "s1.json", "s3.json")
    assert missing.code == 2 and "missing shard(s) [2]" in missing.stderr
    twice = _judge(root, "s1.json", "s2.json", "s2.json", "s3.json")
    assert twice.code == 2 and "given twice" in twice.stderr
    data = bytearray((root / "s2.outputs.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "s2.outputs.npz").write_bytes(bytes(data))
    changed = _judge(root, "s1.json", "s2.json", "s3.json")
    assert changed.code == 2 and "s2.outputs.npz" in changed.stderr and "changed" in changed.stderr
    (root / "s2.outputs.npz").unlink()
    gone = _judge(root, "s1.json", "s2.json", "s3.json")
    assert gone.code == 2 and "not beside it" in gone.stderr
    for bad in ("0/3", "4/3", "a/b", "1/0", "2"):
        result = run_main("measure", "--policy", root / "p.yaml", "--out", root / "x.json", "--shard", bad)
        assert result.code == 2 and "--shard" in result.stderr and "Traceback" not in result.stderr, (bad, result)
    from gate.errors import GateInputError
    from gate.shards import shard_range

    with pytest.raises(GateInputError, match="too few for 1000 shards"):
        shard_range((3, 1000), 10, where="data.npz")  # shard 3 of 1000 over 10 samples would be empty
    assert shard_range((2, 3), 1000, where="d", batch=64) == (320, 640)


def test_shards_of_other_data_are_not_joined(lab, tmp_path):
    root = tmp_path / "lab"
    shutil.copytree(lab, root)
    y = np.load(root / "data.npz")["label"]
    write_npz(root / "data.npz", y, region=np.array(["north", "south", "east"])[np.arange(1000) % 3],
              extra=np.zeros(1000))
    assert run_main("measure", "--policy", root / "p.yaml", "--out", root / "s2.json", "--shard", "2/3").code == 0
    result = _judge(root, "s1.json", "s2.json", "s3.json")
    assert result.code == 2 and "another base, data, candidate or policy" in result.stderr


def test_a_candidate_that_fails_in_one_shard_leaves_the_others_their_own_outputs(lab, tmp_path):
    """`short` knows only the first 320 samples: it runs in shard 1 and fails in shards 2 and 3. Every other
    candidate keeps its own outputs (they were once numbered by the candidates still running)."""
    root = tmp_path / "lab"
    shutil.copytree(lab, root)
    s = make_scenario(1000, 800, 40, 10, k=4, seed=3)
    lookup_model(root / "short.onnx", logits_for(s.cand, 4, seed=2)[:320])
    write_policy(root / "p.yaml", RULES, candidates={"short": "short.onnx", "cand": "cand.onnx", "same": "base.onnx"},
                 data={"path": "data.npz", "labels": "label", "groups": ["region"]}, batch_size=64)
    whole = run_main("check", "--policy", root / "p.yaml", "--out", root / "whole", "--no-progress")
    for i in (1, 2, 3):
        run_main("measure", "--policy", root / "p.yaml", "--out", root / f"s{i}.json", "--shard", f"{i}/3")
    joined = _judge(root, "s1.json", "s2.json", "s3.json")
    assert whole.code == joined.code == 1, joined  # a candidate that crashed fails, the others are judged
    a, b = read_report(root / "whole"), read_report(root / "joined")
    for name in ("cand", "same"):
        one = next(c for c in a["candidates"] if c["name"] == name)
        two = next(c for c in b["candidates"] if c["name"] == name)
        assert first_difference(one, two) is None, name
    assert next(c for c in b["candidates"] if c["name"] == "short")["error"]
