"""Reduce the learning rate when a monitored value (a loss, a metric) stops improving.

Two spellings, one per door:

- :func:`jopt.torch.lr_scheduler.ReduceLROnPlateau` wraps a jopt optimizer with
  torch 2.13's ``ReduceLROnPlateau`` logic and lowers the optimizer's learning-rate
  hyperparameter *in its state*, so :func:`jopt.hyperparams` reports the reduced rate
  (torch's ``get_last_lr()``), a jitted step does not recompile, and the reduction
  acts where the optimizer applies its learning rate (inside the momentum of
  ``jopt.rmsprop``, say), exactly as in torch. Its state is a :class:`PlateauState`.
- :func:`reduce_on_plateau` is optax.contrib 0.2.8's ``reduce_on_plateau``: a block
  placed after an optimizer in a ``chain`` that multiplies the updates by a scale,
  with optax's state (:class:`ReduceLROnPlateauState`) and values.

Both read the monitored value as an extra argument of ``update``:
``tx.update(grads, state, params, value=loss)``.

**Finding the learning rate.** The wrapper looks, in the state that the wrapped
optimizer's ``init`` returns, for every optimizer built by
:func:`jopt.with_hyperparams` (both doors are) and in each for a hyperparameter named
``lr`` (the torch door) or ``learning_rate`` (the optax door). It reduces all of them,
as torch reduces the ``lr`` of every parameter group. ``init`` raises, naming the
optimizer, if none is found or if one follows a schedule (a schedule recomputes the
value each step, so a reduction could not stick: give the optimizer a constant rate).

**Per step or per epoch.** torch calls ``scheduler.step(val_loss)`` once per epoch.
With ``every=n`` (default 1) the wrapper takes ``value`` at every ``update`` and makes
one scheduler step per ``n`` updates, on the mean of their values: ``every=1`` is
``optimizer.step(); scheduler.step(loss)`` at every batch, ``every=len(loader)`` is
torch's ``scheduler.step(epoch_loss)`` on the epoch's mean training loss. For a
validation loss, build it with ``every=None`` (``update`` then reads no value) and call
:func:`plateau_step` once per epoch, as torch calls ``scheduler.step``::

    tx = ReduceLROnPlateau(jopt.torch.SGD(lr=0.1), patience=5, every=None)
    for epoch in range(epochs):
        for batch in loader:
            params, state = train_step(params, state, batch)   # tx.update(grads, state, params)
        state = jopt.plateau_step(state, validate(params))      # scheduler.step(val_loss)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates
from jopt.combine import accepts_extra_args, call_update
from jopt.hyperparams import (
    HyperparamsState,
    _find,
    _hyper_dtype,
    _pack,
    _replace_nodes,
    _split,
    _unpack,
)
from jopt.schedules._common import check_real, check_steps, concrete
from jopt.transforms.scaling import _scale_tree

__all__ = [
    "PlateauState",
    "ReduceLROnPlateauState",
    "plateau_step",
    "reduce_on_plateau",
]

LR_NAMES = ("lr", "learning_rate")
"""The hyperparameter names the wrapper reduces: the torch door's and the optax door's."""

_OWNER = "ReduceLROnPlateau"


@dataclasses.dataclass(frozen=True)
class PlateauSpec:
    """Static configuration of a :class:`PlateauState` (torch's constructor arguments)."""

    mode: str
    factor: float
    patience: int
    threshold: float
    threshold_mode: str
    cooldown: int
    min_lr: float
    eps: float
    every: int | None


jax.tree_util.register_static(PlateauSpec)


class PlateauState(NamedTuple):
    """State of :func:`jopt.torch.lr_scheduler.ReduceLROnPlateau`; fields keep torch's names.

    Attributes:
        best: the best value seen (``inf`` in mode ``"min"``, ``-inf`` in ``"max"`` at first).
        num_bad_epochs: scheduler steps since the last improvement (reset in cooldown).
        cooldown_counter: scheduler steps of cooldown left after a reduction.
        last_epoch: int32 number of scheduler steps taken.
        num_values: values received since the last scheduler step (``every`` > 1).
        value_sum: their sum.
        inner_state: the wrapped optimizer's state, holding the current learning rate.
        spec: the static configuration.
    """

    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    last_epoch: jax.Array
    num_values: jax.Array
    value_sum: jax.Array
    inner_state: OptState
    spec: PlateauSpec


def _lr_names(found: list[tuple[str, str, HyperparamsState]]) -> list[str | None]:
    """For each optimizer :func:`_find` lists, the name of its learning rate (or None)."""
    if not found:
        raise ValueError(
            f"{_OWNER}: the wrapped optimizer keeps no hyperparameters in its state (an optax "
            "optimizer?): wrap a jopt optimizer, or chain jopt.reduce_on_plateau after it, "
            "which scales the updates instead"
        )
    names: list[str | None] = []
    for short, _, node in found:
        spec = node.spec
        present = [n for n in LR_NAMES if n in spec.names or n in dict(spec.fixed)]
        if len(present) > 1:
            raise ValueError(f"{_OWNER}: {spec.owner} has both {present}; which one to reduce?")
        name = present[0] if present else None
        where = f" (at '{short}')" if short else ""
        if name in spec.scheduled:
            raise ValueError(
                f"{_OWNER}: {name} of {spec.owner}{where} follows a schedule, which sets it "
                "at every step, so it cannot be reduced on plateau; build the optimizer with "
                f"a constant {name}"
            )
        if name is not None and name in dict(spec.fixed):
            raise ValueError(f"{_OWNER}: {name} of {spec.owner}{where} is fixed at construction")
        names.append(name)
    if all(n is None for n in names):
        available = sorted({n for _, _, node in found for n in node.spec.names})
        raise ValueError(
            f"{_OWNER}: the wrapped optimizer has no learning rate named {' or '.join(LR_NAMES)} "
            f"in its state; its hyperparameters are {available}"
        )
    return names


def _is_better(spec: PlateauSpec, current: jax.Array, best: jax.Array) -> jax.Array:
    """torch's ``_is_better``, operation for operation."""
    if spec.mode == "min" and spec.threshold_mode == "rel":
        return current < best * (1.0 - spec.threshold)
    if spec.mode == "min":
        return current < best - spec.threshold
    if spec.threshold_mode == "rel":
        return current > best * (spec.threshold + 1.0)
    return current > best + spec.threshold


def _reduce_lr(spec: PlateauSpec, inner_state: OptState, reduce: jax.Array) -> OptState:
    """``lr <- max(lr * factor, min_lr)`` in every optimizer, where that lowers it by > eps."""
    found = _find(inner_state)
    names = iter(_lr_names(found))

    def replace(node: HyperparamsState) -> HyperparamsState:
        name = next(names)
        if name is None:
            return node
        values = _unpack(node.spec, node.values)
        old = values[name]
        new_hi, new_lo = old.hi * spec.factor, old.lo * spec.factor
        min_hi, min_lo = _split(spec.min_lr, old.hi.dtype)
        below = (new_hi < min_hi) | ((new_hi == min_hi) & (new_lo < min_lo))
        new_hi, new_lo = jnp.where(below, min_hi, new_hi), jnp.where(below, min_lo, new_lo)
        apply = reduce & ((old.hi - new_hi) + (old.lo - new_lo) > spec.eps)
        parts = {n: (v.hi, v.lo) for n, v in values.items()}
        parts[name] = (jnp.where(apply, new_hi, old.hi), jnp.where(apply, new_lo, old.lo))
        return node._replace(values=_pack(node.spec, parts, node.values.dtype))

    return _replace_nodes(inner_state, replace)


def _scheduler_step(state: PlateauState, metric: Any, enabled: Any = True) -> PlateauState:
    """torch's ``scheduler.step(metric)``, taken where ``enabled`` (a traced bool) holds."""
    spec = state.spec
    enabled = jnp.asarray(enabled)
    current = jnp.asarray(metric).astype(state.best.dtype)
    better = _is_better(spec, current, state.best)
    best = jnp.where(better, current, state.best)
    bad = jnp.where(better, 0, jtree.safe_increment(state.num_bad_epochs))
    cooling = state.cooldown_counter > 0
    cooldown = jnp.where(cooling, state.cooldown_counter - 1, state.cooldown_counter)
    bad = jnp.where(cooling, 0, bad)
    reduce = bad > spec.patience
    cooldown = jnp.where(reduce, spec.cooldown, cooldown)
    bad = jnp.where(reduce, 0, bad)
    return state._replace(
        best=jnp.where(enabled, best, state.best),
        num_bad_epochs=jnp.where(enabled, bad, state.num_bad_epochs),
        cooldown_counter=jnp.where(enabled, cooldown, state.cooldown_counter),
        last_epoch=jnp.where(enabled, jtree.safe_increment(state.last_epoch), state.last_epoch),
        inner_state=_reduce_lr(spec, state.inner_state, enabled & reduce),
    )


def _scalar_value(value: Any, owner: str, missing: str) -> jax.Array:
    """The monitored value as a scalar array; ``missing`` is the error if it was not given."""
    if value is None:
        raise TypeError(missing)
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(f"{owner}: value must be a scalar, got shape {list(value.shape)}")
    return value


def wrap(
    optimizer: GradientTransformation,
    *,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
    every: int | None = 1,
) -> GradientTransformation:
    """The engine of :func:`jopt.torch.lr_scheduler.ReduceLROnPlateau` (documented there)."""
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"{_OWNER}: {type(optimizer).__name__} is not a gradient transformation")
    if mode not in ("min", "max"):
        raise ValueError(f"{_OWNER}: mode={mode!r} must be 'min' or 'max'")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(f"{_OWNER}: threshold_mode={threshold_mode!r} must be 'rel' or 'abs'")
    if isinstance(min_lr, (list, tuple)):
        raise ValueError(
            f"{_OWNER}: min_lr={min_lr!r} must be a number: it applies to every learning rate "
            "of the wrapped optimizer (per-group values are not supported)"
        )
    for name, value, bounds in (
        ("factor", factor, {"ge": 0.0, "lt": 1.0}),
        ("threshold", threshold, {"ge": 0.0}),
        ("min_lr", min_lr, {"ge": 0.0}),
        ("eps", eps, {"ge": 0.0}),
    ):
        if concrete(value) is None:
            raise ValueError(f"{_OWNER}: {name}={value!r} must be a number")
        check_real(name, value, **bounds)
    spec = PlateauSpec(
        mode=mode,
        factor=float(factor),
        patience=check_steps("patience", patience, ge=0),
        threshold=float(threshold),
        threshold_mode=threshold_mode,
        cooldown=check_steps("cooldown", cooldown, ge=0),
        min_lr=float(min_lr),
        eps=float(eps),
        every=None if every is None else check_steps("every", every, ge=1),
    )
    takes_extra = accepts_extra_args(optimizer)

    def init(params: Params) -> PlateauState:
        inner_state = optimizer.init(params)
        _lr_names(_find(inner_state))
        dtype = _hyper_dtype()
        zero = jnp.zeros((), jnp.int32)
        worst = math.inf if mode == "min" else -math.inf
        return PlateauState(
            jnp.asarray(worst, dtype),
            zero,
            zero,
            zero,
            zero,
            jnp.zeros((), dtype),
            inner_state,
            spec,
        )

    def update(
        updates: Updates, state: PlateauState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, PlateauState]:
        if not isinstance(state, PlateauState) or state.spec != spec:
            raise TypeError(
                f"{_OWNER}.update got a state that its init did not make: {type(state).__name__}"
            )
        updates, inner_state = call_update(
            optimizer, updates, state.inner_state, params, extra, takes_extra
        )
        state = state._replace(inner_state=inner_state)
        if spec.every is None:
            return updates, state
        missing = (
            f"{_OWNER} reads the monitored value: call update(..., value=loss) (or build it "
            "with every=None and call jopt.plateau_step once per epoch)"
        )
        value = _scalar_value(extra.get("value"), _OWNER, missing)
        total = state.value_sum + value.astype(state.value_sum.dtype)
        num = jtree.safe_increment(state.num_values)
        due = num >= spec.every
        state = _scheduler_step(state, total / spec.every, due)
        return updates, state._replace(
            num_values=jnp.where(due, 0, num), value_sum=jnp.where(due, 0.0, total)
        )

    return GradientTransformation(init, update)


def plateau_step(state: OptState, value: Any) -> OptState:
    """One ``scheduler.step(value)`` of every ReduceLROnPlateau wrapper in ``state``.

    For per-epoch stepping with a validation loss (see :mod:`jopt.plateau`): the
    wrapper's ``update`` steps the optimizer, this steps the scheduler, and lowers the
    learning rate in the state when the value has not improved for ``patience`` steps.
    Pure and jittable; the state keeps its structure, shapes and dtypes.

    Args:
        state: a state containing a :class:`PlateauState` (from
            :func:`jopt.torch.lr_scheduler.ReduceLROnPlateau`).
        value: the monitored value, a scalar.

    Returns:
        The new state.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.torch.lr_scheduler import ReduceLROnPlateau
        >>> tx = ReduceLROnPlateau(jopt.torch.SGD(lr=0.1), patience=1, every=None)
        >>> state = tx.init(jnp.zeros(2))
        >>> for val_loss in [1.0, 0.5, 0.6, 0.7, 0.4]:  # one per epoch
        ...     state = jopt.plateau_step(state, val_loss)
        ...     print(round(float(jopt.hyperparams(state)["lr"]), 6))
        0.1
        0.1
        0.1
        0.01
        0.01
    """
    found = False

    def visit(node: Any) -> Any:
        nonlocal found
        if not isinstance(node, PlateauState):
            return node
        found = True
        return _scheduler_step(node, _scalar_value(value, "plateau_step", "plateau_step: no value"))

    out = jax.tree.map(visit, state, is_leaf=lambda x: isinstance(x, PlateauState))
    if not found:
        raise ValueError(
            "plateau_step: the state has no ReduceLROnPlateau (jopt.torch.lr_scheduler) in it"
        )
    return out


# -- the optax door ----------------------------------------------------------------------


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`: optax.contrib's fields, in optax's order.

    Attributes:
        scale: the current factor on the updates (1 at first).
        best_value: the best (lowest) accumulated value seen.
        plateau_count: int32 evaluations since the last improvement.
        cooldown_count: int32 evaluations of cooldown left.
        count: int32 values accumulated towards the next evaluation.
        avg_value: their running mean.
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    avg_value: jax.Array


def _state_dtypes(params: Params) -> tuple[np.dtype, np.dtype]:
    """optax's lowest and highest floating dtype of the params, at least float32 each."""
    dtypes = [
        jnp.dtype(jnp.result_type(x))
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    if not dtypes:
        dtypes = [_hyper_dtype()]
    lowest = min(dtypes, key=lambda d: d.itemsize)
    return jtree.compute_dtype(lowest), jtree.compute_dtype(jtree.promote(*dtypes))


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> GradientTransformation:
    """Scales the updates down by ``factor`` when the monitored value stops improving.

    optax.contrib 0.2.8's ``reduce_on_plateau``, value for value: ``update`` takes the
    value as ``update(updates, state, params, value=loss)``; every
    ``accumulation_size`` values it evaluates their mean ``v``::

        improved = v < (1 - rtol) * best - atol;   best <- v if improved
        plateau  <- 0 if improved else plateau + 1
        in cooldown (cooldown_count > 0): plateau <- 0, cooldown_count -= 1
        otherwise, when plateau == patience:
            scale <- max(scale * factor, min_scale), plateau <- 0, cooldown_count <- cooldown

    and every update is multiplied by the current ``scale``. Note optax's counting:
    the scale drops after ``patience`` evaluations without improvement (torch's
    ``ReduceLROnPlateau`` waits for ``patience + 1``).

    Differences from optax: arguments are checked here (optax's ``patience=0`` or
    ``accumulation_size=0`` never reduce; here they are errors), and for half-precision
    params the state is float32 (optax keeps ``scale`` in bfloat16, where ``0.1``
    is ``0.10009765625``). To lower the optimizer's learning rate in its state instead
    of scaling its updates, see :func:`jopt.torch.lr_scheduler.ReduceLROnPlateau`.

    Args:
        factor: the reduction, in (0, 1).
        patience: evaluations without improvement before reducing; an integer >= 1.
        rtol: relative tolerance of an improvement, in [0, 1].
        atol: absolute tolerance of an improvement, >= 0 (``rtol`` or ``atol`` > 0).
        cooldown: evaluations after a reduction during which no reduction happens.
        accumulation_size: values averaged per evaluation; an integer >= 1.
        min_scale: the scale is not reduced below this, >= 0.

    Returns:
        A transformation whose state is a :class:`ReduceLROnPlateauState`.

    References:
        optax ``optax.contrib.reduce_on_plateau``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.chain(jopt.sgd(1.0), jopt.reduce_on_plateau(factor=0.5, patience=2))
        >>> state = tx.init(jnp.zeros(1))
        >>> for loss in [1.0, 0.8, 0.9, 0.85, 0.7]:
        ...     updates, state = tx.update(jnp.ones(1), state, value=loss)
        ...     print(updates, state[1].scale)
        [-1.] 1.0
        [-1.] 1.0
        [-1.] 1.0
        [-0.5] 0.5
        [-0.5] 0.5
    """
    check_real("factor", factor, gt=0.0, lt=1.0)
    check_real("rtol", rtol, ge=0.0, le=1.0)
    check_real("atol", atol, ge=0.0)
    if concrete(rtol) == 0.0 and concrete(atol) == 0.0:
        raise ValueError("rtol=0.0 and atol=0.0: at least one of them must be positive")
    patience = check_steps("patience", patience, ge=1)
    cooldown = check_steps("cooldown", cooldown, ge=0)
    accumulation_size = check_steps("accumulation_size", accumulation_size, ge=1)
    check_real("min_scale", min_scale, ge=0.0)

    def init(params: Params) -> ReduceLROnPlateauState:
        lowest, highest = _state_dtypes(params)
        zero = jnp.zeros((), jnp.int32)
        return ReduceLROnPlateauState(
            scale=jnp.ones((), lowest),
            best_value=jnp.asarray(math.inf, highest),
            plateau_count=zero,
            cooldown_count=zero,
            count=zero,
            avg_value=jnp.zeros((), highest),
        )

    def evaluate(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        avg = state.avg_value
        improved = avg < (1 - rtol) * state.best_value - atol
        best = jnp.where(improved, avg.astype(state.best_value.dtype), state.best_value)
        plateau = jnp.where(improved, 0, jtree.safe_increment(state.plateau_count))
        cooling = state.cooldown_count > 0
        hit = plateau == patience
        reduced = jnp.maximum(jnp.where(hit, state.scale * factor, state.scale), min_scale)
        return ReduceLROnPlateauState(
            scale=jnp.where(cooling, state.scale, reduced).astype(state.scale.dtype),
            best_value=best,
            plateau_count=jnp.where(cooling | hit, 0, plateau),
            cooldown_count=jnp.where(
                cooling, state.cooldown_count - 1, jnp.where(hit, cooldown, 0)
            ),
            count=jnp.zeros((), jnp.int32),
            avg_value=jnp.zeros((), avg.dtype),
        )

    def update(
        updates: Updates,
        state: ReduceLROnPlateauState,
        params: Params | None = None,
        **extra: Any,
    ) -> tuple[Updates, ReduceLROnPlateauState]:
        del params
        missing = "reduce_on_plateau reads the monitored value: call update(..., value=loss)"
        value = _scalar_value(extra.get("value"), "reduce_on_plateau", missing)
        dtype = state.avg_value.dtype
        count = jtree.safe_increment(state.count)
        avg = (state.count.astype(dtype) * state.avg_value + value.astype(dtype)) / count.astype(
            dtype
        )
        state = state._replace(avg_value=avg, count=count)
        evaluated = evaluate(state)
        state = jax.tree.map(
            lambda a, b: jnp.where(count == accumulation_size, a, b), evaluated, state
        )
        return _scale_tree(updates, state.scale), state

    return GradientTransformation(init, update)
