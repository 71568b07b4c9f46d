"""Speed and memory of torch models, through the backend registry (gate/models/): known answers.

Real torch models (tiny nn.Modules saved as TorchScript and as torch.export programs) and ONNX models
computing the same function from the same weights:

- mixed pairs (an ONNX base with torch candidates, a torch base with an ONNX candidate) under speedup,
  latency_p50_ms and peak_memory_mb rules give a report with numbers and exit 0 or 1, never 2;
- a torch candidate doing 8x the compute of its torch base (8 matmuls for 1, on a batch of 256) gets a
  speedup well below 1 (asserted < 0.5: the ratio is about 1/8, a margin that holds on a loaded 2-core
  machine), and the timing leaves torch's thread count as it found it;
- a torch candidate holding 32.8 MB more weights than a torch twin needs >= 25 MB more peak memory, while the
  twin is charged a few MB: torch itself (hundreds of MB) is in the baseline worker, not in the model.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import bound_runners, candidate, read_report, rule_of, run_main, save_graph, write_policy

torch = pytest.importorskip("torch")

D, K, N = 256, 8, 96
BIG_COLS = 32_000  # D x BIG_COLS fp32: 32.8 MB of extra weights
BIG_MB = D * BIG_COLS * 4 / 1e6
RNG = np.random.default_rng(0)
W = (RNG.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
HEAD = (RNG.standard_normal((D, K)) / np.sqrt(D)).astype(np.float32)


class Net(torch.nn.Module):
    """tanh(x @ w) `steps` times, then a head; with `big`, also x @ big (times zero: the same outputs, but
    the weights are held and read on every call)."""

    def __init__(self, steps: int, big: bool = False) -> None:
        super().__init__()
        self.steps = steps
        self.k = K
        self.w = torch.nn.Parameter(torch.from_numpy(W.copy()))
        self.head = torch.nn.Parameter(torch.from_numpy(HEAD.copy()))
        cols = BIG_COLS if big else K
        self.big = torch.nn.Parameter(torch.full((D, cols), 1e-3))

    def forward(self, x):
        h = x
        for _ in range(self.steps):
            h = torch.tanh(h @ self.w)
        extra = (x @ self.big).reshape(x.shape[0], self.k, -1).sum(-1)
        return h @ self.head + extra * 0.0


def _script(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.script(model.eval()).save(str(path))
    return path


def _export(model, path, *, batch: int | None = None):
    x = torch.zeros(batch or 4, D)
    shapes = None if batch else {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=shapes), str(path))
    return path


def _onnx(path):
    """The one-step Net as an ONNX graph from the same weights."""
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Tanh", ["a"], ["h"]),
                               helper.make_node("MatMul", ["h", "head"], ["y"])], "net",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", K])],
                              [numpy_helper.from_array(W, "w"), numpy_helper.from_array(HEAD, "head")])
    save_graph(graph, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("backend-speed")
    _onnx(d / "base.onnx")
    _script(Net(1), d / "tiny.pt")
    _script(Net(1, big=True), d / "big.pt")
    _export(Net(1), d / "one.pt2")
    _export(Net(8), d / "eight.pt2")
    np.savez(d / "data.npz", x=np.random.default_rng(1).standard_normal((N, D)).astype(np.float32))
    return d


RULES = [{"metric": "speedup", "min": 0.001}, {"metric": "latency_p50_ms", "max": 1000},
         {"metric": "peak_memory_mb", "max": 1000}]
LATENCY = {"min_runs": 30, "min_time_s": 0.1, "max_time_s": 3, "warmup": 3}


def _numbers(cand: dict) -> None:
    for metric in ("speedup", "latency_p50_ms", "peak_memory_mb"):
        m = cand["metrics"][metric]
        assert m.get("unavailable") is None, (metric, m)
        assert m["candidate"] is not None and np.isfinite(m["candidate"]), (metric, m)
        assert metric == "speedup" or m["base"] is not None, (metric, m)  # a speedup is a ratio: no base value
        assert rule_of(cand, metric)["status"] in ("pass", "fail", "warn"), rule_of(cand, metric)


def test_an_onnx_base_with_torch_candidates_is_timed_and_weighed(models):
    d = models
    policy = write_policy(d / "onnx-base.yaml", RULES, base="base.onnx",
                          candidates={"tiny": "tiny.pt", "big": "big.pt"}, latency=LATENCY)
    result = run_main("check", "--policy", policy, "--out", d / "out-onnx-base")
    assert result.code in (0, 1), result
    report = read_report(d / "out-onnx-base")
    tiny, big = candidate(report, "tiny"), candidate(report, "big")
    for cand in (tiny, big):
        _numbers(cand)
        assert cand["speed"]["providers"]["base"] == "CPUExecutionProvider"
        assert cand["speed"]["providers"]["candidate"].startswith("torch ")
        assert cand["speed"]["op_profile"] is None
        assert any("no per-op profile" in n and "torch" in n for n in cand["speed"]["notes"]), cand["speed"]["notes"]
    assert tiny["metrics"]["flip_rate"]["candidate"] == 0.0  # the same function in both backends
    # torch itself (hundreds of MB resident) sits in the baseline worker: the tiny model is charged a few MB
    tiny_mb, big_mb = tiny["metrics"]["peak_memory_mb"]["candidate"], big["metrics"]["peak_memory_mb"]["candidate"]
    assert tiny_mb < 25, tiny["speed"]["memory"]
    assert big_mb - tiny_mb >= 25, (big_mb, tiny_mb)
    assert big["speed"]["memory"]["candidate"]["baseline_mb"] > 100  # torch was imported there, and not charged
    print(f"\nonnx base vs torch: speedup tiny {tiny['metrics']['speedup']['candidate']:.3f}, "
          f"big {big['metrics']['speedup']['candidate']:.3f}; peak MB onnx base "
          f"{tiny['metrics']['peak_memory_mb']['base']:.1f}, tiny {tiny_mb:.1f}, big {big_mb:.1f} "
          f"(+{big_mb - tiny_mb:.1f} for {BIG_MB:.1f} MB of weights)")


def test_a_torch_base_with_an_onnx_candidate_is_timed_and_weighed(models):
    d = models
    policy = write_policy(d / "torch-base.yaml", RULES, base="one.pt2", candidates={"onnx": "base.onnx"},
                          latency=LATENCY)
    result = run_main("check", "--policy", policy, "--out", d / "out-torch-base")
    assert result.code in (0, 1), result
    report = read_report(d / "out-torch-base")
    cand = candidate(report, "onnx")
    _numbers(cand)
    assert cand["speed"]["providers"]["base"].startswith("torch ")
    assert cand["metrics"]["flip_rate"]["candidate"] == 0.0
    assert cand["metrics"]["peak_memory_mb"]["base"] < 25  # the torch base, without torch itself
    print(f"\ntorch base vs onnx: speedup {cand['metrics']['speedup']['candidate']:.3f}, peak MB torch base "
          f"{cand['metrics']['peak_memory_mb']['base']:.1f}, onnx {cand['metrics']['peak_memory_mb']['candidate']:.1f}")


def test_eight_times_the_compute_is_a_speedup_well_below_one(models):
    from gate.measure.speed import SpeedSettings, measure_on_this_machine

    d = models
    path = write_policy(d / "compute.yaml", [{"metric": "speedup", "min": 0.9}], base="one.pt2",
                        candidates={"eight": "eight.pt2"})
    runners = bound_runners(path)
    threads_before = torch.get_num_threads()
    run = measure_on_this_machine(runners, SpeedSettings(batch_size=256, threads=1, min_runs=30, min_time_s=0.2,
                                                         max_time_s=3, warmup=3), confidence=0.95)
    assert torch.get_num_threads() == threads_before  # set for the timed loop only
    speedup = run.metrics["eight"]["speedup"]
    assert speedup.candidate < 0.5, speedup
    assert speedup.candidate_interval is not None and speedup.candidate_interval.high < 0.5
    providers = run.details["eight"]["providers"]
    assert providers["base"] == providers["candidate"] == f"torch {torch.__version__.split('+')[0]} CPU"
    print(f"\n8x compute (torch .pt2, batch 256): speedup {speedup.candidate:.3f} "
          f"[{speedup.candidate_interval.low:.3f}, {speedup.candidate_interval.high:.3f}]")


def test_the_feed_api_pads_a_fixed_batch_once_for_every_backend(models, tmp_path):
    """A .pt2 with a fixed batch of 4 on 10 samples: run() pads the last chunk and drops the padding,
    feed() gives one call's input of the model's own size, whatever batch size is asked."""
    from gate.data import load_dataset
    from gate.models import backend_of, open_runner
    from gate.policy import load_policy

    d = models
    _export(Net(1), tmp_path / "fixed.pt2", batch=4)
    x = np.random.default_rng(2).standard_normal((10, D)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    path = write_policy(tmp_path / "p.yaml", [{"metric": "flip_rate", "max": 0.1}], base=str(d / "base.onnx"),
                        candidates={"fixed": "fixed.pt2"})
    policy = load_policy(path)
    data = load_dataset(policy.data, max_mb=100)
    onnx_runner = open_runner(policy.base, output=None, inputs={}, max_mb=100)
    torch_runner = open_runner(policy.candidates[0], output=None, inputs={}, max_mb=100)
    for runner in (onnx_runner, torch_runner):
        runner.bind(data)
    assert (backend_of(onnx_runner).name, backend_of(torch_runner).name) == ("onnx", "torch")
    assert (onnx_runner.fixed_batch, torch_runner.fixed_batch) == (None, 4)
    np.testing.assert_allclose(torch_runner.run(0, 10), onnx_runner.run(0, 10), rtol=1e-5, atol=1e-5)
    feeds, batch = torch_runner.feed(1)
    assert batch == 4 and feeds["x"].shape == (4, D) and feeds["x"].dtype == np.float32
    feeds, batch = onnx_runner.feed(16)  # more than the data holds: rows repeat
    assert batch == 16 and feeds["x"].shape == (16, D)
    np.testing.assert_array_equal(feeds["x"][10:], x[:6])
