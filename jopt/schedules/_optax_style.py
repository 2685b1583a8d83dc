"""The basic optax schedules: constant, polynomial, exponential, cosine and piecewise.

Each function takes optax 0.2.8's arguments and returns a :data:`~jopt.base.Schedule`
with optax's values. The arithmetic follows optax's formulas in the same order, with
explicit dtypes: a schedule computes and returns in the common float dtype of the values
given as arrays, else in jax's default float (float64 under ``jax.enable_x64``).

Validation (decided case by case, see each function): degenerate inputs that optax
documents or handles on purpose keep optax's values (``transition_steps <= 0`` gives a
constant, ``decay_rate == 0`` gives a constant); inputs optax silently turns into other
values, NaN or Inf raise ``ValueError`` at construction, naming the argument.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jopt.base import Schedule
from jopt.schedules._common import (
    as_count,
    check_real,
    check_steps,
    concrete,
    lift,
    value_dtype,
)

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
]


def constant_schedule(value: jax.typing.ArrayLike) -> Schedule:
    """A schedule that always returns ``value``.

    Formula: ``v(t) = value``.

    Args:
        value: the value held throughout.

    Returns:
        A schedule ``count -> value`` (a scalar array in the value's float dtype).

    References:
        optax ``constant_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.constant_schedule(0.5)
        >>> print(schedule(0), schedule(1000))
        0.5 0.5
    """

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        del count
        dtype = value_dtype(value)
        return jnp.asarray(value).astype(dtype)

    return schedule


def polynomial_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    power: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Anneals from ``init_value`` to ``end_value`` along a polynomial of degree ``power``.

    Formula, with ``I = init_value``, ``E = end_value``, ``B = transition_begin``,
    ``T = transition_steps``::

        v(t) = (I - E) * (1 - clip(t - B, 0, T) / T) ** power + E

    so ``v = I`` up to step ``B`` and ``v = E`` from step ``B + T`` on.

    Args:
        init_value: the value before and at ``transition_begin``.
        end_value: the value from ``transition_begin + transition_steps`` on.
        power: the degree of the polynomial (1 is linear).
        transition_steps: the length of the transition. As documented by optax,
            ``transition_steps <= 0`` disables it: the schedule is the constant
            ``init_value`` (kept for parity; note it is *not* ``end_value``).
        transition_begin: steps to hold ``init_value`` before the transition; ``>= 0``
            (optax silently replaces a negative value by 0; jopt raises).

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: if ``transition_steps`` or ``transition_begin`` is not an integer,
            or ``transition_begin < 0``.

    References:
        optax ``polynomial_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.polynomial_schedule(
        ...     init_value=1.0, end_value=0.0, power=2, transition_steps=4, transition_begin=2
        ... )
        >>> [round(float(schedule(t)), 4) for t in (0, 2, 3, 4, 6, 100)]
        [1.0, 1.0, 0.5625, 0.25, 0.0, 0.0]
    """
    transition_steps = check_steps("transition_steps", transition_steps)
    transition_begin = check_steps("transition_begin", transition_begin, ge=0)
    if transition_steps <= 0:
        # optax documents this case: the annealing is disabled and init_value is held.
        return constant_schedule(init_value)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = value_dtype(init_value, end_value, power)
        init, end, exponent = (lift(v, dtype) for v in (init_value, end_value, power))
        elapsed = jnp.clip(as_count(count) - transition_begin, 0, transition_steps)
        # optax's 1 - elapsed / T, pinned to 0 at the end: under jit XLA turns / T into
        # * (1 / T) fused into an FMA, leaving 2e-8 there, which power=0.5 makes 1.5e-4
        # (jitted optax gives 0.010148 instead of 0.01 at the end of 1.0 -> 0.01).
        frac = jnp.where(
            elapsed >= transition_steps, 0, 1 - elapsed.astype(dtype) / transition_steps
        )
        return jnp.asarray((init - end) * frac**exponent + end).astype(dtype)

    return schedule


def linear_schedule(
    init_value: jax.typing.ArrayLike,
    end_value: jax.typing.ArrayLike,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Anneals linearly from ``init_value`` to ``end_value``.

    Formula: :func:`polynomial_schedule` with ``power=1``::

        v(t) = (I - E) * (1 - clip(t - B, 0, T) / T) + E

    Args:
        init_value: the value before and at ``transition_begin``.
        end_value: the value from ``transition_begin + transition_steps`` on.
        transition_steps: the length of the transition; ``<= 0`` gives the constant
            ``init_value``, as in optax.
        transition_begin: steps to hold ``init_value`` first; ``>= 0``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: as :func:`polynomial_schedule`.

    References:
        optax ``linear_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.linear_schedule(0.0, 1.0, transition_steps=4, transition_begin=1)
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 3, 5, 9)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    return polynomial_schedule(
        init_value=init_value,
        end_value=end_value,
        power=1,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )


def exponential_decay(
    init_value: jax.typing.ArrayLike,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: jax.typing.ArrayLike | None = None,
) -> Schedule:
    """Decays ``init_value`` by ``decay_rate`` every ``transition_steps`` steps.

    Formula, with ``p = (t - transition_begin) / transition_steps`` (``floor(p)`` when
    ``staircase``)::

        v(t) = init_value                       for t <= transition_begin
        v(t) = init_value * decay_rate ** p     after,

    clipped from below by ``end_value`` when ``decay_rate < 1`` (from above when
    ``decay_rate > 1``).

    Args:
        init_value: the initial value.
        transition_steps: steps per factor of ``decay_rate``. optax returns the constant
            ``init_value`` (and logs) when ``transition_steps <= 0``; jopt keeps that.
        decay_rate: the factor per ``transition_steps``; ``>= 0``. optax returns the
            constant ``init_value`` for ``decay_rate == 0`` (and logs); jopt keeps that.
            A negative rate (NaN for fractional powers) raises.
        transition_begin: steps to hold ``init_value`` first; ``>= 0`` (optax replaces a
            negative value by 0; jopt raises).
        staircase: decay in discrete jumps instead of continuously.
        end_value: a bound the value never crosses; ``None`` for no bound. It must lie on
            the far side of ``init_value`` (below it when ``decay_rate < 1``), else the
            schedule would be the constant ``end_value``: jopt raises.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for a negative ``decay_rate`` or ``transition_begin``, a non-integer
            step count, or an ``end_value`` on the wrong side of ``init_value``.

    References:
        optax ``exponential_decay``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.exponential_decay(
        ...     1.0, transition_steps=2, decay_rate=0.5, transition_begin=1, staircase=True
        ... )
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 3, 5, 7)]
        [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    """
    transition_steps = check_steps("transition_steps", transition_steps)
    transition_begin = check_steps("transition_begin", transition_begin, ge=0)
    check_real("decay_rate", decay_rate, ge=0)
    rate = concrete(decay_rate)
    if transition_steps <= 0 or rate == 0:
        # optax deliberately returns a constant here (logging it); parity keeps it.
        return constant_schedule(init_value)
    if end_value is not None:
        init, end = concrete(init_value), concrete(end_value)
        if rate is not None and init is not None and end is not None:
            if rate < 1 and end > init:
                raise ValueError(
                    f"end_value={end_value!r} must be <= init_value={init_value!r} when "
                    f"decay_rate={decay_rate!r} < 1 (it is a lower bound)"
                )
            if rate > 1 and end < init:
                raise ValueError(
                    f"end_value={end_value!r} must be >= init_value={init_value!r} when "
                    f"decay_rate={decay_rate!r} > 1 (it is an upper bound)"
                )

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = value_dtype(init_value, decay_rate, end_value)
        init, base = lift(init_value, dtype), lift(decay_rate, dtype)
        elapsed = as_count(count) - transition_begin
        p = elapsed.astype(dtype) / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init, init * base**p).astype(dtype)
        if end_value is not None:
            end = lift(end_value, dtype)
            value = jnp.where(base < 1, jnp.maximum(value, end), jnp.minimum(value, end))
        return value.astype(dtype)

    return schedule


def cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    decay_steps: int,
    alpha: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
    """Decays ``init_value`` along a half cosine to ``alpha * init_value``.

    Formula, with ``T = decay_steps``::

        c(t) = 0.5 * (1 + cos(pi * min(t, T) / T))
        v(t) = init_value * ((1 - alpha) * c(t) ** exponent + alpha)

    Args:
        init_value: the initial value.
        decay_steps: the length of the decay; ``> 0`` (optax raises too).
        alpha: the final value as a fraction of ``init_value``.
        exponent: the power of the cosine factor; ``> 0`` (0 or less gives a constant
            or Inf at the end: jopt raises).

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: if ``decay_steps`` is not a positive integer or ``exponent <= 0``.

    References:
        optax ``cosine_decay_schedule``; Loshchilov & Hutter, *SGDR: Stochastic Gradient
        Descent with Warm Restarts*, ICLR 2017.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.cosine_decay_schedule(1.0, decay_steps=4, alpha=0.1)
        >>> [round(float(schedule(t)), 4) for t in (0, 2, 4, 10)]
        [1.0, 0.55, 0.1, 0.1]
    """
    decay_steps = check_steps("decay_steps", decay_steps, gt=0)
    check_real("exponent", exponent, gt=0)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = value_dtype(init_value, alpha, exponent)
        init, a, p = (lift(v, dtype) for v in (init_value, alpha, exponent))
        t = jnp.minimum(as_count(count).astype(dtype), decay_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))
        return jnp.asarray(init * ((1 - a) * cosine**p + a)).astype(dtype)

    return schedule


def _sorted_boundaries(
    boundaries_and_scales: Mapping[int, float] | None,
) -> tuple[tuple[int, ...], tuple[Any, ...]]:
    """Checks ``{step: scale}`` (steps integers >= 0, scales >= 0) and sorts it by step."""
    if boundaries_and_scales is None:
        return (), ()
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            "boundaries_and_scales must be a dict {step: scale}, got "
            f"{type(boundaries_and_scales).__name__}"
        )
    pairs = []
    for step, scale in boundaries_and_scales.items():
        try:
            boundary = check_steps("boundary", step, ge=0)
        except ValueError:
            raise ValueError(
                f"boundaries_and_scales key {step!r} must be an integer step >= 0"
            ) from None
        check_real(f"boundaries_and_scales[{step!r}]", scale, ge=0)
        pairs.append((boundary, scale))
    pairs.sort(key=lambda pair: pair[0])
    return tuple(b for b, _ in pairs), tuple(s for _, s in pairs)


def piecewise_constant_schedule(
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """Multiplies ``init_value`` by a scale at each boundary step.

    Formula: ``v(t) = init_value * prod(scale_i for boundary_i <= t)``.

    Args:
        init_value: the value before the first boundary.
        boundaries_and_scales: ``{step: scale}``; steps are integers ``>= 0`` (any
            order), scales ``>= 0`` (optax checks the scales too).

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for a negative or non-integer step or a negative scale.

    References:
        optax ``piecewise_constant_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
        >>> [round(float(schedule(t)), 4) for t in (0, 9, 10, 19, 20)]
        [1.0, 1.0, 0.1, 0.1, 0.05]
    """
    boundaries, scales = _sorted_boundaries(boundaries_and_scales)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = value_dtype(init_value, *scales)
        count = as_count(count)
        value = jnp.asarray(lift(init_value, dtype), dtype)
        for boundary, scale in zip(boundaries, scales, strict=True):
            value = jnp.where(count >= boundary, lift(scale, dtype) * value, value)
        return value.astype(dtype)

    return schedule


def _linear_interpolate(start: jax.Array, end: jax.Array, pct: jax.Array) -> jax.Array:
    return (end - start) * pct + start


def _cosine_interpolate(start: jax.Array, end: jax.Array, pct: jax.Array) -> jax.Array:
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: jax.typing.ArrayLike,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """Interpolates between knots whose values are running products of scales.

    Formula: knots ``b_0 = 0 < b_1 < ... < b_k`` (the given steps) carry the values
    ``v_0 = init_value`` and ``v_i = v_{i-1} * scale_i``. Between ``b_i`` and ``b_{i+1}``,
    with ``pct = (t - b_i) / (b_{i+1} - b_i)``::

        linear: v(t) = v_i + (v_{i+1} - v_i) * pct
        cosine: v(t) = v_{i+1} + (v_i - v_{i+1}) / 2 * (1 + cos(pi * pct))

    and ``v(t) = v_k`` from ``b_k`` on.

    Args:
        interpolate_type: ``'linear'`` or ``'cosine'``.
        init_value: the value at step 0.
        boundaries_and_scales: ``{step: scale}``; steps integers ``>= 0``, scales
            ``>= 0``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for an unknown ``interpolate_type``, or bad steps or scales.

    References:
        optax ``piecewise_interpolate_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5, 8: 0.5})
        >>> [round(float(schedule(t)), 4) for t in (0, 2, 4, 6, 8, 20)]
        [1.0, 0.75, 0.5, 0.375, 0.25, 0.25]
    """
    if interpolate_type == "linear":
        interpolate = _linear_interpolate
    elif interpolate_type == "cosine":
        interpolate = _cosine_interpolate
    else:
        raise ValueError(f"interpolate_type={interpolate_type!r} must be 'linear' or 'cosine'")
    boundaries, scales = _sorted_boundaries(boundaries_and_scales)
    knots = (0, *boundaries)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        dtype = value_dtype(init_value, *scales)
        count = as_count(count)
        t = count[..., None]
        values = jnp.cumprod(
            jnp.stack([jnp.asarray(v).astype(dtype) for v in (init_value, *scales)])
        )
        b = jnp.asarray(knots, dtype=count.dtype)
        sizes = jnp.maximum(b[1:] - b[:-1], 1)
        inside = (b[:-1] <= t) & (t < b[1:])
        pct = (t - b[:-1]).astype(dtype) / sizes.astype(dtype)
        between = jnp.sum(jnp.where(inside, interpolate(values[:-1], values[1:], pct), 0), axis=-1)
        after = jnp.where(b[-1] <= count, values[-1], 0)
        return (between + after).astype(dtype)

    return schedule


def _onecycle_boundaries(name: str, transition_steps: int, *pcts: tuple[str, Any]) -> list[int]:
    """The knots ``int(pct * transition_steps)`` of a one-cycle schedule, checked distinct."""
    knots = []
    for pct_name, pct in pcts:
        check_real(pct_name, pct, ge=0, le=1)
        knots.append(int(pct * transition_steps))
    knots.append(transition_steps)
    if any(a >= b for a, b in itertools.pairwise(knots)):
        described = " < ".join(
            [f"int({n} * transition_steps)={k}" for (n, _), k in zip(pcts, knots, strict=False)]
            + [f"transition_steps={transition_steps}"]
        )
        given = ", ".join(f"{n}={p!r}" for n, p in pcts)
        raise ValueError(
            f"{name} needs {described} (phases of at least one step); got {given}: "
            "optax would silently merge the phases"
        )
    return knots


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with linear pieces: up to the peak, back down, then to ~0.

    Formula: :func:`piecewise_interpolate_schedule` (``'linear'``) through the knots::

        step 0                              : peak_value / div_factor
        step int(pct_start * T)             : peak_value
        step int(pct_final * T)             : peak_value / div_factor
        step T                              : peak_value / div_factor / final_div_factor

    with ``T = transition_steps``; constant after ``T``.

    Args:
        transition_steps: the length of the cycle; ``> 0``.
        peak_value: the maximum value.
        pct_start: fraction of the cycle spent rising, in ``[0, 1]``.
        pct_final: fraction of the cycle at which the descent ends, in ``[0, 1]``.
        div_factor: ``peak_value / div_factor`` is the start value; ``> 0``.
        final_div_factor: the end value is the start value over this; ``> 0``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for bad factors, or when the three phases do not each get a step
            (``int(pct_start*T) < int(pct_final*T) < T`` fails; optax silently merges
            them into different values).

    References:
        optax ``linear_onecycle_schedule``; Smith & Topin, *Super-Convergence: Very Fast
        Training of Neural Networks Using Large Learning Rates*, 2018.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.linear_onecycle_schedule(10, 1.0, div_factor=10.0)
        >>> [round(float(schedule(t)), 4) for t in (0, 3, 8, 10)]
        [0.1, 1.0, 0.1, 0.0]
    """
    transition_steps = check_steps("transition_steps", transition_steps, gt=0)
    check_real("div_factor", div_factor, gt=0)
    check_real("final_div_factor", final_div_factor, gt=0)
    up, down, end = _onecycle_boundaries(
        "linear_onecycle_schedule",
        transition_steps,
        ("pct_start", pct_start),
        ("pct_final", pct_final),
    )
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {up: div_factor, down: 1.0 / div_factor, end: 1.0 / final_div_factor},
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: jax.typing.ArrayLike,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy with cosine pieces: up to the peak, then down to ~0.

    Formula: :func:`piecewise_interpolate_schedule` (``'cosine'``) through the knots::

        step 0                  : peak_value / div_factor
        step int(pct_start * T) : peak_value
        step T                  : peak_value / div_factor / final_div_factor

    Args:
        transition_steps: the length of the cycle ``T``; ``> 0``.
        peak_value: the maximum value.
        pct_start: fraction of the cycle spent rising, in ``[0, 1]`` with
            ``int(pct_start * T) < T``.
        div_factor: ``peak_value / div_factor`` is the start value; ``> 0``.
        final_div_factor: the end value is the start value over this; ``> 0``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for bad factors or when the rising phase swallows the cycle.

    References:
        optax ``cosine_onecycle_schedule``; Smith & Topin, *Super-Convergence*, 2018.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.cosine_onecycle_schedule(10, 1.0, pct_start=0.2, div_factor=4.0)
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 10)]
        [0.25, 0.625, 1.0, 0.0]
    """
    transition_steps = check_steps("transition_steps", transition_steps, gt=0)
    check_real("div_factor", div_factor, gt=0)
    check_real("final_div_factor", final_div_factor, gt=0)
    up, end = _onecycle_boundaries(
        "cosine_onecycle_schedule", transition_steps, ("pct_start", pct_start)
    )
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {up: div_factor, end: 1.0 / (div_factor * final_div_factor)},
    )
