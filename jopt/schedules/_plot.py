"""Drawing a schedule with matplotlib (an optional dependency: ``pip install jopt[examples]``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.base import Schedule
from jopt.schedules._common import check_steps

__all__ = ["plot"]


def plot(schedule: Schedule, steps: int, *, ax: Any = None, label: str | None = None) -> Any:
    """Draws ``schedule(t)`` for ``t`` in ``range(steps)`` and returns the matplotlib Axes.

    The values come from one vectorized call (``jax.vmap`` over ``jnp.arange(steps)``),
    so any schedule that works under ``vmap`` can be drawn: jopt's (both doors), optax's,
    or a plain jax-traceable function.

    Args:
        schedule: a function ``count -> value``.
        steps: how many steps to draw; ``>= 1``.
        ax: the matplotlib Axes to draw on; a new figure when ``None``.
        label: the line's legend label; a legend is drawn when given.

    Returns:
        The ``matplotlib.axes.Axes`` drawn on.

    Raises:
        ImportError: if matplotlib is not installed.
        ValueError: if ``steps`` is not an integer ``>= 1``.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> from jopt import schedules
        >>> ax = schedules.plot(schedules.linear_schedule(1.0, 0.0, 10), 12, label="linear")
        >>> line = ax.get_lines()[0]
        >>> [round(float(v), 2) for v in line.get_ydata()[[0, 5, 10, 11]]]
        [1.0, 0.5, 0.0, 0.0]
    """
    steps = check_steps("steps", steps, ge=1)
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "jopt.schedules.plot needs matplotlib: pip install jopt[examples]"
        ) from error
    counts = jnp.arange(steps, dtype=jnp.int32)
    values = np.asarray(jax.jit(jax.vmap(lambda count: jnp.asarray(schedule(count))))(counts))
    values = np.broadcast_to(values, (steps,))
    if ax is None:
        _, ax = plt.subplots()
    ax.plot(np.arange(steps), values, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if label is not None:
        ax.legend()
    return ax
