"""The benchmarks' smoke runs (``--quick``) produce well-formed JSON, markdown and a plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import pytest

from benchmarks import cases
from benchmarks.worker import JaxWorker, TorchWorker, _compile
from tests.oracles import standard_promotion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("bench"))
    _run_quick("benchmarks.step", out)
    return out


def _run_quick(module: str, out: str) -> None:
    """Runs ``python -m <module> --quick --out <out>`` in a fresh process (jax's own config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--out", out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_json_is_complete(quick_run: str) -> None:
    with open(os.path.join(quick_run, "step.json")) as f:
        out = json.load(f)
    assert out["machine"]["cores"] >= 1 and out["machine"]["workers"]
    results = out["results"]
    frameworks = {r["framework"] for r in results}
    assert {"jopt", "jopt-flat", "optax", "floor", "torch-floor"} <= frameworks
    floors = ("floor", "torch-floor")
    steps = [r for r in results if r["kind"] == "step" and r["framework"] not in floors]
    assert {r["optimizer"] for r in steps} == {"adam", "chain"}
    for r in results:
        assert not r.get("error"), (r["framework"], r.get("error"))
        assert r["samples"] >= 2 and r["median_ms"] > 0
        assert r["p10_ms"] <= r["p25_ms"] <= r["median_ms"] <= r["p75_ms"]
        assert len(r["round_ms"]) == 2 and r["calls_per_sample"] >= 1  # --quick: 2 rounds
    for r in steps:
        if r["framework"].startswith(("jopt", "optax")):
            assert r["compile_s"] >= 0 and len(r["compile_runs_s"]) == 1  # --quick: one
            assert r["memory"]["donated"]["growth"] >= 0
            assert r["memory"]["not_donated"]["growth"] >= r["memory"]["donated"]["growth"]
            assert r["floor_ms"] > 0 and r["share_of_floor"] > 0
        if r["optimizer"] in ("adam", "chain"):  # two moments (+ a few hyperparameter bytes)
            assert 0 <= r["state_bytes"] - 2 * r["param_bytes"] <= 256, r["framework"]
    trains = [r for r in results if r["kind"] == "train"]
    assert {r["framework"] for r in trains} >= {"jopt", "jopt-flat", "optax"}


@pytest.mark.parametrize(("repeats", "budget", "runs"), [(3, 60.0, 3), (3, 0.0, 1), (1, 60.0, 1)])
def test_compile_repeats_trace_again_within_the_budget(repeats: int, budget: float, runs: int):
    traces = []

    def step(x: jax.Array) -> jax.Array:
        traces.append(1)  # runs once per trace: a repeat that reused a cache would not
        return x * 2

    compiled, times = _compile(jax, jax.jit(step), (np.ones(3, np.float32),), repeats, budget)
    assert len(times) == len(traces) == runs and min(times) > 0
    np.testing.assert_array_equal(np.asarray(compiled(np.ones(3, np.float32))), 2)


def test_markdown_has_the_tables(quick_run: str) -> None:
    with open(os.path.join(quick_run, "step.md")) as f:
        text = f.read()
    assert text.startswith("Machine: ")
    tables = [line for line in text.splitlines() if line.startswith("|")]
    header = "| optimizer | layout | params | leaves | jopt | jopt-flat | optax |"
    assert any(line.startswith(header) for line in tables)
    assert any(line.startswith("| model |") for line in tables)
    widths = {}
    for line in tables:  # every row of a table has as many cells as its header
        widths.setdefault(line.count("|"), 0)
        widths[line.count("|")] += 1
    assert all(n >= 3 for n in widths.values()), widths
    assert "| adam | flat64k |" in text and "| chain | leaves20 |" in text
    assert "| mlp |" in text


def test_plot_is_a_png(quick_run: str) -> None:
    with open(os.path.join(quick_run, "step.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_mnist_quick_run(tmp_path) -> None:
    """``python -m benchmarks.mnist --quick``: every framework trains and is summarized."""
    _run_quick("benchmarks.mnist", str(tmp_path))
    with open(tmp_path / "mnist.json") as f:
        out = json.load(f)
    assert out["machine"]["cores"] >= 1 and out["config"]["quick"]
    results = {r["framework"]: r for r in out["results"]}
    assert set(results) == {"jopt", "flax", "torch"}
    for name, r in results.items():
        assert not r.get("error"), (name, r.get("error"))
        assert r["n_train"] == 2000 and len(r["epochs"]) == 2, name
        s = r["summary"]
        assert 0.0 <= s["test_accuracy"] <= 1.0 and s["test_accuracy"] > 0.5, (name, s)
        assert s["epoch_s"] > 0 and s["eval_s"] > 0 and s["total_s"] > 0, (name, s)
        assert r["setup_s"] > 0 and s["overhead_s"] > -s["epoch_s"], (name, s)
        assert all(e["train_s"] > 0 and 0 <= e["test_accuracy"] <= 1 for e in r["epochs"])
        ends = [e["end_s"] for e in r["epochs"]]
        assert ends == sorted(ends) and ends[0] > 0, name
        if s["time_to_target_s"] is not None:
            assert s["time_to_target_s"] > 0 and s["target_epoch"] >= 1
    assert results["jopt"]["summary"]["compile_s"] > 0
    assert results["flax"]["summary"]["compile_s"] >= 0
    # flax + optax draws the same initial weights and data order as jopt's trainer
    jopt_curve = [e["test_accuracy"] for e in results["jopt"]["epochs"]]
    flax_curve = [e["test_accuracy"] for e in results["flax"]["epochs"]]
    assert max(abs(a - b) for a, b in zip(jopt_curve, flax_curve, strict=True)) <= 0.01
    with open(tmp_path / "mnist.md") as f:
        text = f.read()
    assert text.startswith("Machine: ")
    for name in ("jopt", "flax", "torch"):
        assert f"| {name} |" in text


# Where the libraries' own defaults differ, by design (the table's description says so):
# optax's rmsprop (centered or not) decays by 0.9, torch's by 0.99; optax's adagrad
# starts its sum at 0.1 with eps inside the root, torch's at 0 with eps outside;
# optax's AMSGrad keeps the maximum of the corrected second moment, torch's of the raw.
TORCH_DIFFERS = {"rmsprop", "rmsprop_centered", "adagrad", "amsgrad"}
SAME_PROBLEM = [
    pytest.param(name, framework, id=f"{name}-{framework}")
    for name in cases.OPTIMIZERS
    for framework in ("jopt", "torch-foreach")
    if cases.supported("optax", name) and not (framework != "jopt" and name in TORCH_DIFFERS)
]


def _jax_params(framework: str, spec: dict[str, Any]) -> list[np.ndarray]:
    worker = JaxWorker(framework, "cpu")
    with standard_promotion():  # optax needs jax's default promotion rules
        worker.setup(spec)
    _, (params, _), _, _ = worker.cases[spec["id"]]
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def _torch_params(spec: dict[str, Any]) -> list[np.ndarray]:
    worker = TorchWorker("torch-foreach", "cpu")
    worker.setup(spec)
    _, params, _, _ = worker.cases[spec["id"]]
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("name, framework", SAME_PROBLEM)
def test_every_framework_runs_the_same_problem(name: str, framework: str) -> None:
    """After three steps (the first call and two warm-ups) a framework's parameters are
    optax's: the table compares the same optimizer on the same numbers."""
    layout = cases.Layout(
        "check", (("a", (300,)), ("b", (20, 30)), ("c", (7,))), "three leaves, names in order"
    )
    spec = {
        "id": "check",
        "kind": "step",
        "optimizer": name,
        "layout": {"name": layout.name, "leaves": [list(x) for x in layout.leaves]},
        "warmup": 2,
    }
    initial = _initial(layout)
    want = [p - p0 for p, p0 in zip(_jax_params("optax", spec), initial, strict=True)]
    got = _jax_params(framework, spec) if framework == "jopt" else _torch_params(spec)
    assert all(np.all(w != 0) for w in want), f"{name}: three steps did not move the parameters"
    # The steps are small beside the parameters (lr 1e-3): compare what they moved, to
    # the float32 rounding of three steps; a weight decay of 5e-4 is 0.5% of SGD's.
    for p, p0, w in zip(got, initial, want, strict=True):
        np.testing.assert_allclose(p.reshape(w.shape) - p0, w, rtol=1e-3, atol=1e-9)


def _initial(layout: cases.Layout) -> list[np.ndarray]:
    return [
        np.full(shape, cases.init_value(i, shape), np.float32)
        for i, (_, shape) in enumerate(layout.leaves)
    ]
