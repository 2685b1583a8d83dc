"""Scaling by a constant, a schedule or the learning rate; negation for maximizing.

``scale_by_learning_rate`` is the one place where a step direction becomes a descent
step (the sign flips), for every optimizer of both doors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import (
    GradientTransformation,
    Params,
    ScalarOrSchedule,
    Schedule,
    Updates,
    stateless,
)

__all__ = [
    "ScaleByScheduleState",
    "maximize",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]


def _scale_tree(updates: Updates, factor: Any) -> Updates:
    def one(u: jax.Array) -> jax.Array:
        ct = jtree.compute_dtype(u.dtype)
        return jtree.cast(u.astype(ct) * jtree.scalar(factor, ct), u.dtype)

    return jax.tree.map(one, updates)


def scale(step_size: float | jax.Array) -> GradientTransformation:
    """Multiplies updates by a constant (which may be a traced hyperparameter).

    Update rule: ``u <- step_size * u``.

    Args:
        step_size: the factor.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale(0.5)
        >>> tx.update(jnp.array([2.0, -4.0]), tx.init(None))[0]
        Array([ 1., -2.], dtype=float32)
    """

    return stateless(lambda updates, params: _scale_tree(updates, step_size))


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the number of updates taken."""

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiplies updates by ``step_size_fn(count)``, ``count`` counting updates from 0.

    Update rule: ``u_t <- s(t) * u_t``.

    Args:
        step_size_fn: a schedule ``count -> factor``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_schedule(lambda count: 1.0 / (1 + count))
        >>> state = tx.init(None)
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u
        Array([0.5], dtype=float32)
    """
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be callable, got {type(step_size_fn).__name__}")

    def init(params: Params) -> ScaleByScheduleState:
        del params
        return ScaleByScheduleState(jnp.zeros((), jnp.int32))

    def update(
        updates: Updates, state: ScaleByScheduleState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByScheduleState]:
        del params, extra
        factor = step_size_fn(state.count)
        return _scale_tree(updates, factor), ScaleByScheduleState(jtree.safe_increment(state.count))

    return GradientTransformation(init, update)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scales by the learning rate and flips the sign: a direction becomes a descent step.

    Update rule: ``u <- -lr * u`` (``+lr * u`` with ``flip_sign=False``). A schedule is
    evaluated at the number of updates taken so far.

    Args:
        learning_rate: a float, a (possibly traced) scalar array, or a schedule.
        flip_sign: negate, so that adding the update descends the loss.

    References:
        optax ``scale_by_learning_rate``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_learning_rate(0.1)
        >>> tx.update(jnp.array([1.0, -2.0]), tx.init(None))[0]
        Array([-0.1,  0.2], dtype=float32)
    """
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        schedule = learning_rate
        return scale_by_schedule(lambda count: sign * jnp.asarray(schedule(count)))
    if not jtree.is_traced(learning_rate) and jnp.ndim(learning_rate) != 0:
        raise ValueError(f"learning_rate must be a scalar, got shape {jnp.shape(learning_rate)}")
    return scale(-learning_rate if flip_sign else learning_rate)


def maximize() -> GradientTransformation:
    """Negates the gradients, so that the optimizer ascends: torch's ``maximize=True``.

    Update rule: ``u <- -u``. Put it first in a chain (torch negates the gradient
    before weight decay and momentum).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.maximize()
        >>> tx.update(jnp.array([1.0, -2.0]), tx.init(None))[0]
        Array([-1.,  2.], dtype=float32)
    """

    return stateless(lambda updates, params: jax.tree.map(jnp.negative, updates))
