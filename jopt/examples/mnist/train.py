"""Training on MNIST: PyTorch's zero_grad / backward / step cycle, done functionally.

The step a PyTorch user writes as ::

    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()

is, with pure functions (`_train_step` below)::

    grads, aux = jax.grad(loss_fn, has_aux=True)(params)      # backward (no zero_grad:
                                                              # gradients are fresh values)
    updates, opt_state = tx.update(grads, opt_state, params)   # step
    params = jopt.apply_updates(params, updates)

and `train` runs it fast: the data lives on the device, each epoch's order is a
permutation drawn from a PRNG key derived from the seed and the epoch (so a run is
reproducible, and resumable mid-epoch), and chunks of steps run inside one compiled
loop (``jax.lax.fori_loop``) with donated buffers, so the host touches the device only
to read the running loss for the progress bar, while the next chunk already runs.
Training on the real data takes seconds, so the example is not a doctest (the test
suite trains on the real data in ``tests/examples/mnist/test_train.py``)::

    from jopt.examples.mnist import Config, train

    history = train(Config(epochs=5))
    history.test_accuracy  # 0.9755 with seed 0
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt.examples.mnist import model as mlp
from jopt.examples.mnist.checkpoint import EMPTY_SUMS, Resume, ResumeError, restore, template
from jopt.examples.mnist.config import (
    Config,
    ConfigError,
    build_optimizer,
    default_lr,
    learning_rate,
    optimizer_arguments,
)
from jopt.examples.mnist.data import MNIST, load_mnist
from jopt.examples.mnist.report import Console, EpochRecord, History, Reporter

__all__ = ["EpochRecord", "History", "ResumeError", "restore", "train"]

EVAL_BATCH = 2000
"""Test examples per evaluation batch (rounded up to a multiple of the devices)."""
PROGRESS_UPDATES = 20
"""The progress bar moves about this many times per epoch (one compiled chunk each)."""

# --- the step -----------------------------------------------------------------------------


def _train_step(params, opt_state, batch, *, apply, tx, loss_scale: bool):
    """One step of the cycle: backward, step, apply. Returns the loss and the correct count."""
    images, labels, weights = batch

    def loss_fn(params):
        logits = apply(params, images)
        loss = mlp.cross_entropy(logits, labels, weights)
        objective = jopt.scale_loss(loss, opt_state) if loss_scale else loss  # loss * S
        return objective, (loss, logits)

    grads, (loss, logits) = jax.grad(loss_fn, has_aux=True)(params)  # backward
    updates, opt_state = tx.update(grads, opt_state, params)  # step (unscales, with S)
    params = jopt.apply_updates(params, updates)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return params, opt_state, loss, jnp.sum(hits * weights)


def _make_chunk(
    apply, tx, batch_size: int, n_train: int, batch_sharding, loss_scale: bool = False
) -> Any:
    """``chunk(params, opt_state, images, labels, order, start, length)``: ``length`` steps
    of the epoch whose batches are the rows ``start, start + 1, ...`` of ``order``."""

    def chunk(params, opt_state, images, labels, order, start, length):
        def body(i, carry):
            params, opt_state, loss_sum, hits = carry
            row = start + i
            index = jax.lax.dynamic_index_in_dim(order, row, axis=0, keepdims=False)
            index = jax.lax.with_sharding_constraint(index, batch_sharding)
            position = row * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
            weights = (position < n_train).astype(jnp.float32)  # 0 pads the short last batch
            weights = jax.lax.with_sharding_constraint(weights, batch_sharding)
            batch = (images[index], labels[index], weights)
            params, opt_state, loss, step_hits = _train_step(
                params, opt_state, batch, apply=apply, tx=tx, loss_scale=loss_scale
            )
            return params, opt_state, loss_sum + loss, hits + step_hits

        zero = jnp.zeros((), jnp.float32)
        return jax.lax.fori_loop(0, length, body, (params, opt_state, zero, zero))

    return jax.jit(chunk, donate_argnums=(0, 1))


def _make_evaluate(apply) -> Any:
    """``evaluate(params, images, labels, weights) -> (loss sum, correct)`` over batches."""

    def evaluate(params, images, labels, weights):
        def body(sums, batch):
            x, y, w = batch
            logits = apply(params, x)
            loss = jnp.sum(mlp.softmax_cross_entropy(logits, y) * w)
            hits = jnp.sum((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32) * w)
            return (sums[0] + loss, sums[1] + hits), None

        zero = jnp.zeros((), jnp.float32)
        sums, _ = jax.lax.scan(body, (zero, zero), (images, labels, weights))
        return sums

    return jax.jit(evaluate)


def _make_order(n: int, batch_size: int, steps: int, sharding) -> Any:
    """``order(key, epoch) -> (steps, batch_size)``: the epoch's shuffled example indices."""

    def order(key, epoch):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n).astype(jnp.int32)
        padded = jnp.concatenate([perm, jnp.zeros((steps * batch_size - n,), jnp.int32)])
        return jnp.reshape(padded, (steps, batch_size))

    return jax.jit(order, out_shardings=sharding)


# --- setup --------------------------------------------------------------------------------


def _mesh(devices: int) -> jax.sharding.Mesh:
    available = jax.devices()
    if devices > len(available):
        hint = (
            f"; on CPU, start Python with XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{devices} to split it into {devices} devices"
            if available[0].platform == "cpu"
            else ""
        )
        raise ConfigError(
            "devices", devices, f"only {len(available)} {available[0].platform} device(s){hint}"
        )
    return jax.sharding.Mesh(np.asarray(available[:devices]), ("data",))


def _test_batches(images: np.ndarray, labels: np.ndarray, devices: int):
    """The test set as ``(batches, batch, 784)`` with weights that zero the padding."""
    n = len(labels)
    per_batch = min(EVAL_BATCH, n)
    per_batch = -(-per_batch // devices) * devices
    batches = -(-n // per_batch)
    pad = batches * per_batch - n
    flat = np.concatenate([images.reshape(n, -1), np.zeros((pad, images[0].size), np.uint8)])
    y = np.concatenate([labels.astype(np.int32), np.zeros(pad, np.int32)])
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    shape = (batches, per_batch)
    return flat.reshape(*shape, -1), y.reshape(shape), w.reshape(shape)


# Programs that run once (or once per epoch, in milliseconds) compile without LLVM's
# optimizations: 5x faster to compile (random number generation unrolls into a lot
# of code), the same results.
_RUN_ONCE = mlp.RUN_ONCE


class _Compiler:
    """Compiles lowered programs in background threads, overlapping the rest of the setup.

    XLA releases the GIL while it compiles, so on two cores the training loop compiles
    while the main thread builds the model and moves the data.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.seconds = 0.0

    def _timed(self, lowered: Any, options: dict[str, Any] | None) -> Any:
        start = time.perf_counter()
        compiled = lowered.compile(compiler_options=options)
        self.seconds += time.perf_counter() - start
        return compiled

    def submit(self, lowered: Any, options: dict[str, Any] | None = None):
        """A future of ``lowered.compile()``."""
        return self._pool.submit(self._timed, lowered, options)

    def now(self, lowered: Any, options: dict[str, Any] | None = None) -> Any:
        """Compiles in this thread."""
        return self._timed(lowered, options)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _like(tree: Any, sharding: Any) -> Any:
    """``tree``'s arrays as ``jax.ShapeDtypeStruct`` placed by ``sharding``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _describe(config: Config, n_train: int, steps: int, custom: bool = False) -> str:
    sizes = "-".join(str(s) for s in (mlp.IMAGE_PIXELS, *config.hidden, mlp.NUM_CLASSES))
    lr = f"lr {default_lr(config.optimizer) if config.lr is None else config.lr:g}"
    extras = [f"schedule {config.schedule}"]
    if config.clip_norm is not None:
        extras.append(f"clip norm {config.clip_norm:g}")
    if config.accumulate > 1:
        extras.append(f"accumulate {config.accumulate}")
    optimizer = f"{config.optimizer} ({lr}, {', '.join(extras)})"
    if custom:
        optimizer = "custom transformation"
    devices = f"{config.devices} device{'s' if config.devices > 1 else ''}"
    return (
        f"{optimizer} | MLP {sizes}, {config.precision} | "
        f"{n_train:,} images, batch {config.batch_size}, {steps} steps per epoch | "
        f"seed {config.seed}, {devices}"
    )


# --- the loop -----------------------------------------------------------------------------


def train(
    config: Config,
    *,
    data: MNIST | None = None,
    reporter: Reporter | None = None,
    tx: jopt.GradientTransformation | None = None,
) -> History:
    """Trains the MLP on MNIST as ``config`` says; returns the `History`.

    Loads the data (``config.data_dir``, else `load_mnist`'s cache or download) unless
    ``data`` is given, builds the model and the optimizer, and runs the epochs:
    shuffled by ``jax.random.permutation`` from the seed and the epoch, stepped in
    compiled chunks, evaluated on the test set after each epoch. With
    ``checkpoint_dir`` it saves a checkpoint after each epoch (and every
    ``checkpoint_every`` steps); with ``resume`` it continues from the newest one, to
    the same final parameters, bit for bit, as a run that was never interrupted.

    Args:
        config: the run.
        data: the dataset (default: loaded as ``config.data_dir`` says).
        reporter: shows the progress (default: `Console`, quiet as ``config.quiet``).
        tx: train with this gradient transformation (yours, or any jopt or optax
            chain) instead of the one ``config`` describes; ``config``'s optimizer,
            learning-rate, schedule, clipping and accumulation fields are then unused.
            With ``config.loss_scale``, ``tx`` must contain `jopt.dynamic_loss_scale`.
            A checkpoint records the config, not ``tx``: resuming checks only that
            the saved optimizer state has ``tx``'s structure.

    Returns:
        The `History`: per-epoch records, the loss curve, the final parameters.

    Raises:
        ConfigError: a setting this machine or this data cannot satisfy.
        ResumeError: ``resume`` with a checkpoint of another run, or a checkpoint
            folder that already holds checkpoints without ``resume``.
        FileNotFoundError: no data; the message lists the ways to supply it.
    """
    clock = time.perf_counter()
    if tx is None:
        optimizer_arguments(config)  # the optimizer fields fit the optimizer
    mesh = _mesh(config.devices)
    reporter = reporter if reporter is not None else Console(quiet=config.quiet)
    mnist = data if data is not None else load_mnist(config.data_dir)
    n_train, n_test = len(mnist.train_labels), len(mnist.test_labels)
    batch, steps = config.batch_size, -(-n_train // config.batch_size)
    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P(None, "data"))
    model_apply, make_params = mlp.initializer(
        config.hidden, dtype=jnp.bfloat16 if config.precision == "bf16" else None
    )
    apply: Any = model_apply
    if config.flat:  # parameters packed between steps; the model reads views of them
        make_tree = make_params

        def make_params(key: jax.Array) -> Any:
            return jopt.flat.flatten(make_tree(key))

        def apply(params: Any, images: jax.Array) -> jax.Array:
            return model_apply(params.tree(), images)

    custom = tx is not None
    if tx is None:
        try:
            tx = build_optimizer(config, steps)
        except ConfigError:
            raise
        except ValueError as e:  # a hyperparameter out of range: jopt names it
            raise ConfigError("optimizer", config.optimizer, str(e)) from e
    elif not isinstance(tx, tuple) or not (callable(tx.init) and callable(tx.update)):
        raise TypeError(f"train: tx must be a GradientTransformation, got {type(tx).__name__}")

    def setup() -> tuple[Any, Any, jax.Array]:
        root = jax.random.key(config.seed)
        params = make_params(jax.random.fold_in(root, 0))
        return params, tx.init(params), jax.random.key_data(jax.random.fold_in(root, 1))

    setup_jit = jax.jit(setup, out_shardings=replicated)
    params_like, state_like, key_like = _like(jax.eval_shape(setup_jit), replicated)
    test = _test_batches(mnist.test_images, mnist.test_labels, config.devices)
    test_shardings = (NamedSharding(mesh, P(None, "data", None)), rows, rows)
    i32 = np.int32
    run = Resume.open(config, n_train, reporter)
    compiler = _Compiler()
    try:  # the training loop and the evaluation compile while the rest is set up
        chunk_future = None
        if run.step < config.epochs * steps:
            chunk_future = compiler.submit(
                _make_chunk(
                    apply, tx, batch, n_train, NamedSharding(mesh, P("data")), config.loss_scale
                ).lower(
                    params_like,
                    state_like,
                    jax.ShapeDtypeStruct(
                        (n_train, mlp.IMAGE_PIXELS), jnp.uint8, sharding=replicated
                    ),
                    jax.ShapeDtypeStruct((n_train,), jnp.int32, sharding=replicated),
                    jax.ShapeDtypeStruct((steps, batch), jnp.int32, sharding=rows),
                    i32(0),
                    i32(0),
                )
            )
        evaluate_future = compiler.submit(
            _make_evaluate(apply).lower(
                params_like,
                *(_like(a, sh) for a, sh in zip(test, test_shardings, strict=True)),
            )
        )
        params, opt_state, key_data = compiler.now(setup_jit.lower(), _RUN_ONCE)()
        order_fn = compiler.now(
            _make_order(n_train, batch, steps, rows).lower(key_like, i32(0)), _RUN_ONCE
        )
        images = jax.device_put(mnist.train_images.reshape(n_train, -1), replicated)
        labels = jax.device_put(mnist.train_labels.astype(np.int32), replicated)
        test_images, test_labels, test_weights = (
            jax.device_put(a, sh) for a, sh in zip(test, test_shardings, strict=True)
        )
        fresh = (params, opt_state, key_data)
        params, opt_state, key_data = run.restore(fresh, steps, reporter)
        chunk_fn = None if chunk_future is None else chunk_future.result()
        evaluate_fn = evaluate_future.result()
    except BaseException:
        compiler.close()
        run.close()
        raise
    compiler.close()
    setup_time = time.perf_counter() - clock
    reporter.start(_describe(config, n_train, steps, custom))

    history, curve, sums = run.history, run.curve, run.sums

    def elapsed() -> float:
        return run.elapsed_before + time.perf_counter() - clock

    def save(at: int) -> None:
        meta = {
            "config": config.to_json(),
            "step": at,
            "n_train": n_train,
            "history": [r.to_json() for r in history],
            "curve": curve,
            "epoch": sums,
            "elapsed": elapsed(),
        }
        # A copy: orbax writes it in the background while the loop goes on.
        meta = json.loads(json.dumps(meta))
        assert run.checkpoints is not None
        run.checkpoints.save(at, template(params, opt_state, key_data), meta)

    metrics = _Metrics(config.metrics, history)
    every = config.checkpoint_every if run.checkpoints is not None else None
    chunk = max(1, steps // PROGRESS_UPDATES)
    step = run.step
    try:
        while step < config.epochs * steps:
            epoch = step // steps
            done = step - epoch * steps
            order = order_fn(key_data, i32(epoch))
            reporter.epoch_start(epoch + 1, config.epochs, steps, done)
            started = time.perf_counter()
            while done < steps:
                end = min(steps, (done // chunk + 1) * chunk)
                if every is not None:  # stop at the next checkpoint step, if sooner
                    end = min(end, (step // every + 1) * every - epoch * steps)
                assert chunk_fn is not None
                params, opt_state, loss, hits = chunk_fn(
                    params, opt_state, images, labels, order, i32(done), i32(end - done)
                )
                loss_value = float(loss)  # waits for this chunk: the progress bar's round trip
                sums["loss"] += loss_value
                sums["hits"] += float(hits)
                sums["steps"] += end - done
                sums["examples"] += min(end * batch, n_train) - min(done * batch, n_train)
                curve.append((epoch * steps + end, loss_value / (end - done)))
                step, done = epoch * steps + end, end
                reporter.progress(
                    done, sums["loss"] / sums["steps"], sums["hits"] / max(sums["examples"], 1)
                )
                if every is not None and step % every == 0 and done < steps:
                    sums["time"] += time.perf_counter() - started
                    started = time.perf_counter()
                    save(step)
            test_loss, test_hits = (
                float(v) for v in evaluate_fn(params, test_images, test_labels, test_weights)
            )
            epoch_time = sums["time"] + time.perf_counter() - started
            record = EpochRecord(
                epoch=epoch + 1,
                epochs=config.epochs,
                step=step,
                train_loss=sums["loss"] / max(sums["steps"], 1),
                train_accuracy=sums["hits"] / max(sums["examples"], 1),
                test_loss=test_loss / n_test,
                test_accuracy=test_hits / n_test,
                learning_rate=learning_rate(jax.device_get(opt_state)),
                epoch_time=epoch_time,
                steps_per_second=sums["steps"] / max(epoch_time, 1e-9),
                wall_time=elapsed(),
            )
            history.append(record)
            sums.update(EMPTY_SUMS)
            if run.checkpoints is not None:
                save(step)
            metrics.write(record)
            reporter.epoch_end(record)
    finally:
        run.close()
        metrics.close()
    result = History(
        config=config,
        epochs=history,
        curve=curve,
        params=jopt.flat.unflatten(params) if config.flat else params,
        opt_state=opt_state,
        apply=model_apply,
        wall_time=elapsed(),
        setup_time=setup_time,
        compile_time=compiler.seconds,
        devices=config.devices,
    )
    reporter.finish(result)
    return result


class _Metrics:
    """The ``--metrics`` file: one JSON object per epoch, rewritten from the history on start."""

    def __init__(self, path: str | None, history: list[EpochRecord]) -> None:
        self._file = None
        if path is None:
            return
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "w") as f:
            for record in history:
                f.write(json.dumps(record.to_json()) + "\n")
        os.replace(tmp, target)
        self._file = open(target, "a")  # noqa: SIM115 (closed by close())

    def write(self, record: EpochRecord) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record.to_json()) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
