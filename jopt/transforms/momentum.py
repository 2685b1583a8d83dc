"""Momentum: heavy ball, Nesterov, and torch's dampening."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, Params, Updates
from jopt.hyperparams import UNIT, check_hyperparam

__all__ = ["TraceState", "trace"]


class TraceState(NamedTuple):
    """State of :func:`trace`.

    Attributes:
        count: int32 number of updates taken (torch's first step is undampened).
        trace: the momentum buffer, shaped like the params.
    """

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    trace: Updates


def trace(
    decay: float | jax.Array,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
    *,
    dampening: float | jax.Array = 0.0,
) -> GradientTransformation:
    """Momentum (heavy ball), optionally Nesterov, optionally dampened as in torch.

    Update rule, with ``g`` the incoming update, ``m`` the buffer (``m_0 = 0``)::

        m_t = decay * m_{t-1} + (1 - dampening) * g_t      (m_1 = g_1: torch leaves
                                                            the first step undampened)
        u_t = g_t + decay * m_t   if nesterov   else   m_t

    With ``dampening=0`` this is optax's ``trace`` and torch's SGD momentum buffer
    exactly (``m_1 = g_1`` either way).

    Args:
        decay: the momentum coefficient.
        nesterov: use Nesterov's look-ahead form.
        accumulator_dtype: dtype of the buffer (default: that of the params).
        dampening: torch's dampening; applied from the second step on.

    References:
        Polyak, 1964; Sutskever et al., "On the importance of initialization and
        momentum in deep learning", ICML 2013; ``torch.optim.SGD``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.trace(decay=0.9)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u, state = tx.update(jnp.ones(1), state)
        >>> u
        Array([1.9], dtype=float32)
    """
    check_hyperparam("dampening", dampening, UNIT)
    if nesterov:
        _check_nesterov(decay, dampening)

    def init(params: Params) -> TraceState:
        return TraceState(jnp.zeros((), jnp.int32), jtree.zeros_like(params, accumulator_dtype))

    def update(
        updates: Updates, state: TraceState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, TraceState]:
        del params, extra
        jtree.check_structure(state.trace, updates, names=("momentum buffer", "updates"))
        first = state.count == 0

        def leaf(g: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
            ct = jtree.compute_dtype(jtree.promote(g.dtype, m.dtype))
            d, _ = jtree.decay_pair(decay, ct)
            _, keep = jtree.decay_pair(dampening, ct)
            gc = g.astype(ct)
            scaled = jnp.where(first, gc, keep * gc)
            new_m = d * m.astype(ct) + scaled
            out = gc + d * new_m if nesterov else new_m
            return jtree.cast(out, g.dtype), jtree.cast(new_m, m.dtype)

        out, new_trace = jtree.map_many(leaf, 2, updates, state.trace)
        return out, TraceState(jtree.safe_increment(state.count), new_trace)

    return GradientTransformation(init, update)


def _check_nesterov(momentum: Any, dampening: Any) -> None:
    """Nesterov needs a positive momentum and no dampening (torch refuses both too)."""
    if jtree.is_traced(momentum) or jtree.is_traced(dampening):
        return
    if momentum is None or float(momentum) <= 0:
        raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum!r}")
    if float(dampening) != 0:
        raise ValueError(f"nesterov=True requires dampening=0, got dampening={dampening!r}")
