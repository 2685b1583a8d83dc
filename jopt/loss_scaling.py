"""Dynamic loss scaling for half-precision training, with ``torch.amp.GradScaler``'s rule.

float16 gradients underflow: values below 6e-8 round to zero. Multiplying the loss
by a large scale ``S`` before differentiating multiplies every gradient by ``S`` and
lifts them into range; the optimizer then divides by ``S`` again. Too large a scale
overflows to Inf, so the scale is adjusted as training goes: halved (and the step
dropped) when the gradients are not finite, doubled after ``growth_interval``
consecutive finite steps. The scale and its counters live in the optimizer state, so
the whole cycle runs inside one jitted step with no host sync::

    tx = jopt.dynamic_loss_scale(jopt.adam(1e-3))
    state = tx.init(params)

    def scaled_loss(params, state, batch):
        return jopt.scale_loss(loss_fn(params, batch), state)   # loss * S

    grads = jax.grad(scaled_loss)(params, state, batch)         # S * dloss/dparams
    updates, state = tx.update(grads, state, params)            # unscale, check, step
    params = jopt.apply_updates(params, updates)

bfloat16 has float32's exponent range and rarely needs a scale; float16 does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates
from jopt.combine import accepts_extra_args, call_update
from jopt.finite import all_finite
from jopt.hyperparams import POSITIVE, Interval, check_hyperparam
from jopt.wrapping import find_state, select

__all__ = [
    "DynamicLossScaleState",
    "dynamic_loss_scale",
    "loss_scale",
    "scale_loss",
    "skipped_steps",
]

_GROWTH = Interval(1.0, None, low_open=True)
_BACKOFF = Interval(0.0, 1.0, low_open=True, high_open=True)
_INTERVAL = Interval(1.0, None)


class DynamicLossScaleState(NamedTuple):
    """State of :func:`dynamic_loss_scale`.

    Attributes:
        scale: float32 scalar, the loss scale the next step uses (torch's ``_scale``).
        growth_tracker: int32 consecutive finite steps since the scale last changed
            (torch's ``_growth_tracker``).
        skipped_steps: int32 number of steps dropped for non-finite gradients.
        last_finite: bool, whether the last step's gradients were finite.
        inner_state: the state of the wrapped optimizer.
    """

    scale: jax.Array
    growth_tracker: jax.Array
    skipped_steps: jax.Array
    last_finite: jax.Array
    inner_state: OptState


def _check_scaler_args(
    init_scale: float, growth_factor: float, backoff_factor: float, growth_interval: int
) -> None:
    check_hyperparam("init_scale", init_scale, POSITIVE)
    largest = float(np.finfo(np.float32).max)
    if not init_scale <= largest:
        raise ValueError(f"init_scale={init_scale!r} must be <= {largest:g} (a float32 scale)")
    check_hyperparam("growth_factor", growth_factor, _GROWTH)
    check_hyperparam("backoff_factor", backoff_factor, _BACKOFF)
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, int):
        raise TypeError(f"growth_interval must be an int, got {type(growth_interval).__name__}")
    check_hyperparam("growth_interval", growth_interval, _INTERVAL)
    if growth_interval > np.iinfo(np.int32).max:
        raise ValueError(f"growth_interval={growth_interval} must fit in int32")


def _times(scale: jax.Array, factor: float) -> jax.Array:
    """``scale * factor`` rounded once to float32, as torch's kernel (float times double)."""
    wide = jnp.asarray(0.0).dtype  # float64 under x64: torch's exact product
    return (scale.astype(wide) * factor).astype(jnp.float32)


def dynamic_loss_scale(
    inner: GradientTransformation,
    *,
    init_scale: float = 2.0**16,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
) -> GradientTransformation:
    """Unscales the gradients of a scaled loss, drops non-finite steps, adapts the scale.

    ``update`` receives the gradients of ``scale_loss(loss, state)``, i.e. of the loss
    times the current scale ``S``. Update rule (``torch.amp.GradScaler``'s ``unscale_``,
    ``step`` and ``update``, whose scale rule is ``torch._amp_update_scale_``)::

        finite = all(isfinite(g))                       (checked on the scaled g)
        u, s = inner(g * (1 / S), s)     if finite      (unscaled in float32 at least)
        u, s = 0, s                      otherwise      (inner state untouched)
        if not finite:  S <- S * backoff_factor;  tracker <- 0
        elif tracker + 1 == growth_interval:
                        S <- S * growth_factor (unless that overflows float32); tracker <- 0
        else:           tracker <- tracker + 1

    The unscaled gradients keep their dtype (rounded once from float32, as torch
    unscales half-precision gradients in place); keep master parameters in float32
    so that their gradients are float32. Everything happens on device.

    Args:
        inner: the optimizer that receives the unscaled gradients (put gradient
            clipping in it: it then clips unscaled values, like torch's ``unscale_``).
        init_scale: the initial scale, > 0.
        growth_factor: multiplies the scale after ``growth_interval`` finite steps, > 1.
        backoff_factor: multiplies the scale after a non-finite step, in (0, 1).
        growth_interval: consecutive finite steps before the scale grows, >= 1.

    Returns:
        A transformation whose state is a :class:`DynamicLossScaleState`; read it with
        :func:`loss_scale` and :func:`skipped_steps`, scale the loss with :func:`scale_loss`.

    References:
        Micikevicius et al., "Mixed Precision Training", ICLR 2018;
        ``torch.amp.GradScaler`` (see :class:`jopt.torch.amp.GradScaler` for its spelling).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.dynamic_loss_scale(jopt.sgd(0.25), init_scale=1024.0, growth_interval=2)
        >>> w = jnp.ones(2)
        >>> state = tx.init(w)
        >>> for bad in [False, True, False, False]:
        ...     loss = lambda w: jopt.scale_loss(jnp.sum(w * jnp.where(bad, jnp.inf, 1.0)), state)
        ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
        ...     w = jopt.apply_updates(w, updates)
        ...     print(w, jopt.loss_scale(state), jopt.skipped_steps(state))
        [0.75 0.75] 1024.0 0
        [0.75 0.75] 512.0 1
        [0.5 0.5] 512.0 1
        [0.25 0.25] 1024.0 1
    """
    _check_scaler_args(init_scale, growth_factor, backoff_factor, growth_interval)
    takes_extra = accepts_extra_args(inner)

    def init(params: Params) -> DynamicLossScaleState:
        zero = jnp.zeros((), jnp.int32)
        scale = jnp.asarray(init_scale, jnp.float32)
        return DynamicLossScaleState(scale, zero, zero, jnp.asarray(True), inner.init(params))

    def update(
        updates: Updates, state: DynamicLossScaleState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, DynamicLossScaleState]:
        scale = state.scale
        finite = all_finite(updates)
        # torch: scale.double().reciprocal().float(), then each gradient times it. Beyond a
        # scale of 2**126 that reciprocal is subnormal, which XLA flushes to zero: divide.
        inverse = (1 / scale.astype(jnp.asarray(0.0).dtype)).astype(jnp.float32)
        normal = inverse >= jnp.finfo(jnp.float32).tiny

        def unscale(g: jax.Array) -> jax.Array:
            ct = jtree.compute_dtype(g.dtype)
            wide = g.astype(ct)
            out = jnp.where(normal, wide * inverse.astype(ct), wide / scale.astype(ct))
            return jtree.cast(out, g.dtype)

        new_updates, new_inner = call_update(
            inner, jax.tree.map(unscale, updates), state.inner_state, params, extra, takes_extra
        )
        successful = state.growth_tracker + 1
        grow = successful == growth_interval
        grown = _times(scale, growth_factor)
        grown = jnp.where(jnp.isfinite(grown), grown, scale)
        zero = jnp.zeros((), jnp.int32)
        new_state = DynamicLossScaleState(
            scale=jnp.where(finite, jnp.where(grow, grown, scale), _times(scale, backoff_factor)),
            growth_tracker=jnp.where(finite & ~grow, successful, zero),
            skipped_steps=jnp.where(
                finite, state.skipped_steps, jtree.safe_increment(state.skipped_steps)
            ),
            last_finite=finite,
            inner_state=select(finite, new_inner, state.inner_state),
        )
        return select(finite, new_updates, jtree.zeros_like(new_updates)), new_state

    return GradientTransformation(init, update)


def _state(state: OptState, reader: str) -> DynamicLossScaleState:
    return find_state(state, DynamicLossScaleState, reader, "jopt.dynamic_loss_scale")


def scale_loss(loss: Any, state: OptState) -> Any:
    """The loss times the current loss scale: call it inside the function you differentiate.

    Computes in at least float32 and returns that dtype (a float16 loss times 2**16
    would overflow in float16). The scale is a constant for differentiation, so
    ``jax.grad`` of the result is the scale times the gradient of ``loss``. ``loss``
    may also be a pytree of losses (each is scaled, like torch's ``scale`` of a list).

    Args:
        loss: a scalar loss (or a pytree of them).
        state: an optimizer state containing one :func:`dynamic_loss_scale` state.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> state = jopt.dynamic_loss_scale(jopt.sgd(0.1)).init(jnp.zeros(1))
        >>> jopt.scale_loss(jnp.asarray(0.5, jnp.float16), state)
        Array(32768., dtype=float32)
    """
    scale = jax.lax.stop_gradient(_state(state, "scale_loss").scale)

    def times(x: Any) -> jax.Array:
        x = jnp.asarray(x)
        ct = jtree.compute_dtype(x.dtype)
        return x.astype(ct) * scale.astype(ct)

    return jax.tree.map(times, loss)


def loss_scale(state: OptState) -> jax.Array:
    """The loss scale the next step will use (float32 scalar, on device).

    torch's ``GradScaler.get_scale()``, without its host sync: call ``float()`` on the
    result if you need a Python number.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.loss_scale(jopt.dynamic_loss_scale(jopt.sgd(0.1)).init(jnp.zeros(1)))
        Array(65536., dtype=float32)
    """
    return _state(state, "loss_scale").scale


def skipped_steps(state: OptState) -> jax.Array:
    """How many steps :func:`dynamic_loss_scale` dropped for non-finite gradients (int32).

    Only loss-scaling states are counted; :func:`jopt.apply_if_finite` keeps its own
    counters (``total_notfinite``) in its state.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.skipped_steps(jopt.dynamic_loss_scale(jopt.sgd(0.1)).init(jnp.zeros(1)))
        Array(0, dtype=int32)
    """
    return _state(state, "skipped_steps").skipped_steps
