"""Schedules joined end to end: ``join_schedules``, the warmup schedules and SGDR."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jopt.base import Schedule
from jopt.schedules._common import as_count, check_steps, concrete
from jopt.schedules._optax_style import (
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
)

__all__ = [
    "join_schedules",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules`` one after the other, each restarting its count at a boundary.

    Formula, with boundaries ``b_1 < ... < b_k`` and ``b_0 = 0``::

        v(t) = schedules[i](t - b_i)    for b_i <= t < b_{i+1}

    Args:
        schedules: ``k + 1`` schedules (jopt's, optax's or any ``count -> value``).
        boundaries: ``k`` steps, integers ``>= 0``, strictly increasing (optax accepts
            any order and any length and silently skips or drops schedules; jopt raises).

    Returns:
        A schedule ``count -> value``, in the common dtype of the pieces.

    Raises:
        ValueError: if ``schedules`` is empty, ``len(boundaries) != len(schedules) - 1``,
            or the boundaries are not increasing integers ``>= 0``.

    References:
        optax ``join_schedules``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.join_schedules(
        ...     [schedules.constant_schedule(1.0), schedules.linear_schedule(1.0, 0.0, 4)], [3]
        ... )
        >>> [round(float(schedule(t)), 4) for t in (0, 2, 3, 5, 7)]
        [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    schedules = tuple(schedules)
    if not schedules:
        raise ValueError("schedules must hold at least one schedule")
    for i, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(f"schedules[{i}] must be callable, got {type(schedule).__name__}")
    boundaries = tuple(check_steps(f"boundaries[{i}]", b, ge=0) for i, b in enumerate(boundaries))
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"len(boundaries)={len(boundaries)} must be len(schedules) - 1 = {len(schedules) - 1}"
        )
    if any(a >= b for a, b in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries={list(boundaries)!r} must be strictly increasing")

    def joined(count: jax.typing.ArrayLike) -> jax.Array:
        count = as_count(count)
        pieces = [jnp.asarray(schedules[0](count))]
        pieces += [
            jnp.asarray(s(count - b)) for s, b in zip(schedules[1:], boundaries, strict=True)
        ]
        dtype = functools.reduce(jnp.promote_types, [p.dtype for p in pieces])
        value = pieces[0].astype(dtype)
        for boundary, piece in zip(boundaries, pieces[1:], strict=True):
            value = jnp.where(count < boundary, value, piece.astype(dtype))
        return value

    return joined


def warmup_constant_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
) -> Schedule:
    """Warms up linearly from ``init_value`` to ``peak_value``, then holds the peak.

    Formula: ``v(t) = init_value + (peak_value - init_value) * min(t, W) / W`` with
    ``W = warmup_steps``.

    Args:
        init_value: the value at step 0.
        peak_value: the value from ``warmup_steps`` on.
        warmup_steps: the length of the warmup; ``>= 0``. As in optax (it is
            :func:`linear_schedule` with ``transition_steps=warmup_steps``),
            ``warmup_steps=0`` holds ``init_value`` forever, not ``peak_value``: for no
            warmup use ``constant_schedule(peak_value)``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: if ``warmup_steps`` is not an integer ``>= 0``.

    References:
        optax ``warmup_constant_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 4, 100)]
        [0.0, 0.25, 1.0, 1.0]
    """
    warmup_steps = check_steps("warmup_steps", warmup_steps, ge=0)
    return linear_schedule(
        init_value=init_value, end_value=peak_value, transition_steps=warmup_steps
    )


def warmup_cosine_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    decay_steps: int,
    end_value: jax.typing.ArrayLike = 0.0,
    exponent: jax.typing.ArrayLike = 1.0,
) -> Schedule:
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

    Formula, with ``W = warmup_steps``, ``D = decay_steps`` (the whole length, warmup
    included) and ``alpha = end_value / peak_value`` (0 when ``peak_value == 0``)::

        v(t) = init_value + (peak_value - init_value) * t / W            for t < W
        v(t) = peak_value * ((1 - alpha) * c ** exponent + alpha)       for t >= W
        c    = 0.5 * (1 + cos(pi * min(t - W, D - W) / (D - W)))

    Args:
        init_value: the value at step 0.
        peak_value: the value at the end of the warmup.
        warmup_steps: the length of the warmup; ``>= 0`` (0: start at the peak).
        decay_steps: the length of the whole schedule, warmup included;
            ``> warmup_steps`` (optax raises too, naming only the difference).
        end_value: the value from ``decay_steps`` on.
        exponent: the power of the cosine factor; ``> 0``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: for negative ``warmup_steps``, ``decay_steps <= warmup_steps`` or
            ``exponent <= 0``.

    References:
        optax ``warmup_cosine_decay_schedule``; Loshchilov & Hutter, *SGDR*, ICLR 2017.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.warmup_cosine_decay_schedule(
        ...     0.0, 1.0, warmup_steps=2, decay_steps=6, end_value=0.1
        ... )
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 4, 6, 50)]
        [0.0, 0.5, 1.0, 0.55, 0.1, 0.1]
    """
    warmup_steps = check_steps("warmup_steps", warmup_steps, ge=0)
    decay_steps = check_steps("decay_steps", decay_steps)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"decay_steps={decay_steps!r} must be > warmup_steps={warmup_steps!r}: it is the "
            "length of the whole schedule, warmup included"
        )
    peak = concrete(peak_value)
    if peak is None:
        alpha: Any = jnp.where(jnp.asarray(peak_value) == 0, 0.0, end_value / peak_value)
    else:
        alpha = 0.0 if peak == 0.0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, transition_steps=warmup_steps),
            cosine_decay_schedule(
                peak_value, decay_steps=decay_steps - warmup_steps, alpha=alpha, exponent=exponent
            ),
        ],
        [warmup_steps],
    )


def warmup_exponential_decay_schedule(
    init_value: jax.typing.ArrayLike,
    peak_value: jax.typing.ArrayLike,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: jax.typing.ArrayLike | None = None,
) -> Schedule:
    """Linear warmup to ``peak_value``, then :func:`exponential_decay` from the peak.

    Formula, with ``W = warmup_steps``::

        v(t) = init_value + (peak_value - init_value) * t / W       for t < W
        v(t) = exponential_decay(peak_value, ...)(t - W)            for t >= W

    Args:
        init_value: the value at step 0.
        peak_value: the value at the end of the warmup.
        warmup_steps: the length of the warmup; ``>= 0``.
        transition_steps: as in :func:`exponential_decay`.
        decay_rate: as in :func:`exponential_decay`.
        transition_begin: steps after the warmup before decaying; ``>= 0``.
        staircase: decay in discrete jumps.
        end_value: the bound of the decay, or ``None``.

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: as :func:`exponential_decay`, or for negative ``warmup_steps``.

    References:
        optax ``warmup_exponential_decay_schedule``.

    Example:
        >>> from jopt import schedules
        >>> schedule = schedules.warmup_exponential_decay_schedule(
        ...     0.0, 1.0, warmup_steps=2, transition_steps=1, decay_rate=0.5
        ... )
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 3, 5)]
        [0.0, 0.5, 1.0, 0.5, 0.125]
    """
    warmup_steps = check_steps("warmup_steps", warmup_steps, ge=0)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, transition_steps=warmup_steps),
            exponential_decay(
                peak_value,
                transition_steps=transition_steps,
                decay_rate=decay_rate,
                transition_begin=transition_begin,
                staircase=staircase,
                end_value=end_value,
            ),
        ],
        [warmup_steps],
    )


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """Stochastic gradient descent with warm restarts: warmup-cosine cycles end to end.

    Formula: :func:`join_schedules` of ``warmup_cosine_decay_schedule(**kwargs_i)``, the
    ``i``-th cycle starting when the previous cycles' ``decay_steps`` have elapsed.

    Args:
        cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule` arguments per
            cycle; at least one (optax fails only when the schedule is called).

    Returns:
        A schedule ``count -> value``.

    Raises:
        ValueError: if there is no cycle, or a cycle's arguments are invalid.

    References:
        optax ``sgdr_schedule``; Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent
        with Warm Restarts*, ICLR 2017.

    Example:
        >>> from jopt import schedules
        >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=1, decay_steps=3)
        >>> schedule = schedules.sgdr_schedule([cycle, cycle])
        >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 3, 4, 5, 6)]
        [0.0, 1.0, 0.5, 0.0, 1.0, 0.5, 0.0]
    """
    cycles = list(cosine_kwargs)
    if not cycles:
        raise ValueError("cosine_kwargs must hold at least one dict of arguments")
    schedules, boundaries, step = [], [], 0
    for i, kwargs in enumerate(cycles):
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"cosine_kwargs[{i}] must be a dict, got {type(kwargs).__name__}")
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        step += check_steps("decay_steps", kwargs["decay_steps"])
        boundaries.append(step)
    return join_schedules(schedules, boundaries[:-1])
