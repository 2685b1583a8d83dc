"""Lookahead: k fast steps forward, one interpolating step back towards slow weights.

The parameters are a pair :class:`LookaheadParams` ``(fast, slow)``: gradients are
taken at ``fast``; every ``sync_period`` steps the slow weights move a fraction
``slow_step_size`` of the way to the fast ones and the fast weights jump there.
The state layout and the arithmetic are optax's ``lookahead``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates
from jopt.combine import accepts_extra_args, call_update
from jopt.hyperparams import UNIT, Interval, check_hyperparam
from jopt.wrapping import select

__all__ = ["LookaheadParams", "LookaheadState", "lookahead"]


class LookaheadState(NamedTuple):
    """State of :func:`lookahead` (optax's ``LookaheadState``).

    Attributes:
        fast_state: the state of the fast optimizer.
        steps_since_sync: int32 fast steps taken since the last synchronisation.
    """

    fast_state: OptState
    steps_since_sync: jax.Array


class LookaheadParams(NamedTuple):
    """The parameters of :func:`lookahead`: fast ones (for gradients) and slow ones.

    Take gradients at ``fast``; evaluate with ``slow``, which generalise better.

    Attributes:
        fast: the fast parameters.
        slow: the slow parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = jopt.LookaheadParams(fast=jnp.ones(1), slow=jnp.zeros(1))
        >>> jopt.apply_updates(params, jopt.LookaheadParams(jnp.ones(1), jnp.ones(1))).fast
        Array([2.], dtype=float32)
    """

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """Both halves equal to ``params``: the start of training.

        Example:
            >>> import jax.numpy as jnp
            >>> import jopt
            >>> jopt.LookaheadParams.init_synced(jnp.ones(1)).slow
            Array([1.], dtype=float32)
        """
        return cls(fast=params, slow=params)


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead around a fast optimizer, on :class:`LookaheadParams`.

    Update rule, with ``u`` the fast optimizer's update at ``fast`` and ``a`` the slow
    step size; on the step that completes ``sync_period`` fast steps::

        d = fast + u - slow
        slow_update = a * d                  (slow <- slow + a (fast' - slow))
        fast_update = u - (1 - a) * d        (fast <- the new slow)

    and on other steps ``slow_update = 0``, ``fast_update = u``. The returned updates
    are a :class:`LookaheadParams` to add to the params with :func:`jopt.apply_updates`
    unchanged (modifying them desynchronises the pair). With ``reset_state`` the fast
    optimizer's state is re-initialised at every synchronisation.

    Args:
        fast_optimizer: the inner optimizer, run on the fast parameters.
        sync_period: fast steps between synchronisations, >= 1.
        slow_step_size: the interpolation factor of the slow step, in [0, 1].
        reset_state: re-initialise the fast optimizer's state after synchronising.

    Returns:
        A transformation whose ``init`` takes a :class:`LookaheadParams` (or plain
        params, taken as the fast ones) and whose ``update`` needs the
        :class:`LookaheadParams`; its state is a :class:`LookaheadState`.

    References:
        Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back",
        NeurIPS 2019; optax ``lookahead``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.lookahead(jopt.sgd(0.1), sync_period=2, slow_step_size=0.5)
        >>> params = jopt.LookaheadParams.init_synced(jnp.ones(1))
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     grads = jnp.ones(1)  # taken at params.fast
        ...     updates, state = tx.update(grads, state, params)
        ...     params = jopt.apply_updates(params, updates)
        ...     print(params.fast, params.slow)
        [0.9] [1.]
        [0.9] [0.9]
    """
    if isinstance(sync_period, bool) or not isinstance(sync_period, int):
        raise TypeError(f"sync_period must be an int, got {type(sync_period).__name__}")
    check_hyperparam("sync_period", sync_period, Interval(1.0, None))
    check_hyperparam("slow_step_size", slow_step_size, UNIT)
    takes_extra = accepts_extra_args(fast_optimizer)

    def init(params: Params) -> LookaheadState:
        fast = getattr(params, "fast", params)  # a LookaheadParams (jopt's or optax's)
        return LookaheadState(fast_optimizer.init(fast), jnp.zeros((), jnp.int32))

    def update(
        updates: Updates, state: LookaheadState, params: Params | None = None, **extra: Any
    ) -> tuple[LookaheadParams, LookaheadState]:
        if params is None or not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise ValueError(
                "lookahead needs the LookaheadParams: call update(grads, state, params) "
                "with params = LookaheadParams(fast, slow)"
            )
        fast_updates, fast_state = call_update(
            fast_optimizer, updates, state.fast_state, params.fast, extra, takes_extra
        )
        sync = state.steps_since_sync == sync_period - 1

        def leaf(f: jax.Array, u: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
            ct = jtree.compute_dtype(jtree.promote(f.dtype, u.dtype, s.dtype))
            a, one_minus_a = jtree.decay_pair(slow_step_size, ct)
            diff = f.astype(ct) + u.astype(ct) - s.astype(ct)
            zero = jnp.zeros_like(diff)
            slow_u = jnp.where(sync, a * diff, zero)
            fast_u = u.astype(ct) - jnp.where(sync, one_minus_a * diff, zero)
            return jtree.cast(fast_u, u.dtype), jtree.cast(slow_u, s.dtype)

        fast_u, slow_u = jtree.map_many(leaf, 2, params.fast, fast_updates, params.slow)
        if reset_state:
            fast_state = select(sync, fast_optimizer.init(params.fast), fast_state)
        steps = (state.steps_since_sync + 1) % sync_period
        return type(params)(fast=fast_u, slow=slow_u), LookaheadState(fast_state, steps)

    return GradientTransformation(init, update)
