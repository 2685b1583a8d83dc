"""Step time, compile time and step memory: jopt vs optax vs torch.optim, one run.

    python -m benchmarks.step                      # everything (about 15 min on 2 CPU cores)
    python -m benchmarks.step --quick              # smoke run: tiny cases, seconds
    python -m benchmarks.step --device gpu         # the same suite on a GPU
    python -m benchmarks.step --optimizers adam,chain --layouts flat16m,leaves1000
    python -m benchmarks.step --frameworks jopt,optax --parts step
    python -m benchmarks.step --all                # every optimizer on every layout (long)
    python -m benchmarks.step --sweep-leaf-size    # tune jopt.fused.DEFAULT_MAX_LEAF_SIZE

Method. Every framework runs in its own worker process (``benchmarks/worker.py``);
the parent builds one case at a time in all of them, then asks them in turn for
samples, round after round in a fresh random order (seeded), with a short idle gap
before each turn, so that jax and torch never run at the same time, no framework
always follows the same one (whose threads may still be spinning down), and the load
of a shared machine falls on all of them alike. A
sample is a few steps back to back (as a training loop dispatches them) ending in one
``block_until_ready`` (a device sync for torch), after a compile and two warm-up
steps: enough steps to last ``--sample-time`` and to make the wait for the outputs
at most 2% of the sample (``benchmarks.worker.calls_per_sample``; waiting for 4000
ready buffers takes about 0.8 ms, which would otherwise count against the library
with more state leaves). The reported value is the median time per step over all
samples, with its quartiles and the median of each round: the ratio of two
frameworks' round medians, round by round, shows how far the machine's drift moves
a comparison. jax steps are jitted with params and optimizer state donated. The floor is
a STREAM-like in-place kernel ``a <- a + s * b`` over as many float32 elements as
the case has parameters, compiled by XLA and run by torch (its multithreaded in-place
``add_``), both timed in the same rotation; the faster one's bandwidth turns
the bytes an ideal fused step must move (``benchmarks.cases.BYTES_PER_PARAM``) into
a time. Compile time is tracing, lowering and compiling the step (the median of up
to ``--compile-repeats`` runs from cleared caches, as many as fit in
``--compile-budget`` seconds: one compile moves by +-20% on a shared machine) plus
the first call, minus the median step. Step memory is XLA's own accounting of the
compiled step: the bytes a step allocates beyond its arguments (temporaries plus
outputs that do not reuse a donated input), with donation and without.

Outputs (``--out``, default ``benchmarks/results/<device>``): ``step.json`` (every
sample statistic and the machine), ``step.md`` (the tables) and ``step.png`` (step
time against parameter count, one line per library and optimizer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from benchmarks import cases, report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LEAF_COUNT_FOR_REAL_UNDONATED = 300
"""Above this many leaves the undonated step's memory is derived, not compiled again."""


class WorkerError(RuntimeError):
    pass


class Worker:
    """A framework's process, driven by one JSON line per command."""

    def __init__(self, framework: str, device: str, torch_threads: int | None = None):
        self.framework = framework
        env = dict(os.environ)
        if torch_threads:
            env["BENCH_TORCH_THREADS"] = str(torch_threads)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", framework, device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            text=True,
        )

    def call(self, timeout: float = 3600.0, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise WorkerError(f"{self.framework}: no answer to {command['cmd']} in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.framework}: worker exited (code {self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def _machine(infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "workers": infos,
        "load_average_start": list(os.getloadavg()),
    }


def _spec_layout(layout: cases.Layout) -> dict[str, Any]:
    return {"name": layout.name, "leaves": [list(x) for x in layout.leaves]}


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workers: dict[str, Worker] = {}
        self.results: list[dict[str, Any]] = []
        self.counter = 0

    # -- process management -------------------------------------------------------------

    def start(self, frameworks: Iterable[str]) -> dict[str, dict[str, Any]]:
        for fw in frameworks:
            self.workers[fw] = Worker(fw, self.args.device, self.args.torch_threads)
        infos = {}
        for fw, worker in list(self.workers.items()):
            reply = worker.call(cmd="info", timeout=600)
            if not reply.get("ok"):
                print(f"  {fw}: unavailable ({reply.get('error')})", flush=True)
                worker.close()
                del self.workers[fw]
                continue
            infos[fw] = reply
        return infos

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()

    # -- one case -----------------------------------------------------------------------

    def run_case(self, base: dict[str, Any], frameworks: list[str], est_bytes: int) -> None:
        """Sets the case up in every framework, samples them round by round, frees it."""
        frameworks = [fw for fw in frameworks if fw in self.workers]
        memory = min(self.workers[fw].info_memory for fw in frameworks)  # type: ignore[attr-defined]
        sequential = est_bytes * len(frameworks) > 0.6 * memory
        blocks = 2 if sequential else 1
        rounds = max(1, self.args.rounds // blocks)
        records = {fw: {**base, "framework": fw, "times": [], "round_ms": []} for fw in frameworks}
        groups = [[fw] for fw in frameworks] if sequential else [frameworks]
        for block in range(blocks):
            for group in groups:
                live = []
                for fw in group:
                    self.counter += 1
                    case_id = f"c{self.counter}"
                    spec = {
                        **base,
                        "id": case_id,
                        "cmd": "setup",
                        "warmup": self.args.warmup,
                        "sample_time": self.args.sample_time,
                        "compile_repeats": self.args.compile_repeats,
                        "compile_budget": self.args.compile_budget,
                    }
                    if base["kind"] == "step" and not self.args.quick:
                        leaves = len(base["layout"]["leaves"])
                        spec["nodonate_memory"] = leaves <= LEAF_COUNT_FOR_REAL_UNDONATED
                    reply = self.workers[fw].call(**spec)
                    if not reply.get("ok"):
                        records[fw]["error"] = reply.get("error")
                        continue
                    if block == 0:
                        keys = ("compile_s", "compile_runs_s", "memory", "state_bytes")
                        keys = (*keys, "param_bytes")
                        for key in (*keys, "calls_per_sample", "block_ms"):
                            records[fw][key] = reply.get(key)
                    live.append((fw, case_id))
                shuffle = random.Random(self.counter).shuffle
                for _ in range(rounds):
                    order = list(live)
                    shuffle(order)  # a rotation would keep each framework after the same one
                    for fw, case_id in order:
                        time.sleep(self.args.gap)  # the last turn's threads settle first
                        reply = self.workers[fw].call(
                            cmd="sample",
                            id=case_id,
                            min_time=self.args.min_time,
                            min_calls=self.args.min_calls,
                            max_calls=self.args.max_calls,
                        )
                        if reply.get("ok"):
                            records[fw]["times"] += reply["times"]
                            records[fw]["round_ms"].append(statistics.median(reply["times"]) * 1e3)
                        else:
                            records[fw]["error"] = reply.get("error")
                for fw, case_id in live:
                    self.workers[fw].call(cmd="free", id=case_id)
        for record in records.values():
            report.summarize(record)
            self.results.append(record)


def _estimate_bytes(layout: cases.Layout, optimizer: str) -> int:
    per_param = 4 * (3 + cases.STATE_BYTES_PER_PARAM.get(optimizer, 8) / 4)
    return int(layout.size * per_param)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny cases, few samples: a smoke run")
    p.add_argument("--optimizers", help=f"comma-separated subset of {','.join(cases.OPTIMIZERS)}")
    p.add_argument("--layouts", help="comma-separated subset of " + ",".join(cases.LAYOUTS))
    p.add_argument("--frameworks", help=f"comma-separated subset of {','.join(cases.FRAMEWORKS)}")
    p.add_argument(
        "--parts", default="step,train", help="step (optimizer step), train (whole step)"
    )
    p.add_argument("--models", help="comma-separated subset of " + ",".join(cases.MODELS))
    p.add_argument("--rounds", type=int, help="sampling rounds per case (default 4; quick 2)")
    p.add_argument(
        "--min-time", type=float, help="seconds per sampling turn (default 0.1; quick 0.02)"
    )
    p.add_argument("--min-calls", type=int, default=2, help="samples per sampling turn, at least")
    p.add_argument("--max-calls", type=int, help="samples per sampling turn, at most (200)")
    p.add_argument(
        "--gap",
        type=float,
        default=0.02,
        help="seconds of idle before each sampling turn (default 0.02)",
    )
    p.add_argument(
        "--sample-time",
        type=float,
        help="seconds one sample lasts at least, in whole steps (default 0.002)",
    )
    p.add_argument("--warmup", type=int, help="warm-up steps after the first call (default 2)")
    p.add_argument(
        "--compile-repeats",
        type=int,
        help="compiles per case and framework, from cleared caches; the median is reported "
        "(default 3; --quick: 1)",
    )
    p.add_argument(
        "--compile-budget",
        type=float,
        default=5.0,
        help="seconds of compiling a case may take before its repeats stop (default 5)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads in the torch workers (default: torch's own; "
        "--quick: 1, so that a busy machine cannot stall its thread pool)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every optimizer on every layout (default: benchmarks.cases.DEFAULT_PLAN)",
    )
    p.add_argument(
        "--sweep-leaf-size",
        action="store_true",
        help="jopt Adam on many equal leaves, packed vs own buffers",
    )
    p.add_argument("--out", help="output directory (default benchmarks/results/<device>[-quick])")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 4
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1
    if args.max_calls is None:
        args.max_calls = 10 if args.quick else 200
    if args.sample_time is None:
        args.sample_time = 0.002
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.compile_repeats is None:
        args.compile_repeats = 1 if args.quick else 3
    if args.quick and args.torch_threads is None:
        args.torch_threads = 1
    if args.out is None:
        suffix = "-quick" if args.quick else ("-sweep" if args.sweep_leaf_size else "")
        args.out = os.path.join(HERE, "results", args.device + suffix)
    return args


def _pick(value: str | None, default: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    if not value:
        return list(default)
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise SystemExit(f"unknown {what}: {unknown}; choose from {sorted(known)}")
    return chosen


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    started = time.perf_counter()
    layouts_all = cases.QUICK_LAYOUTS if args.quick else cases.LAYOUTS
    if args.sweep_leaf_size:
        layouts_all = cases.sweep_layouts(1 << 18 if args.quick else 1 << 21)
    optimizers = _pick(
        args.optimizers,
        cases.QUICK_OPTIMIZERS if args.quick or args.sweep_leaf_size else cases.OPTIMIZERS,
        cases.OPTIMIZERS,
        "optimizers",
    )
    plan = cases.QUICK_PLAN if args.quick else cases.DEFAULT_PLAN
    planned = not (args.optimizers or args.all or args.sweep_leaf_size)
    layouts = _pick(args.layouts, layouts_all, layouts_all, "layouts")
    frameworks = _pick(
        args.frameworks,
        cases.QUICK_FRAMEWORKS if args.quick else cases.FRAMEWORKS,
        cases.FRAMEWORKS,
        "frameworks",
    )
    parts = _pick(args.parts, ("step", "train"), ("step", "train"), "parts")
    models_all = cases.QUICK_MODELS if args.quick else cases.MODELS
    models = _pick(args.models, models_all, models_all, "models")
    if args.sweep_leaf_size:
        frameworks, parts = ["jopt:packed", "jopt:own"], ["step"]
    if args.device == "tpu":
        frameworks = [fw for fw in frameworks if not fw.startswith("torch")]

    runner = Runner(args)
    floors = [f for f in cases.FLOORS if args.device != "tpu" or not f.startswith("torch")]
    needed = list(dict.fromkeys(frameworks + (floors if "step" in parts else [])))
    print(f"starting workers: {', '.join(needed)}", flush=True)
    infos = runner.start(needed)
    for fw, worker in runner.workers.items():
        worker.info_memory = infos[fw].get("memory_bytes") or 1 << 62  # type: ignore[attr-defined]
    machine = _machine(infos)
    try:
        if "step" in parts:
            plans = []
            for layout_name in layouts:
                layout = layouts_all[layout_name]
                for opt in optimizers:
                    if planned and opt not in plan.get(layout_name, optimizers):
                        continue
                    plans.append((layout, opt))
            for i, (layout, opt) in enumerate(plans):
                est = _estimate_bytes(layout, opt)
                memory = min(w.info_memory for w in runner.workers.values())  # type: ignore[attr-defined]
                if est > 0.7 * memory:
                    print(
                        f"  skip {opt} on {layout.name}: needs ~{est / 2**30:.1f} GiB", flush=True
                    )
                    continue
                fws = [fw for fw in frameworks if cases.supported(fw, opt)] + floors
                base = {
                    "kind": "step",
                    "optimizer": opt,
                    "layout": _spec_layout(layout),
                    "params": layout.size,
                    "leaves": layout.num_leaves,
                }
                t0 = time.perf_counter()
                runner.run_case(base, fws, est)
                print(
                    f"[{i + 1}/{len(plans)}] {opt} on {layout.name}: "
                    f"{time.perf_counter() - t0:.1f} s; " + report.one_line(runner.results, base),
                    flush=True,
                )
        if "train" in parts:
            for name in models:
                model = models_all[name]
                base = {
                    "kind": "train",
                    "model": name,
                    "quick": args.quick,
                    "optimizer": cases.TRAIN_OPTIMIZER,
                    "params": model.layout.size,
                    "leaves": model.layout.num_leaves,
                }
                t0 = time.perf_counter()
                est = _estimate_bytes(model.layout, cases.TRAIN_OPTIMIZER) * 2
                runner.run_case(base, [fw for fw in frameworks], est)
                print(
                    f"train {name}: {time.perf_counter() - t0:.1f} s; "
                    + report.one_line(runner.results, base),
                    flush=True,
                )
    finally:
        runner.close()
    machine["load_average_end"] = list(os.getloadavg())
    out = {
        "machine": machine,
        "config": {k: v for k, v in vars(args).items()},
        "bytes_per_param": cases.BYTES_PER_PARAM,
        "descriptions": cases.DESCRIPTIONS,
        "wall_s": time.perf_counter() - started,
        "results": runner.results,
    }
    report.attach_floors(out)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "step.json"), "w") as f:
        json.dump(out, f, indent=1)
    markdown = report.markdown(out)
    with open(os.path.join(args.out, "step.md"), "w") as f:
        f.write(markdown)
    if not args.no_plot:
        report.plot(out, os.path.join(args.out, "step.png"))
    print(markdown)
    print(f"wrote {args.out}/step.json, step.md" + ("" if args.no_plot else ", step.png"))
    print(f"total {out['wall_s']:.0f} s", flush=True)
    return out


if __name__ == "__main__":
    main()
