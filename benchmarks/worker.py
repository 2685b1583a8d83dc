"""One framework in one process: builds cases and times them when the parent says so.

``python -m benchmarks.worker FRAMEWORK DEVICE`` reads one JSON command per line on
stdin and answers one JSON line on stdout (logs go to stderr):

- ``{"cmd": "info"}``: versions, device, memory available;
- ``{"cmd": "setup", "id": ..., "kind": "step" | "train", ...}``: builds the case,
  compiles it (timed), runs two warm-up calls and reports compile time, memory;
- ``{"cmd": "sample", "id": ..., "min_time": s, "min_calls": n, "max_calls": m}``:
  takes samples and returns the time per step of each: a sample is ``calls`` steps
  back to back, then one ``block_until_ready`` (a device sync for torch), as a training
  loop runs; setup picks ``calls`` (see :func:`calls_per_sample`);
- ``{"cmd": "free", "id": ...}`` and ``{"cmd": "exit"}``.

Frameworks: ``jopt``, ``jopt-flat`` (:mod:`jopt.flat` buffers), ``optax``, ``floor``
(the STREAM-like in-place kernel ``a <- a + s * b`` in jax, 12 bytes per element),
``torch-foreach`` and ``torch-fused``. A worker only ever runs one framework, so jax
and torch never share a process (their thread pools fight on a small CPU).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import traceback
from typing import Any

from benchmarks import cases


def _log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _layout(spec: dict[str, Any]) -> cases.Layout:
    leaves = tuple((p, tuple(s)) for p, s in spec["leaves"])
    return cases.Layout(spec["name"], leaves, spec.get("description", ""))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def calls_per_sample(step_s: float, block_s: float, sample_time: float) -> int:
    """Steps per sample: enough that a sample lasts ``sample_time`` and that the wait
    at its end (``block_s``, which grows with the number of output buffers: about
    0.2 ms for 1000, beside steps of a few ms) is at most 2% of it.

    Example:
        >>> calls_per_sample(step_s=0.2e-3, block_s=2e-6, sample_time=2e-3)
        10
        >>> calls_per_sample(step_s=10e-3, block_s=0.8e-3, sample_time=2e-3)
        4
    """
    want = max(sample_time, 50 * block_s)
    return max(1, math.ceil(want / max(step_s, 1e-9)))


def _timed_warmup(run: Any, count: int) -> float:
    """Runs ``run`` (one step, waited for) ``count`` times; the fastest, in seconds."""
    best = math.inf
    for _ in range(max(1, count)):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stepper(framework: str, tx: Any, apply: Any) -> Any:
    """``(grads, state, params) -> (params, state)``: optax's update + apply_updates, or
    jopt's one-call step (which runs jopt's fused CPU kernels where they apply)."""
    if framework.startswith("jopt"):
        import jopt

        jopt.kernels.available()  # a one-time build per machine, not part of compile time
        return lambda grads, state, params: jopt.step(tx, grads, state, params)

    def step(grads: Any, state: Any, params: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    return step


class JaxWorker:
    def __init__(self, framework: str, device: str):
        platform = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}[device]
        os.environ.setdefault("JAX_PLATFORMS", platform)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax

        self.jax = jax
        # "jopt:packed" / "jopt:own": jopt with every leaf packed / none (--sweep-leaf-size)
        self.framework, _, self.packing = framework.partition(":")
        self.cases: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        import jax

        dev = jax.devices()[0]
        limit = None
        try:
            stats = dev.memory_stats() or {}
            limit = stats.get("bytes_limit")
        except Exception:
            pass
        out = {"jax": jax.__version__, "device": str(dev), "device_kind": dev.device_kind}
        out["memory_bytes"] = limit or _available_memory()
        if self.framework == "optax":
            import optax

            out["optax"] = optax.__version__
        if self.framework.startswith("jopt"):
            import jopt

            out["jopt"] = jopt.__version__
        return out

    # -- building ----------------------------------------------------------------------

    def _tree(self, layout: cases.Layout, scale: float) -> Any:
        import jax.numpy as jnp

        from benchmarks.models import nest

        leaves = {
            p: jnp.full(s, scale * cases.init_value(i, s), jnp.float32)
            for i, (p, s) in enumerate(layout.leaves)
        }
        return nest(leaves)

    def _step_case(self, spec: dict[str, Any]) -> tuple[Any, tuple, tuple, int]:
        jax = self.jax
        layout = _layout(spec["layout"])
        if self.framework == "floor":
            import jax.numpy as jnp

            n = layout.size
            a, b = jnp.full((n,), 0.5, jnp.float32), jnp.full((n,), 1e-3, jnp.float32)
            fn = jax.jit(lambda a, b: (a + jnp.float32(0.999) * b,), donate_argnums=(0,))
            return fn, (a,), (b,), 0
        name = spec["optimizer"]
        params = self._tree(layout, 1.0)
        grads = self._tree(layout, 0.1)
        if self.framework == "optax":
            import optax

            tx, apply = cases.jax_optimizer(optax, name), optax.apply_updates
        else:
            import jopt
            import jopt.flat
            import jopt.fused

            if self.packing:  # --sweep-leaf-size: the default that optimizers' fuse() uses
                size = None if self.packing == "packed" else 0
                jopt.fused.fuse.__kwdefaults__["max_leaf_size"] = size
            tx, apply = cases.jax_optimizer(jopt, name), jopt.apply_updates
            if self.framework == "jopt-flat":
                params, grads = jopt.flat.flatten(params), jopt.flat.flatten(grads)
        state = tx.init(params)
        apply_step = _stepper(self.framework, tx, apply)

        def step(params: Any, state: Any, grads: Any) -> Any:
            return apply_step(grads, state, params)

        fn = jax.jit(step, donate_argnums=(0, 1))
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0)
        return fn, (params, state), (grads,), state_bytes

    def _train_case(self, spec: dict[str, Any]) -> tuple[Any, tuple, tuple, int]:
        jax = self.jax
        from benchmarks import models

        model = (cases.QUICK_MODELS if spec.get("quick") else cases.MODELS)[spec["model"]]
        loss = models.jax_loss(model)
        params = models.jax_params(model)
        batch = models.jax_batch(model)
        if self.framework == "optax":
            import optax

            tx, apply = cases.jax_optimizer(optax, cases.TRAIN_OPTIMIZER), optax.apply_updates
        else:
            import jopt
            import jopt.flat

            tx, apply = cases.jax_optimizer(jopt, cases.TRAIN_OPTIMIZER), jopt.apply_updates
            if self.framework == "jopt-flat":
                params, loss = jopt.flat.flatten(params), jopt.flat.on_tree(loss)
        state = tx.init(params)
        apply_step = _stepper(self.framework, tx, apply)

        def step(params: Any, state: Any, x: Any, y: Any) -> Any:
            return apply_step(jax.grad(loss)(params, x, y), state, params)

        fn = jax.jit(step, donate_argnums=(0, 1))
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 0)
        return fn, (params, state), tuple(batch), state_bytes

    # -- commands ----------------------------------------------------------------------

    def setup(self, spec: dict[str, Any]) -> dict[str, Any]:
        jax = self.jax
        build = self._step_case if spec["kind"] == "step" else self._train_case
        fn, args, keep, state_bytes = build(spec)
        param_bytes = sum(x.nbytes for x in jax.tree.leaves(args[0]))
        compiled, compile_runs = _compile(
            jax, fn, (*args, *keep), spec.get("compile_repeats", 1), spec.get("compile_budget", 0)
        )
        compile_s = statistics.median(compile_runs)
        memory = _memory(compiled)
        if spec.get("nodonate_memory") and self.framework != "floor":
            undonated = jax.jit(fn.__wrapped__).lower(*args, *keep).compile()
            memory["not_donated"] = _memory(undonated)["donated"]
        elif memory.get("donated") is not None:
            d = memory["donated"]
            memory["not_donated"] = {
                "growth": d["temp"] + d["output"],
                "temp": d["temp"],
                "output": d["output"],
                "alias": 0,
                "derived": True,
            }
        t0 = time.perf_counter()
        args = fn(*args, *keep)
        jax.block_until_ready(args)
        first_s = time.perf_counter() - t0
        live = [args]

        def warm() -> None:
            live[0] = fn(*live[0], *keep)
            jax.block_until_ready(live[0])

        step_s = _timed_warmup(warm, spec.get("warmup", 2))
        args = live[0]
        block_s = min(_timed(lambda: jax.block_until_ready(args)) for _ in range(5))
        calls = calls_per_sample(step_s, block_s, spec.get("sample_time", 0.0))
        self.cases[spec["id"]] = (fn, args, keep, calls)
        return {
            "compile_s": compile_s + first_s,
            "compile_runs_s": compile_runs,
            "memory": memory,
            "state_bytes": state_bytes,
            "param_bytes": param_bytes,
            "calls_per_sample": calls,
            "block_ms": block_s * 1e3,
        }

    def sample(self, spec: dict[str, Any]) -> dict[str, Any]:
        jax = self.jax
        fn, args, keep, calls = self.cases[spec["id"]]
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < spec["max_calls"] and (
            len(times) < spec["min_calls"] or time.perf_counter() - start < spec["min_time"]
        ):
            t0 = time.perf_counter()
            for _ in range(calls):
                args = fn(*args, *keep)
            jax.block_until_ready(args)
            times.append((time.perf_counter() - t0) / calls)
        self.cases[spec["id"]] = (fn, args, keep, calls)
        return {"times": times}

    def free(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.cases.pop(spec["id"], None)
        import gc

        gc.collect()
        return {}


def _compile(
    jax: Any, fn: Any, args: tuple, repeats: int, budget_s: float
) -> tuple[Any, list[float]]:
    """Traces, lowers and compiles ``fn`` for ``args``: once, then again after
    ``jax.clear_caches()`` (so nothing is reused) up to ``repeats`` times in all while
    the next one is expected to end within ``budget_s`` seconds of compiling. One
    compile on a shared machine moved by +-20% from run to run (0.78-1.23 s for the
    same program); the median of a few is the compile time. Returns the last
    executable (it stays in jax's caches for the first call) and each run's seconds.

    Example:
        >>> import jax
        >>> from benchmarks.worker import _compile
        >>> _, runs = _compile(jax, jax.jit(lambda x: x + 1), (1.0,), 3, 60.0)
        >>> len(runs)
        3
    """
    runs: list[float] = []
    while True:
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        runs.append(time.perf_counter() - t0)
        if len(runs) >= repeats or sum(runs) + runs[0] > budget_s:
            return compiled, runs
        jax.clear_caches()


def _memory(compiled: Any) -> dict[str, Any]:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # a backend without the analysis
        return {"donated": None}
    if ma is None:
        return {"donated": None}
    temp, out, alias = ma.temp_size_in_bytes, ma.output_size_in_bytes, ma.alias_size_in_bytes
    return {
        "donated": {
            "growth": temp + out - alias,
            "temp": temp,
            "output": out,
            "alias": alias,
            "arguments": ma.argument_size_in_bytes,
        }
    }


class TorchWorker:
    def __init__(self, framework: str, device: str):
        import torch

        if os.environ.get("BENCH_TORCH_THREADS"):
            torch.set_num_threads(int(os.environ["BENCH_TORCH_THREADS"]))
        self.torch = torch
        self.framework = framework
        self.fused = framework == "torch-fused"
        if device == "gpu":
            self.device = torch.device("cuda")
        elif device == "cpu":
            self.device = torch.device("cpu")
        else:
            raise RuntimeError(f"torch does not run on {device}")
        self.cases: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        torch = self.torch
        out: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info()
            out.update(device=torch.cuda.get_device_name(), memory_bytes=free)
        else:
            out.update(device="cpu", memory_bytes=_available_memory())
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _optimizer(self, name: str, params: list[Any]) -> tuple[Any, Any, Any]:
        """``(optimizer, scheduler or None, clip function or None)``."""
        torch = self.torch
        kind = {"fused": True} if self.fused else {"foreach": True}
        lr = cases.LEARNING_RATE
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, **kind), None, None
        if name == "momentum":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, **kind), None, None
        if name == "sgd_wd":
            decay = cases.SGD_WEIGHT_DECAY
            opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay, **kind)
            return opt, None, None
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, **kind), None, None
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2, **kind), None, None
        if name == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, **kind), None, None
        if name == "rmsprop_centered":
            return torch.optim.RMSprop(params, lr=lr, centered=True, **kind), None, None
        if name == "amsgrad":
            return torch.optim.Adam(params, lr=lr, amsgrad=True, **kind), None, None
        if name == "adagrad":
            return torch.optim.Adagrad(params, lr=1e-2, **kind), None, None
        if name == "adadelta":
            return torch.optim.Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, **kind), None, None
        if name == "chain":
            import math

            opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2, **kind)
            warm, total = cases.WARMUP_STEPS, cases.TOTAL_STEPS

            def factor(step: int) -> float:  # optax's warmup_cosine_decay_schedule
                if step < warm:
                    return step / warm
                t = min(step - warm, total - warm) / (total - warm)
                return 0.5 * (1 + math.cos(math.pi * t))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)

            def clip() -> None:
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)

            return opt, sched, clip
        raise ValueError(f"torch has no {name}")

    def setup(self, spec: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        if spec["kind"] == "step" and self.framework == "torch-floor":
            n = _layout(spec["layout"]).size
            a = torch.full((n,), 0.5, device=self.device)
            b = torch.full((n,), 1e-3, device=self.device)
            params, opt = [a], None

            def run() -> None:  # the floor kernel, in torch's multithreaded in-place loop
                a.add_(b, alpha=0.999)

        elif spec["kind"] == "step":
            layout = _layout(spec["layout"])
            params = []
            for i, (_, shape) in enumerate(layout.leaves):
                value = cases.init_value(i, shape)
                p = torch.nn.Parameter(torch.full(shape, value, device=self.device))
                p.grad = torch.full(shape, 0.1 * value, device=self.device)
                params.append(p)
            opt, sched, clip = self._optimizer(spec["optimizer"], params)

            def run() -> None:
                if clip is not None:
                    clip()
                opt.step()
                if sched is not None:
                    sched.step()

        else:
            from benchmarks import models

            model = (cases.QUICK_MODELS if spec.get("quick") else cases.MODELS)[spec["model"]]
            named = models.torch_params(model, self.device)
            params = list(named.values())
            loss_fn = models.torch_loss(model)
            x, y = models.torch_batch(model, self.device)
            opt, sched, clip = self._optimizer(cases.TRAIN_OPTIMIZER, params)

            def run() -> None:
                opt.zero_grad(set_to_none=False)
                loss_fn(named, x, y).backward()
                opt.step()

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        run()
        self._sync()
        first_s = time.perf_counter() - t0
        memory: dict[str, Any] = {"donated": None}
        if self.device.type == "cuda":
            growth = torch.cuda.max_memory_allocated() - before
            memory = {"donated": None, "torch_step_peak": {"growth": growth}}

        def warm() -> None:
            run()
            self._sync()

        step_s = _timed_warmup(warm, spec.get("warmup", 2))
        block_s = min(_timed(self._sync) for _ in range(5))
        calls = calls_per_sample(step_s, block_s, spec.get("sample_time", 0.0))
        state_bytes = sum(
            v.numel() * v.element_size()
            for s in (opt.state.values() if opt is not None else ())
            for v in s.values()
            if torch.is_tensor(v) and v.dim() > 0
        )
        param_bytes = sum(p.numel() * p.element_size() for p in params)
        self.cases[spec["id"]] = (run, params, opt, calls)
        return {
            "compile_s": None,
            "first_s": first_s,
            "memory": memory,
            "state_bytes": state_bytes,
            "param_bytes": param_bytes,
            "calls_per_sample": calls,
            "block_ms": block_s * 1e3,
        }

    def sample(self, spec: dict[str, Any]) -> dict[str, Any]:
        run, _, _, calls = self.cases[spec["id"]]
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < spec["max_calls"] and (
            len(times) < spec["min_calls"] or time.perf_counter() - start < spec["min_time"]
        ):
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            self._sync()
            times.append((time.perf_counter() - t0) / calls)
        return {"times": times}

    def free(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.cases.pop(spec["id"], None)
        import gc

        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()
        return {}


def main(argv: list[str]) -> None:
    framework, device = argv
    worker: Any
    if framework.startswith("torch"):
        worker = TorchWorker(framework, device)
    else:
        worker = JaxWorker(framework, device)
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    for line in sys.stdin:
        command = json.loads(line)
        name = command["cmd"]
        if name == "exit":
            break
        try:
            reply = getattr(worker, name)(command) if name != "info" else worker.info()
            reply["ok"] = True
        except Exception as error:  # reported to the parent, which records it
            _log(traceback.format_exc())
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
