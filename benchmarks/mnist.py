"""End-to-end MNIST: jopt's trainer vs flax (nnx) + optax vs PyTorch, one run.

    python -m benchmarks.mnist                       # the recipe, 4 epochs each (~2 min, 2 cores)
    python -m benchmarks.mnist --quick               # smoke run: 2,000 training images, 2 epochs
    python -m benchmarks.mnist --frameworks jopt,torch --epochs 6
    python -m benchmarks.mnist --device gpu          # the same on a GPU

The recipe is ``jopt-mnist --batch-size 128 --schedule one-cycle --lr 3e-3 --epochs 4``:
a 784-128-128-10 ReLU MLP (LeCun-normal kernels, zero biases), softmax cross-entropy,
Adam (b1 0.9, b2 0.999, eps 1e-8) at a one-cycle learning rate (cosine from 3e-3 / 25 up
to 3e-3 over the first 25% of the updates, then down to 3e-3 / 25e4), batches of 128,
the training set reshuffled every epoch and its last, short batch (96 images) kept, so
an epoch is 469 updates. Inputs are ``(x / 255 - 0.1307) / 0.3081``. The three programs:

- ``jopt``: ``jopt.examples.mnist.train(Config(...))``, the trainer behind
  ``jopt-mnist`` (compiled ahead of time, chunks of steps in one ``fori_loop``).
- ``flax``: the same training as a flax user writes it: an ``nnx.Module``,
  ``nnx.Optimizer(model, optax.adam(optax.cosine_onecycle_schedule(...)), wrt=nnx.Param)``,
  an ``@nnx.jit`` train step fed numpy batches from the host. Its initial weights and
  data order are drawn from the same keys as jopt's trainer, so the two runs should
  agree to float rounding.
- ``torch``: ``nn.Sequential`` of ``nn.Linear`` (re-initialized LeCun-normal, as flax),
  ``torch.optim.Adam`` and ``OneCycleLR(..., cycle_momentum=False)`` (whose phases end
  one update earlier than optax's), tensors indexed by ``torch.randperm``; its own seed.

Method. Each framework runs in its own process (``python -m benchmarks.mnist --worker
NAME``), one after the other, so that jax and torch never share the cores. A worker
loads MNIST with `jopt.examples.mnist.data.load_mnist` (not timed), then starts its
clock: everything after that counts, preprocessing, moving the data, building the
model and optimizer, compiling. Each epoch is timed in two parts: training (ended by
reading the epoch's mean loss, which waits for the device) and evaluation of the test
set. Imports happen before the clock starts (also the one torch.optim makes on its
first optimizer). Reported per framework:

- ``epoch_s``: seconds per epoch, training only, median of epochs 2..N (epoch 1 when
  there is only one);
- ``overhead_s``: setup plus epoch 1 minus ``epoch_s``: what starting costs (for jax,
  mostly compilation; for torch, allocation and warm-up);
- ``compile_s``: jopt: the seconds its compiler threads spent (``History.compile_time``,
  overlapping the setup); flax: the first train step (trace, compile, run) minus the mean
  steady step; torch: none;
- ``eval_s``: seconds per test-set evaluation (median), not part of ``epoch_s``;
- ``time_to_target_s``: seconds from the start of the clock to the end of the first
  epoch whose test accuracy is >= 98%, evaluation included (of that epoch and the
  earlier ones), or ``None`` ("not reached");
- ``test_accuracy``: after the last epoch.

torch runs on its own thread count (2 on 2 cores) unless ``--torch-threads`` says
otherwise; on a busy 2-core machine that pool can stall for tens of seconds an epoch.

``--quick`` is a smoke run: the first 2,000 training images, the whole test set, 2
epochs (``--epochs`` overrides), torch on 1 thread; the numbers mean nothing, the
target is not expected to be reached.

Outputs (``--out``, default ``benchmarks/results/<device>``, with ``-quick`` for
``--quick``): ``mnist.json`` (machine, recipe, every epoch of every framework and the
summaries) and ``mnist.md`` (the machine and the table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import step

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FRAMEWORKS = ("jopt", "flax", "torch")
TARGET = 0.98
"""The test accuracy whose time is reported."""
RECIPES: dict[str, dict[str, Any]] = {
    "98": {
        "hidden": (128, 128),
        "batch_size": 128,
        "lr": 3e-3,
        "schedule": "one-cycle",
        "pct_start": 0.25,
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "epochs": 4,
        "seed": 0,
    },
    "default": {
        "hidden": (128, 128),
        "batch_size": 64,
        "lr": 1e-3,
        "schedule": "constant",
        "epochs": 5,
        "seed": 0,
    },
}
"""``--recipe 98``: ``jopt-mnist --batch-size 128 --schedule one-cycle --lr 3e-3 --epochs 4``;
``--recipe default``: plain ``jopt-mnist`` (Adam 1e-3, batch 64, 5 epochs)."""
RECIPE: dict[str, Any] = dict(RECIPES["98"])
"""The recipe of this process (``--recipe`` replaces its contents, in parent and workers)."""
QUICK_TRAIN = 2000
QUICK_EPOCHS = 2
EVAL_BATCH = 2000
MEAN, STD = 0.1307, 0.3081
WORKER_TIMEOUT_S = 3600.0


# --- the workers: one framework each ------------------------------------------------------


class Clock:
    """Seconds since the start, and each epoch's training / evaluation split."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.mark = self.start
        self.setup_s: float | None = None
        self.epochs: list[dict[str, Any]] = []

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.perf_counter()
        lap, self.mark = now - self.mark, now
        return lap

    def setup_done(self) -> None:
        self.setup_s = self.lap()

    def epoch(self, train_s: float, eval_s: float, train_loss: float, accuracy: float) -> None:
        record = {
            "epoch": len(self.epochs) + 1,
            "train_s": train_s,
            "eval_s": eval_s,
            "end_s": time.perf_counter() - self.start,
            "train_loss": train_loss,
            "test_accuracy": accuracy,
        }
        self.epochs.append(record)
        print(
            f"  epoch {record['epoch']}: train {train_s:.2f} s, eval {eval_s:.2f} s, "
            f"loss {train_loss:.4f}, test accuracy {100 * accuracy:.2f}%",
            file=sys.stderr,
            flush=True,
        )


def _load(quick: bool) -> tuple[Any, float]:
    """MNIST (the first `QUICK_TRAIN` training images with ``quick``) and the load time."""
    from jopt.examples.mnist.data import load_mnist

    t0 = time.perf_counter()
    mnist = load_mnist()
    if quick:
        mnist = mnist.subset(n_train=QUICK_TRAIN)
    return mnist, time.perf_counter() - t0


def _normalized(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1).astype(np.float32) / 255.0 - MEAN) / STD


def _steps(n_train: int) -> int:
    return -(-n_train // RECIPE["batch_size"])


def run_jopt(mnist: Any, epochs: int, clock: Clock) -> dict[str, Any]:
    """``jopt.examples.mnist.train`` with the recipe; a `Reporter` reads the clock."""
    from jopt.examples.mnist import Config, train
    from jopt.examples.mnist.report import Reporter

    class Timing(Reporter):
        def __init__(self) -> None:
            self.steps = 0
            self.train_s = 0.0

        def start(self, text: str) -> None:
            clock.setup_done()

        def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
            self.steps = steps

        def progress(self, done: int, loss: float, accuracy: float) -> None:
            if done == self.steps:  # called after the chunk's loss is read: trained
                self.train_s = clock.lap()

        def epoch_end(self, record: Any) -> None:
            clock.epoch(self.train_s, clock.lap(), record.train_loss, record.test_accuracy)

    config = Config(
        optimizer="adam",
        lr=RECIPE["lr"],
        schedule=RECIPE["schedule"],
        **({"warmup": RECIPE["pct_start"]} if RECIPE["schedule"] == "one-cycle" else {}),
        epochs=epochs,
        batch_size=RECIPE["batch_size"],
        hidden=RECIPE["hidden"],
        seed=RECIPE["seed"],
        quiet=True,
    )
    history = train(config, data=mnist, reporter=Timing())
    return {"compile_s": history.compile_time}


def run_flax(mnist: Any, epochs: int, clock: Clock) -> dict[str, Any]:
    """The recipe as an idiomatic flax nnx + optax loop."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes: tuple[int, ...], rngs: nnx.Rngs) -> None:
            self.layers = nnx.List(
                [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)]
            )

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)

    @nnx.jit
    def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
        def loss_fn(model: MLP) -> jax.Array:
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def correct(model: MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.sum(jnp.argmax(model(x), axis=-1) == y)

    x_train, y_train = _normalized(mnist.train_images), mnist.train_labels.astype(np.int32)
    x_test, y_test = _normalized(mnist.test_images), mnist.test_labels.astype(np.int32)
    n, batch = len(y_train), RECIPE["batch_size"]
    steps = _steps(n)
    root = jax.random.key(RECIPE["seed"])  # the keys jopt's trainer draws from
    sizes = (x_train.shape[1], *RECIPE["hidden"], 10)
    model = MLP(sizes, rngs=nnx.Rngs(params=jax.random.fold_in(root, 0)))
    schedule = RECIPE["lr"]
    if RECIPE["schedule"] == "one-cycle":
        schedule = optax.cosine_onecycle_schedule(
            epochs * steps,
            RECIPE["lr"],
            pct_start=RECIPE["pct_start"],
            div_factor=RECIPE["div_factor"],
            final_div_factor=RECIPE["final_div_factor"],
        )
    optimizer = nnx.Optimizer(model, optax.adam(schedule), wrt=nnx.Param)
    order_key = jax.random.fold_in(root, 1)
    clock.setup_done()
    first_step_s = None
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(order_key, epoch), n))
        losses = []
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            losses.append(train_step(model, optimizer, x_train[index], y_train[index]))
            if first_step_s is None:  # compiled and ran: the compile time's measure
                jax.block_until_ready(losses[0])
                first_step_s = clock.lap()
        train_loss = float(jnp.mean(jnp.stack(losses)))  # waits for the epoch
        train_s = clock.lap() + (first_step_s if epoch == 0 else 0.0)
        hits = sum(
            int(correct(model, x_test[i : i + EVAL_BATCH], y_test[i : i + EVAL_BATCH]))
            for i in range(0, len(y_test), EVAL_BATCH)
        )
        clock.epoch(train_s, clock.lap(), train_loss, hits / len(y_test))
    assert first_step_s is not None
    steady_step = statistics.median(e["train_s"] for e in clock.epochs[1:] or clock.epochs) / steps
    return {"compile_s": max(0.0, first_step_s - steady_step), "first_step_s": first_step_s}


def run_torch(mnist: Any, epochs: int, clock: Clock, device: str) -> dict[str, Any]:
    """The recipe with torch.nn, torch.optim.Adam and OneCycleLR."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dev = torch.device("cuda" if device == "gpu" else "cpu")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(RECIPE["seed"])
    x_train = torch.from_numpy(_normalized(mnist.train_images)).to(dev)
    y_train = torch.from_numpy(mnist.train_labels.astype(np.int64)).to(dev)
    x_test = torch.from_numpy(_normalized(mnist.test_images)).to(dev)
    y_test = torch.from_numpy(mnist.test_labels.astype(np.int64)).to(dev)
    sizes = (x_train.shape[1], *RECIPE["hidden"], 10)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        linear = nn.Linear(a, b)
        std = math.sqrt(1.0 / a) / 0.87962566103423978  # flax's lecun_normal (truncated)
        nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).to(dev)
    n, batch = len(y_train), RECIPE["batch_size"]
    steps = _steps(n)
    optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    scheduler = None
    if RECIPE["schedule"] == "one-cycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=RECIPE["lr"],
            total_steps=epochs * steps,
            pct_start=RECIPE["pct_start"],
            anneal_strategy="cos",
            cycle_momentum=False,
            div_factor=RECIPE["div_factor"],
            final_div_factor=RECIPE["final_div_factor"],
        )
    sync()
    clock.setup_done()
    first_step_s = None
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, device=dev)
        loss_sum = torch.zeros((), device=dev)
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach()
            if first_step_s is None:
                sync()
                first_step_s = clock.lap()
        train_loss = float(loss_sum) / steps  # waits for the epoch
        train_s = clock.lap() + (first_step_s if len(clock.epochs) == 0 else 0.0)
        model.eval()
        hits = 0
        with torch.no_grad():
            for i in range(0, len(y_test), EVAL_BATCH):
                logits = model(x_test[i : i + EVAL_BATCH])
                hits += int((logits.argmax(1) == y_test[i : i + EVAL_BATCH]).sum())
        clock.epoch(train_s, clock.lap(), train_loss, hits / len(y_test))
    return {"compile_s": None, "first_step_s": first_step_s, "threads": torch.get_num_threads()}


def _info(framework: str, device: str) -> dict[str, Any]:
    """Versions and device, as `benchmarks.worker` reports them (plus flax for flax)."""
    from benchmarks.worker import JaxWorker, TorchWorker

    if framework == "torch":
        return TorchWorker("torch", device).info()
    info = JaxWorker("optax" if framework == "flax" else "jopt", device).info()
    if framework == "flax":
        import flax

        info["flax"] = flax.__version__
    return info


def _import(framework: str) -> None:
    """Imports what ``framework`` uses, so that the clock does not time imports."""
    if framework == "jopt":
        import jopt.examples.mnist.train  # noqa: F401
    elif framework == "flax":
        import optax  # noqa: F401
        from flax import nnx  # noqa: F401
    else:
        import torch

        # torch.optim imports torch._dynamo on its first optimizer (over a second)
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def worker(framework: str, device: str, epochs: int, quick: bool, result: str) -> None:
    """Runs one framework and writes its record (JSON) to ``result``."""
    info = _info(framework, device)
    _import(framework)
    mnist, load_s = _load(quick)
    clock = Clock()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "jopt": lambda: run_jopt(mnist, epochs, clock),
        "flax": lambda: run_flax(mnist, epochs, clock),
        "torch": lambda: run_torch(mnist, epochs, clock, device),
    }
    extra = runners[framework]()
    record = {
        "framework": framework,
        "info": info,
        "n_train": len(mnist.train_labels),
        "n_test": len(mnist.test_labels),
        "steps_per_epoch": _steps(len(mnist.train_labels)),
        "load_s": load_s,
        "setup_s": clock.setup_s,
        "epochs": clock.epochs,
        **extra,
    }
    with open(result, "w") as f:
        json.dump(record, f, indent=1)


# --- the parent: runs the workers in turn, summarizes, writes -----------------------------


def summarize(record: dict[str, Any], target: float = TARGET) -> dict[str, Any]:
    """The reported numbers of one framework's record (see the module docstring)."""
    epochs = record["epochs"]
    train = [e["train_s"] for e in epochs]
    epoch_s = statistics.median(train[1:] or train)
    reached = next((e for e in epochs if e["test_accuracy"] >= target), None)
    return {
        "epoch_s": epoch_s,
        "overhead_s": record["setup_s"] + train[0] - epoch_s,
        "compile_s": record.get("compile_s"),
        "eval_s": statistics.median(e["eval_s"] for e in epochs),
        "time_to_target_s": None if reached is None else reached["end_s"],
        "target_epoch": None if reached is None else reached["epoch"],
        "test_accuracy": epochs[-1]["test_accuracy"],
        "total_s": epochs[-1]["end_s"],
    }


def run_worker(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """One framework in a fresh process; its record, or ``{"error": ...}``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.torch_threads:
        env["BENCH_TORCH_THREADS"] = str(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        result = os.path.join(tmp, f"{framework}.json")
        command = [
            sys.executable, "-m", "benchmarks.mnist", "--worker", framework,
            "--device", args.device, "--epochs", str(args.epochs), "--result", result,
            "--recipe", args.recipe,
        ] + (["--quick"] if args.quick else [])  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=ROOT, env=env, timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"framework": framework, "error": f"timed out after {WORKER_TIMEOUT_S:.0f} s"}
        wall_s = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.exists(result):
            return {"framework": framework, "error": f"worker exited with {proc.returncode}"}
        with open(result) as f:
            record = json.load(f)
    record["process_wall_s"] = wall_s
    record["summary"] = summarize(record)
    return record


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _library_order(item: tuple[str, str]) -> int:
    return ("jax", "optax", "flax", "torch").index(item[0])


def markdown(out: dict[str, Any]) -> str:
    """The machine line, the recipe and the table."""
    m = out["machine"]
    versions: dict[str, str] = {}
    devices = []
    for info in m["workers"].values():
        versions.update({k: v for k, v in info.items() if k in ("jax", "optax", "flax", "torch")})
        devices.append(str(info.get("device_kind") or info.get("device")))
    threads = m["workers"].get("torch", {}).get("threads")
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, device "
        f"{', '.join(dict.fromkeys(devices)) or '?'}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items(), key=_library_order))
        + (f"; torch threads {threads}" if threads else "")
        + ".",
        f"Load average at start {m['load_average_start'][0]:.1f}, at end "
        f"{m['load_average_end'][0]:.1f}; total {out['wall_s']:.0f} s.",
        "",
        f"Recipe ({out['config']['recipe']}): MLP 784-128-128-10, Adam, "
        + (
            f"one-cycle lr (peak {RECIPE['lr']:g}, pct_start {RECIPE['pct_start']:g})"
            if RECIPE["schedule"] == "one-cycle"
            else f"constant lr {RECIPE['lr']:g}"
        )
        + f", batch {RECIPE['batch_size']}, "
        f"{out['config']['epochs']} epochs, {out['n_train'] or 0:,} training images"
        + (" (--quick)" if out["config"]["quick"] else "")
        + ". s/epoch: training only, median of epochs 2..N. Overhead: setup + epoch 1 - "
        "s/epoch. Time to 98%: from the start (data in memory) to the end of the first "
        "epoch at >= 98% test accuracy, setup, compilation and evaluations included. "
        "Training: from the start to the end of the last epoch. Process: the worker's "
        "wall time, start to exit (imports and loading the cached data included). "
        "(x jopt): the ratio to jopt's time.",
        "",
        "| framework | s/epoch | overhead (s) | compile (s) | eval (s) | time to 98% (s) "
        "| training (s) | process (s) | test accuracy by epoch | final test accuracy |",
        "|" + "---|" * 10,
    ]
    base = next((r for r in out["results"] if r["framework"] == "jopt" and "summary" in r), None)

    def vs_jopt(value: float | None, field: str, record: dict[str, Any]) -> str:
        if value is None:
            return "n/a"
        reference = None
        if base is not None and record is not base:
            reference = base["summary"][field] if field in base["summary"] else base.get(field)
        return f"{value:.1f}" + (f" ({value / reference:.2f}x jopt)" if reference else "")

    for r in out["results"]:
        if r.get("error"):
            lines.append(f"| {r['framework']} | error: {r['error']} |" + " |" * 8)
            continue
        s = r["summary"]
        reached = (
            "not reached"
            if s["time_to_target_s"] is None
            else f"{vs_jopt(s['time_to_target_s'], 'time_to_target_s', r)} "
            f"(epoch {s['target_epoch']})"
        )
        curve = ", ".join(f"{100 * e['test_accuracy']:.2f}" for e in r["epochs"])
        lines.append(
            f"| {r['framework']} | {s['epoch_s']:.2f} | {s['overhead_s']:.2f} | "
            f"{_seconds(s['compile_s'])} | {s['eval_s']:.3f} | {reached} | "
            f"{vs_jopt(s['total_s'], 'total_s', r)} | "
            f"{vs_jopt(r.get('process_wall_s'), 'process_wall_s', r)} | {curve} | "
            f"{100 * s['test_accuracy']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.mnist", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="98",
        help="98: the one-cycle recipe that reaches 98%% (default); default: plain jopt-mnist",
    )
    p.add_argument("--epochs", type=int, help="default: the recipe's; --quick " + str(QUICK_EPOCHS))
    p.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help="comma-separated subset of %(default)s, run in that order",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_TRAIN} training images, {QUICK_EPOCHS} epochs, torch on 1 thread",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads in the torch worker (default: torch's own; --quick: 1)",
    )
    p.add_argument("--out", help="output directory (default benchmarks/results/<device>[-quick])")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    RECIPE.clear()
    RECIPE.update(RECIPES[args.recipe])
    if args.epochs is None:
        args.epochs = QUICK_EPOCHS if args.quick else RECIPE["epochs"]
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.quick and args.torch_threads is None:
        args.torch_threads = 1
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if unknown := sorted(set(frameworks) - set(FRAMEWORKS)):
        p.error(f"unknown frameworks {unknown}; choose from {', '.join(FRAMEWORKS)}")
    args.frameworks = frameworks
    if args.out is None:
        args.out = os.path.join(HERE, "results", args.device + ("-quick" if args.quick else ""))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse(argv)
    if args.worker:
        worker(args.worker, args.device, args.epochs, args.quick, args.result)
        return None
    started = time.perf_counter()
    load_start = list(os.getloadavg())
    results = []
    for framework in args.frameworks:
        print(f"{framework}:", flush=True)
        record = run_worker(framework, args)
        results.append(record)
        if "summary" in record:
            s = record["summary"]
            print(
                f"{framework}: {s['epoch_s']:.2f} s/epoch, overhead {s['overhead_s']:.2f} s, "
                f"test accuracy {100 * s['test_accuracy']:.2f}%",
                flush=True,
            )
        else:
            print(f"{framework}: {record['error']}", flush=True)
    machine = step._machine({r["framework"]: r["info"] for r in results if "info" in r})
    machine["load_average_start"] = load_start
    machine["load_average_end"] = list(os.getloadavg())
    out = {
        "machine": machine,
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "result")},
        "recipe": RECIPE,
        "target": TARGET,
        "n_train": next((r["n_train"] for r in results if "n_train" in r), None),
        "wall_s": time.perf_counter() - started,
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    name = "mnist" if args.recipe == "98" else f"mnist-{args.recipe}"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(out, f, indent=1)
    text = markdown(out)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}/{name}.json, {name}.md; total {out['wall_s']:.0f} s", flush=True)
    return out


if __name__ == "__main__":
    main()
