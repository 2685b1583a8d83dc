"""Run optimizers from jopt, optax and torch on the same problem and compare trajectories."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jopt
from tests.problems import Problem

STEPS = 100


@contextlib.contextmanager
def standard_promotion() -> Iterator[None]:
    """optax and user code run under jax's default promotion; the suite runs strict."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def run_jax(tx: Any, problem: Problem, dtype: Any, steps: int = STEPS, *, strict: bool = True):
    """Trajectory (list of param trees, one per step) of a jopt or optax transformation.

    The step is ``tx.update`` jitted on its own, fed by a compiled gradient shared by
    every test of the problem: compiling only the optimizer keeps the parity tests fast.
    """
    context = contextlib.nullcontext() if strict else standard_promotion()
    with context:
        params = problem.params(dtype)
        grad = _jitted_grad(problem)
        update = jax.jit(tx.update)
        state = tx.init(params)
        trajectory = []
        for _ in range(steps):
            updates, state = update(grad(params), state, params)
            params = _add(params, updates)
            trajectory.append(params)
    return [jax.tree.map(np.asarray, p) for p in trajectory]


@jax.jit
def _add(params: Any, updates: Any) -> Any:
    return jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)


@functools.cache
def _jitted_grad(problem: Problem) -> Callable[[Any], Any]:
    """One compiled gradient per problem (per dtype, by jax's own cache), shared by tests."""
    return jax.jit(jax.grad(problem.loss))


def run_optax(tx: Any, problem: Problem, dtype: Any, steps: int = STEPS):
    return run_jax(tx, problem, dtype, steps, strict=False)


def run_torch(
    make_optimizer: Callable[[list], Any],
    problem: Problem,
    dtype: Any,
    steps: int = STEPS,
    make_scheduler: Callable[[Any], Any] | None = None,
):
    """Trajectory of a torch optimizer; gradients from jax at torch's current params."""
    import torch

    torch_dtype = {jnp.dtype("float32"): torch.float32, jnp.dtype("float64"): torch.float64}[
        jnp.dtype(dtype)
    ]
    leaves, treedef = jax.tree.flatten(problem.params(dtype))
    tensors = [torch.tensor(np.asarray(x), dtype=torch_dtype, requires_grad=True) for x in leaves]
    optimizer = make_optimizer(tensors)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    grad = _jitted_grad(problem)
    trajectory = []
    for _ in range(steps):
        current = jax.tree.unflatten(
            treedef, [jnp.asarray(t.detach().numpy(), dtype) for t in tensors]
        )
        grads = jax.tree.leaves(grad(current))
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.tensor(np.asarray(g), dtype=torch_dtype)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
    return trajectory


def max_relative_error(ours: list, theirs: list) -> tuple[float, str]:
    """Largest ``max_t |a_t - b_t| / max_t |b_t|`` over the leaves, and where it occurs.

    Each leaf's error is measured against that leaf's scale over the whole trajectory,
    so a coordinate passing through zero does not turn round-off into a huge ratio.
    """
    paths = jopt.tree.paths(theirs[0])
    ours_leaves = [np.stack([np.asarray(x, np.float64) for x in xs]) for xs in _columns(ours)]
    theirs_leaves = [np.stack([np.asarray(x, np.float64) for x in xs]) for xs in _columns(theirs)]
    worst, where = 0.0, ""
    for path, a, b in zip(paths, ours_leaves, theirs_leaves, strict=True):
        if not np.all(np.isfinite(b)):
            raise AssertionError(f"the reference diverged at '{path}'")
        scale = max(float(np.max(np.abs(b))), 1e-12)
        per_step = np.max(np.abs(a - b).reshape(len(a), -1), axis=1) / scale
        step = int(np.argmax(np.nan_to_num(per_step, nan=np.inf)))
        error = float(per_step[step])
        if not error <= worst:  # NaN counts as the worst
            worst, where = error, f"step {step}, '{path}'"
    return worst, where


def _columns(trajectory: list) -> list[list]:
    return [list(column) for column in zip(*(jax.tree.leaves(t) for t in trajectory), strict=True)]


DECAY_RATE = 0.97


def decaying(base: float, rate: float = DECAY_RATE) -> Callable[[Any], jax.Array]:
    """``count -> base * rate ** count`` in the default float dtype (float64 under x64).

    torch's ``LambdaLR(lambda epoch: rate ** epoch)`` gives the same values.
    """

    def schedule(count: Any) -> jax.Array:
        dtype = jnp.asarray(0.0).dtype
        return base * jnp.power(jnp.asarray(rate, dtype), jnp.asarray(count).astype(dtype))

    return schedule


def negated(problem: Problem) -> Problem:
    """The same problem with the loss negated: what ``maximize=True`` should climb."""
    import dataclasses

    return dataclasses.replace(
        problem, name=f"-{problem.name}", loss=lambda params: -problem.loss(params)
    )


TOLERANCE = {jnp.dtype("float32"): 1e-5, jnp.dtype("float64"): 1e-10}
