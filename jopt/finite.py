"""Skipping non-finite updates: a step whose gradients hold a NaN or an Inf is dropped.

A single overflowing batch should not poison a run. :func:`apply_if_finite` wraps an
optimizer so that such a step leaves the parameters (zero updates) and the inner
state untouched, and counts it; :func:`all_finite` is the test it (and dynamic loss
scaling) applies. Everything stays on device: the decision is a ``jnp.where``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates
from jopt.combine import accepts_extra_args, call_update
from jopt.hyperparams import NONNEGATIVE, check_hyperparam
from jopt.wrapping import select

__all__ = ["ApplyIfFiniteState", "all_finite", "apply_if_finite"]


def all_finite(tree: Any) -> jax.Array:
    """A boolean scalar: whether every element of every leaf is finite (no NaN, no Inf).

    An empty tree is finite. Runs on device; under ``jit`` it costs one reduction
    per leaf and no host sync.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.all_finite({"w": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])})
        Array(False, dtype=bool)
    """
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return functools.reduce(jnp.logical_and, checks, jnp.asarray(True))


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite` (optax's ``ApplyIfFiniteState``, field for field).

    Attributes:
        notfinite_count: int32 number of consecutive steps with a non-finite gradient;
            reset to 0 by a finite one.
        last_finite: bool, whether the last step's gradients were finite.
        total_notfinite: int32 number of non-finite steps since ``init``; never reset.
        inner_state: the state of the wrapped transformation.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: OptState


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Drops steps whose gradients hold a NaN or an Inf, until too many come in a row.

    Update rule, with ``c`` the count of consecutive non-finite steps::

        finite_t = all(isfinite(g_t))
        c_t = 0 if finite_t else c_{t-1} + 1
        if finite_t or c_t > max_consecutive_errors:  u_t, s_t = inner(g_t, s_{t-1})
        else:                                         u_t, s_t = 0, s_{t-1}

    A dropped step leaves the parameters (zero updates) and the inner state (moments,
    step counts, scheduled hyperparameters) exactly as they were. After
    ``max_consecutive_errors`` dropped steps in a row the wrapper gives up and applies
    the next one, NaNs and all, as optax does: a run that only produces NaNs should
    fail visibly rather than stall.

    Args:
        inner: the transformation to protect.
        max_consecutive_errors: how many non-finite steps in a row are dropped, >= 0.

    Returns:
        A transformation whose state is an :class:`ApplyIfFiniteState`.

    References:
        optax ``apply_if_finite`` (same semantics and state fields).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.apply_if_finite(jopt.sgd(0.1), max_consecutive_errors=2)
        >>> state = tx.init(jnp.zeros(2))
        >>> updates, state = tx.update(jnp.array([1.0, jnp.inf]), state)
        >>> updates, int(state.total_notfinite), bool(state.last_finite)
        (Array([0., 0.], dtype=float32), 1, False)
        >>> tx.update(jnp.array([1.0, 2.0]), state)[0]
        Array([-0.1, -0.2], dtype=float32)
    """
    if isinstance(max_consecutive_errors, bool) or not isinstance(max_consecutive_errors, int):
        raise TypeError(
            f"max_consecutive_errors must be an int, got {type(max_consecutive_errors).__name__}"
        )
    check_hyperparam("max_consecutive_errors", max_consecutive_errors, NONNEGATIVE)
    takes_extra = accepts_extra_args(inner)

    def init(params: Params) -> ApplyIfFiniteState:
        zero = jnp.zeros((), jnp.int32)
        return ApplyIfFiniteState(zero, jnp.asarray(True), zero, inner.init(params))

    def update(
        updates: Updates, state: ApplyIfFiniteState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ApplyIfFiniteState]:
        finite = all_finite(updates)
        notfinite_count = jnp.where(
            finite, jnp.zeros((), jnp.int32), jtree.safe_increment(state.notfinite_count)
        )
        apply = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates, new_inner = call_update(
            inner, updates, state.inner_state, params, extra, takes_extra
        )
        total = jnp.where(
            finite, state.total_notfinite, jtree.safe_increment(state.total_notfinite)
        )
        return select(apply, new_updates, jtree.zeros_like(new_updates)), ApplyIfFiniteState(
            notfinite_count, finite, total, select(apply, new_inner, state.inner_state)
        )

    return GradientTransformation(init, update)
