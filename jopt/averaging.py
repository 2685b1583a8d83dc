"""Parameter averaging: an exponential moving average (Polyak) of the parameters.

Averaged weights often evaluate better than the last iterate. The wrappers here keep
the average in the optimizer state, updated on every step from the parameters the
step produces (``params + updates``, rounded as :func:`jopt.apply_updates` rounds), so
it jits, checkpoints and shards with the rest of the state. Read it with
:func:`averaged_params`.

- :func:`ema_params` is optax's ``ema`` applied to the parameters: a zero-initialised
  EMA, optionally bias-corrected.
- :class:`jopt.torch.swa_utils.AveragedModel` is torch's ``AveragedModel``: the first
  update copies the parameters, later ones apply an averaging function (EMA or the
  equal-weight SWA average).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates, apply_updates
from jopt.combine import accepts_extra_args, call_update
from jopt.hyperparams import UNIT, check_hyperparam
from jopt.wrapping import find_state

__all__ = ["AveragedParamsState", "averaged_params", "ema_params"]

AverageStep = Callable[[Params, Params, jax.Array], Params]
"""``(average, current, count) -> new average``; ``count`` = updates averaged so far."""


@dataclasses.dataclass(frozen=True)
class AverageSpec:
    """Static: how :func:`averaged_params` reads the stored average.

    ``debias_decay`` is the EMA decay whose zero initialisation the reader undoes
    (``average / (1 - decay ** count)``), or ``None`` to return the average as stored.
    """

    owner: str
    debias_decay: float | None = None


jax.tree_util.register_static(AverageSpec)


class AveragedParamsState(NamedTuple):
    """State of the parameter-averaging wrappers.

    Attributes:
        n_averaged: int32 number of parameter sets averaged (torch's name).
        average: the running average, shaped like the params.
        inner_state: the state of the wrapped optimizer.
        spec: static; tells :func:`averaged_params` how to read ``average``.
    """

    n_averaged: jax.Array
    average: Params
    inner_state: OptState
    spec: AverageSpec


def averaging(
    inner: GradientTransformation,
    step: AverageStep,
    spec: AverageSpec,
    *,
    copy_first: bool,
    dtype: Any | None = None,
) -> GradientTransformation:
    """The engine of the averaging wrappers: ``inner``, then ``step`` on the new params.

    ``init`` starts the average from a copy of the params (``copy_first``) or from
    zeros; ``update`` computes ``current = apply_updates(params, u)`` from the inner
    update ``u`` and replaces the average by ``current`` on the first update
    (``copy_first``) or by ``step(average, current, count)``.
    """
    takes_extra = accepts_extra_args(inner)

    def init(params: Params) -> AveragedParamsState:
        if copy_first:
            average = jtree.cast_tree(jax.tree.map(jnp.asarray, params), dtype)
        else:
            average = jtree.zeros_like(params, dtype)
        return AveragedParamsState(jnp.zeros((), jnp.int32), average, inner.init(params), spec)

    def update(
        updates: Updates, state: AveragedParamsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, AveragedParamsState]:
        if params is None:
            raise ValueError(f"{spec.owner} needs params: call update(updates, state, params)")
        updates, inner_state = call_update(
            inner, updates, state.inner_state, params, extra, takes_extra
        )
        current = apply_updates(params, updates)
        jtree.check_structure(state.average, current, names=("average", "params"))
        average = step(state.average, current, state.n_averaged)
        if copy_first:
            first = state.n_averaged == 0
            average = jax.tree.map(
                lambda a, c: jnp.where(first, c.astype(a.dtype), a), average, current
            )
        average = jax.tree.map(lambda new, old: jtree.cast(new, old.dtype), average, state.average)
        n_averaged = jtree.safe_increment(state.n_averaged)
        return updates, AveragedParamsState(n_averaged, average, inner_state, spec)

    return GradientTransformation(init, update)


def ema_params(
    inner: GradientTransformation,
    decay: float,
    debias: bool = True,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Keeps an exponential moving average of the parameters in the optimizer state.

    Update rule, with ``p_t = p_{t-1} + u_t`` the parameters after step ``t``::

        e_0 = 0,   e_t = decay * e_{t-1} + (1 - decay) * p_t
        averaged_params(state) = e_t / (1 - decay ** t)   if debias   else   e_t

    This is optax's ``ema`` (same arithmetic, same debiasing) fed with the parameters
    instead of the updates. Without ``debias`` the zero start pulls the average towards
    0 for the first ~``1 / (1 - decay)`` steps. Updates pass through unchanged; the
    wrapper assumes they are applied as returned.

    Args:
        inner: the optimizer whose parameters are averaged.
        decay: the EMA decay, in [0, 1].
        debias: undo the zero initialisation when reading (stored raw, as optax does).
        accumulator_dtype: dtype of the average (default: the params').

    Returns:
        A transformation whose state is an :class:`AveragedParamsState`.

    References:
        Polyak & Juditsky, "Acceleration of stochastic approximation by averaging",
        1992; optax ``ema``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.ema_params(jopt.sgd(1.0), decay=0.5)
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(2):
        ...     updates, state = tx.update(-jnp.ones(1), state, w)  # w: 1, then 2
        ...     w = jopt.apply_updates(w, updates)
        >>> jopt.averaged_params(state)  # (0.5 * 1 + 2) / 1.5
        Array([1.6666666], dtype=float32)
    """
    check_hyperparam("decay", decay, UNIT)

    def step(average: Params, current: Params, count: jax.Array) -> Params:
        del count
        return jtree.update_moment(current, average, decay, order=1)

    spec = AverageSpec("ema_params", decay if debias else None)
    return averaging(inner, step, spec, copy_first=False, dtype=accumulator_dtype)


def averaged_params(state: OptState) -> Params:
    """The averaged parameters held by the averaging wrapper inside ``state``.

    For :func:`ema_params` with ``debias``, the bias-corrected average (the stored one
    before any update); for :class:`jopt.torch.swa_utils.AveragedModel`, the average
    (the initial parameters before any update, as torch's deep copy).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.torch.swa_utils import AveragedModel
        >>> state = AveragedModel(jopt.sgd(0.1)).init({"w": jnp.ones(2)})
        >>> jopt.averaged_params(state)
        {'w': Array([1., 1.], dtype=float32)}
    """
    found = find_state(state, AveragedParamsState, "averaged_params", "an averaging wrapper")
    decay = found.spec.debias_decay
    if decay is None:
        return found.average
    count = found.n_averaged
    corrected = jtree.bias_correction(found.average, decay, jnp.maximum(count, 1))
    return jax.tree.map(lambda c, a: jnp.where(count > 0, c, a), corrected, found.average)
