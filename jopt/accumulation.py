"""Gradient accumulation: k micro-batches, one optimizer step with their mean gradient.

:func:`multi_steps` is optax's ``MultiSteps`` as a plain transformation: it collects
the gradients of ``k`` consecutive calls in one buffer, returns zero updates on the
first ``k - 1``, and on the ``k``-th hands the mean (or sum) to the wrapped optimizer
and returns its update. With equal micro-batches and a loss that is a mean over the
batch, ``k`` accumulated micro-steps are one step on the ``k``-times larger batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates
from jopt.combine import accepts_extra_args, call_update
from jopt.finite import all_finite
from jopt.hyperparams import Interval, check_hyperparam
from jopt.wrapping import find_state, select

__all__ = [
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "has_updated",
    "multi_steps",
    "skip_not_finite",
]

_AT_LEAST_ONE = Interval(1.0, None)


class ShouldSkipUpdateFunction(Protocol):
    """Decides whether a micro-step is dropped (optax's protocol, so its functions fit)."""

    def __call__(
        self, updates: Updates, gradient_step: jax.Array, params: Params | None
    ) -> tuple[jax.Array, Any]:
        """Returns ``(skip, skip_state)``: a boolean scalar and a pytree kept in the state."""


def skip_not_finite(
    updates: Updates, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A :class:`ShouldSkipUpdateFunction` dropping micro-steps with a NaN or an Inf.

    Returns ``(skip, {"should_skip": skip, "num_not_finite": n})`` with ``n`` the number
    of non-finite elements, as optax's ``skip_not_finite`` does.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.skip_not_finite({"w": jnp.array([1.0, jnp.nan])}, 0, None)[1]["num_not_finite"]
        Array(1, dtype=int32)
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(leaf), dtype=jnp.int32) for leaf in jax.tree.leaves(updates)]
    num = sum(counts, jnp.zeros((), jnp.int32))
    skip = jnp.logical_not(all_finite(updates))
    return skip, {"should_skip": skip, "num_not_finite": num}


def _never_skip(
    updates: Updates, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, tuple[()]]:
    del updates, gradient_step, params
    return jnp.asarray(False), ()


class MultiStepsState(NamedTuple):
    """State of :func:`multi_steps`.

    Attributes:
        mini_step: int32 micro-steps accumulated since the last update (0 after one).
        gradient_step: int32 number of updates applied (drives ``every_k_schedule``).
        applied: bool, whether the last call applied an update (read it with
            :func:`has_updated`).
        inner_state: the state of the wrapped optimizer; it changes only on the
            micro-step that applies an update.
        acc_grads: the running mean (or sum) of the gradients of this window.
        skip_state: what ``should_skip_update_fn`` returned on the last call.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    applied: jax.Array
    inner_state: OptState
    acc_grads: Updates
    skip_state: Any


def multi_steps(
    inner: GradientTransformation,
    every_k_schedule: int | Callable[[jax.Array], Any],
    use_grad_mean: bool = True,
    should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Accumulates the gradients of ``k`` calls and applies ``inner`` once, on the k-th.

    Update rule, for micro-step ``i = 0, ..., k - 1`` of a window (``k`` is
    ``every_k_schedule(gradient_step)``)::

        a_i = a_{i-1} + (g_i - a_{i-1}) / (i + 1)      (use_grad_mean: running mean,
              a_{i-1} + g_i                              otherwise the sum; a_{-1} = 0)
        u_i = 0                                        for i < k - 1 (inner state kept)
        u_i, s = inner(a_i, s)                         for i = k - 1; then a <- 0

    The running mean is optax's (Welford's) form, so the trajectory is optax's
    ``MultiSteps(...).gradient_transformation()`` step for step. A call for which
    ``should_skip_update_fn`` returns ``True`` is dropped entirely: zero updates, and
    the state (counters, buffer, inner state) as if the call had not happened.

    Memory: one accumulator buffer shaped like the gradients, in their compute dtype
    (float32 for float16/bfloat16 gradients, so summing many micro-batches does not
    round away small ones; float64 stays float64). optax keeps it in float32 always.

    Args:
        inner: the optimizer applied to the accumulated gradients.
        every_k_schedule: the number of micro-steps per update, an int >= 1 or a
            function of the number of updates applied so far (varying the batch size).
        use_grad_mean: average the gradients (default); ``False`` sums them.
        should_skip_update_fn: ``(updates, gradient_step, params) -> (skip,
            skip_state)``; e.g. :func:`skip_not_finite` (optax's functions fit too).
        accumulator_dtype: dtype of the buffer (default: the gradients' compute dtype).

    Returns:
        A transformation whose state is a :class:`MultiStepsState`; ask
        :func:`has_updated` whether the last call applied an update.

    References:
        optax ``MultiSteps``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.multi_steps(jopt.sgd(1.0), every_k_schedule=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> updates, state = tx.update(jnp.array([1.0]), state)
        >>> updates, bool(jopt.has_updated(state))
        (Array([0.], dtype=float32), False)
        >>> updates, state = tx.update(jnp.array([3.0]), state)
        >>> updates, bool(jopt.has_updated(state))
        (Array([-2.], dtype=float32), True)
    """
    if callable(every_k_schedule):
        k_fn = every_k_schedule
        first = every_k_schedule(jnp.zeros((), jnp.int32))
        if not jtree.is_traced(first):
            check_hyperparam("every_k_schedule(0)", first, _AT_LEAST_ONE)
    elif isinstance(every_k_schedule, int) and not isinstance(every_k_schedule, bool):
        check_hyperparam("every_k_schedule", every_k_schedule, _AT_LEAST_ONE)
        k_constant = every_k_schedule
        k_fn = lambda step: k_constant
    else:
        raise TypeError(
            "every_k_schedule must be an int or a function of the step, got "
            f"{type(every_k_schedule).__name__}"
        )
    skip_fn = should_skip_update_fn or _never_skip
    takes_extra = accepts_extra_args(inner)

    def acc_dtype(leaf: Any) -> Any:
        return accumulator_dtype or jtree.compute_dtype(jnp.result_type(leaf))

    def init(params: Params) -> MultiStepsState:
        step = jnp.zeros((), jnp.int32)
        _, skip_state = skip_fn(jtree.zeros_like(params), step, params)
        acc = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), acc_dtype(p)), params)
        return MultiStepsState(step, step, jnp.asarray(False), inner.init(params), acc, skip_state)

    def update(
        updates: Updates, state: MultiStepsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, MultiStepsState]:
        jtree.check_structure(state.acc_grads, updates, names=("accumulator", "updates"))
        skip, skip_state = skip_fn(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "should_skip_update_fn must return a boolean scalar, got "
                f"{skip.dtype.name}{list(skip.shape)}"
            )
        k = jnp.asarray(k_fn(state.gradient_step)).astype(jnp.int32)
        n = state.mini_step

        def accumulate(g: jax.Array, a: jax.Array) -> jax.Array:
            g = g.astype(a.dtype)
            return a + (g - a) / (n + 1).astype(a.dtype) if use_grad_mean else a + g

        acc = jax.tree.map(accumulate, updates, state.acc_grads)
        acc_as_updates = jax.tree.map(lambda a, g: jtree.cast(a, g.dtype), acc, updates)
        final, inner_state = call_update(
            inner, acc_as_updates, state.inner_state, params, extra, takes_extra
        )
        emit = jnp.logical_and(n == k - 1, jnp.logical_not(skip))
        zeros = jtree.zeros_like(final)
        new_state = MultiStepsState(
            mini_step=jnp.where(skip, n, jtree.safe_increment(n) % k),
            gradient_step=jnp.where(
                emit, jtree.safe_increment(state.gradient_step), state.gradient_step
            ),
            applied=emit,
            inner_state=select(emit, inner_state, state.inner_state),
            acc_grads=select(skip, state.acc_grads, select(emit, jtree.zeros_like(acc), acc)),
            skip_state=skip_state,
        )
        return select(emit, final, zeros), new_state

    return GradientTransformation(init, update)


def has_updated(state: OptState) -> jax.Array:
    """Whether the last call of the :func:`multi_steps` inside ``state`` applied an update.

    ``False`` on accumulating micro-steps and on skipped ones (optax's ``has_updated``
    answers ``True`` for a skipped call right after an update). A boolean scalar on
    device; the :class:`MultiStepsState` may sit anywhere inside ``state``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.multi_steps(jopt.sgd(0.1), every_k_schedule=1)
        >>> _, state = tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))
        >>> jopt.has_updated(state)
        Array(True, dtype=bool)
    """
    return find_state(state, MultiStepsState, "has_updated", "jopt.multi_steps").applied
