"""Test problems shared by the parity tests: nested pytrees with a jax loss.

Each problem gives initial parameters (a nested dict/list pytree) and a loss. The
gradient oracle for every library is ``jax.grad`` of that loss, evaluated at that
library's own current parameters, so a parity test compares optimizer arithmetic
and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    make_params: Callable[[Any], Any]  # dtype -> params
    loss: Callable[[Any], jax.Array]
    lr_scale: float  # multiplies the per-optimizer learning rates (stiff problems need less)

    def params(self, dtype: Any) -> Any:
        return self.make_params(dtype)


def _quadratic() -> Problem:
    """0.5 (z - c)^T A (z - c) with A = Q diag(logspace(-2, 2)) Q^T: condition number 1e4."""
    rng = np.random.default_rng(0)
    n = 4 + 6
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = q @ np.diag(np.logspace(-2, 2, n)) @ q.T
    c = rng.normal(size=n)

    def make(dtype: Any) -> Any:
        return {
            "a": [jnp.asarray(rng_init[:4], dtype), jnp.asarray(rng_init[4:].reshape(3, 2), dtype)]
        }

    rng_init = np.random.default_rng(1).normal(size=n)

    def loss(params: Any) -> jax.Array:
        leaves = jax.tree.leaves(params)
        dtype = leaves[0].dtype
        z = jnp.concatenate([jnp.ravel(x) for x in leaves]) - jnp.asarray(c, dtype)
        return 0.5 * z @ (jnp.asarray(a, dtype) @ z)

    return Problem("quadratic", make, loss, lr_scale=1.0)


def _rosenbrock() -> Problem:
    """sum 100 (y - x^2)^2 + (1 - x)^2 over three independent (x, y) pairs."""

    def make(dtype: Any) -> Any:
        return {
            "xy": [
                jnp.asarray([-1.2, -0.5, 0.3], dtype),
                {"y": jnp.asarray([1.0, 0.8, -0.2], dtype)},
            ]
        }

    def loss(params: Any) -> jax.Array:
        x, rest = params["xy"]
        y = rest["y"]
        return jnp.sum(100.0 * (y - x**2) ** 2 + (1.0 - x) ** 2)

    return Problem("rosenbrock", make, loss, lr_scale=0.1)


def _mlp() -> Problem:
    """A 4-8-1 tanh MLP on 32 fixed random points (regression, mean squared error)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 4))
    y = np.sin(x @ rng.normal(size=(4, 1)))
    w1, w2 = rng.normal(size=(4, 8)) * 0.5, rng.normal(size=(8, 1)) * 0.5

    def make(dtype: Any) -> Any:
        return {
            "layers": [
                {"w": jnp.asarray(w1, dtype), "b": jnp.zeros(8, dtype)},
                {"w": jnp.asarray(w2, dtype), "b": jnp.zeros(1, dtype)},
            ]
        }

    def loss(params: Any) -> jax.Array:
        (l1, l2) = params["layers"]
        dtype = l1["w"].dtype
        h = jnp.tanh(jnp.asarray(x, dtype) @ l1["w"] + l1["b"][None, :])
        out = h @ l2["w"] + l2["b"][None, :]
        return jnp.mean((out - jnp.asarray(y, dtype)) ** 2)

    return Problem("mlp", make, loss, lr_scale=1.0)


PROBLEMS = [_quadratic(), _rosenbrock(), _mlp()]


def _all_of(problems: list[Problem]) -> Problem:
    """The problems side by side in one tree, their losses summed.

    For an elementwise optimizer each sub-tree then follows exactly its own problem's
    trajectory (the gradient of a sum of independent losses is the gradients side by
    side), so one compiled run covers all of them. A problem's ``lr_scale`` scales its
    loss, which is a smaller learning rate for SGD-like optimizers.
    """

    def make(dtype: Any) -> Any:
        return {p.name: p.params(dtype) for p in problems}

    def loss(params: Any) -> jax.Array:
        return sum(p.lr_scale * p.loss(params[p.name]) for p in problems)

    return Problem("+".join(p.name for p in problems), make, loss, lr_scale=1.0)


ALL_THREE = _all_of(PROBLEMS)
"""Quadratic, Rosenbrock and MLP in one nested tree: the parity tests' problem."""
