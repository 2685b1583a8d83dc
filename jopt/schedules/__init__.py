"""Schedules: functions from the step count to a hyperparameter value (the optax door).

Every schedule of ``optax.schedules`` 0.2.8, with the same names, arguments, defaults
and values. Each returns a function ``count -> value`` that works on a Python int and on
a traced int32 scalar under ``jax.jit`` and ``jax.vmap``. Arguments that optax silently
turns into something else (a negative ``transition_begin``, unsorted boundaries, phases
that collapse) raise ``ValueError`` at construction, naming the argument. The torch
door's schedulers live in :mod:`jopt.torch.lr_scheduler`; :func:`plot` draws either.
"""

from jopt.schedules._join import join_schedules as join_schedules
from jopt.schedules._join import sgdr_schedule as sgdr_schedule
from jopt.schedules._join import warmup_constant_schedule as warmup_constant_schedule
from jopt.schedules._join import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from jopt.schedules._join import (
    warmup_exponential_decay_schedule as warmup_exponential_decay_schedule,
)
from jopt.schedules._optax_style import constant_schedule as constant_schedule
from jopt.schedules._optax_style import cosine_decay_schedule as cosine_decay_schedule
from jopt.schedules._optax_style import cosine_onecycle_schedule as cosine_onecycle_schedule
from jopt.schedules._optax_style import exponential_decay as exponential_decay
from jopt.schedules._optax_style import linear_onecycle_schedule as linear_onecycle_schedule
from jopt.schedules._optax_style import linear_schedule as linear_schedule
from jopt.schedules._optax_style import piecewise_constant_schedule as piecewise_constant_schedule
from jopt.schedules._optax_style import (
    piecewise_interpolate_schedule as piecewise_interpolate_schedule,
)
from jopt.schedules._optax_style import polynomial_schedule as polynomial_schedule
from jopt.schedules._plot import plot as plot

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "plot",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
