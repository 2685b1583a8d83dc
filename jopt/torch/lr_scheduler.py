"""torch.optim.lr_scheduler as schedules: the torch door's learning-rate schedulers.

Each class takes torch 2.13's constructor arguments and defaults, except that the first
argument is the base learning rate ``lr`` (a float) instead of an optimizer; it returns a
small frozen dataclass that is a plain callable ``count -> lr``, usable as the
``learning_rate``/``lr`` of any jopt (or optax) optimizer, under ``jax.jit`` and
``jax.vmap``. ``schedule(count)`` is what torch's ``scheduler.get_last_lr()[0]`` reads
after ``count`` calls of ``scheduler.step()`` (count 0: right after construction).

**Steps per scheduler step.** torch steps most schedulers once per epoch while the
optimizer steps once per batch. Every class takes a keyword-only ``every`` (default 1):
the number of optimizer steps per ``scheduler.step()``. The schedule evaluates torch's
sequence at ``count // every``, ``count`` being the optimizer's step count::

    # torch                                         # jopt
    sched = StepLR(opt, step_size=30)                sched = StepLR(0.1, step_size=30,
    for epoch in range(90):                                         every=len(loader))
        for batch in loader: ...; opt.step()         tx = jopt.torch.SGD(lr=sched)
        sched.step()

**Chainable (recursive) schedulers.** torch computes most schedulers recursively, from
the learning rate the optimizer currently holds (``lr_t = lr_{t-1} * factor_t``). Every
class here carries that recursion exactly (``_update``, torch's ``get_lr`` as jax code),
and a schedule evaluates it with a ``jax.lax.fori_loop`` up to the count where no
closed form gives torch's values: :class:`MultiplicativeLR` (a product of user factors),
and :class:`ChainedScheduler` unless all its members are purely multiplicative (their
product is then closed form). Such a schedule costs O(count) per call; the others are
O(1). For a single scheduler torch's recursion equals the closed form up to rounding:
measured against torch 2.13 in float64, :class:`CosineAnnealingLR`'s recursion drifts
from its closed form by about 3e-16 of ``lr`` per step (6e-12 after 20,000 steps, far
below float32 resolution), so a standalone :class:`CosineAnnealingLR` uses the closed
form; it is the recursion that a :class:`ChainedScheduler` runs, where it differs
materially (it then acts on the learning rate the other members produce).

**Precision.** The arithmetic follows torch's formulas and operation order, in the
default float dtype (float64 under ``jax.enable_x64``: within 1e-10 of torch over 300
steps, tested; float32: within 1e-5). Three rewrites keep float32 and jit honest where a
literal transcription would not: ``(1 + cos x) / 2`` is computed as ``cos(x / 2) ** 2``
(no cancellation near the bottom of a cosine), and the ends of a ramp are pinned
(``PolynomialLR``/``LinearLR`` from ``total_iters`` on, a ``OneCycleLR`` phase at its
last step), because XLA compiles ``x / T`` as ``x * (1 / T)`` fused into an FMA, which
leaves 1e-17 (float64) to 1e-8 (float32) where torch has exactly 0.

**Validation.** Besides torch's own checks, arguments that make torch divide by zero
later, loop silently or produce negative learning rates raise ``ValueError`` at
construction, naming the argument, its value and the allowed range (e.g. ``T_max=0``,
``total_iters=0``, ``ConstantLR(factor=0)``, ``every=0``).

**Differences from torch, and why.**

- One parameter group: per-group lists (``max_lr=[...]``, ``lr_lambda=[...]``) are
  rejected; give each group its own schedule (``jopt.partition``).
- ``last_epoch`` is accepted only as ``-1``: the count lives in the optimizer state, so
  resuming is restoring that state.
- Momentum cycling (:class:`CyclicLR`, :class:`OneCycleLR`): there is no optimizer to
  write to, so the cycled momentum is the ``.momentum`` attribute, a second schedule
  ``count -> momentum`` to pass as the optimizer's momentum (SGD) or first beta (Adam).
  torch's default ``cycle_momentum=True`` requires an optimizer with momentum or betas
  and *overrides* its momentum (even SGD's default ``momentum=0``); here nothing is
  overridden unless you pass ``.momentum``. With ``cycle_momentum=False``,
  ``.momentum`` is ``None``.
- :class:`OneCycleLR` raises in torch when stepped past ``total_steps``; a traced count
  cannot raise, so past ``total_steps`` the end of the cycle (``min_lr``, the value at
  ``total_steps - 1``) is held. At ``total_steps`` itself torch's value is kept: it
  extrapolates the last phase one step too far (negative with ``'linear'`` annealing
  over a short cycle), but it is what torch gives.
- User functions (``lr_lambda``, ``scale_fn``) must be jax-traceable (``jnp.where``
  instead of ``if``, ``jnp.minimum`` instead of ``min``). torch passes them the epoch as
  a Python int; jopt passes a float array holding that integer, in the schedule's dtype
  (float32, float64 under x64), so that ``0.95 ** epoch`` or ``epoch / 10`` needs no
  cast under strict dtype promotion; ``epoch.astype(int)`` to index a table.
- :class:`SequentialLR` and :class:`ChainedScheduler` take the schedulers (which share
  one ``lr``, as torch's share one optimizer) and no optimizer. torch's schedulers
  mutate the optimizer they share, so their combination depends on construction order;
  jopt assumes the list order is the construction order.
- :func:`ReduceLROnPlateau` is the exception to "a schedule is a function of the count":
  it reads the loss, so it wraps the optimizer (like torch's takes one) and lowers the
  learning rate that lives in the optimizer's state (see :mod:`jopt.plateau`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from jopt import plateau as _plateau
from jopt.base import GradientTransformation
from jopt.schedules._common import check_real, check_steps, concrete, default_float

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]

_INT32_MAX = 2**31 - 1


def _number(name: str, value: Any, **bounds: float) -> float:
    """A concrete real hyperparameter as a Python float, checked against ``bounds``."""
    if isinstance(value, (list, tuple)):
        raise ValueError(
            f"{name}={value!r} must be a number: a jopt schedule serves one parameter group "
            "(give each group its own schedule with jopt.partition)"
        )
    if concrete(value) is None:
        raise ValueError(f"{name}={value!r} must be a number")
    check_real(name, value, **bounds)
    return float(value)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _check_common(obj: Any, *, lr: bool = True) -> None:
    """Checks ``lr``, ``last_epoch`` and ``every``, the arguments all schedulers share."""
    if lr:
        _set(obj, "lr", _number("lr", obj.lr, ge=0))
    if obj.last_epoch != -1:
        raise ValueError(
            f"last_epoch={obj.last_epoch!r} must be -1: a jopt schedule is a function of the "
            "optimizer's step count, so resume by restoring the optimizer state instead"
        )
    _set(obj, "every", check_steps("every", obj.every, ge=1))


def _check_momentum(obj: Any) -> None:
    if obj.cycle_momentum:
        _set(obj, "base_momentum", _number("base_momentum", obj.base_momentum, ge=0, lt=1))
        _set(obj, "max_momentum", _number("max_momentum", obj.max_momentum, ge=0, lt=1))


def _epochs(count: jax.typing.ArrayLike, every: int) -> jax.Array:
    """torch's ``last_epoch`` after ``count`` optimizer steps: ``count // every`` (>= 0)."""
    count = jnp.asarray(count).astype(jnp.int32)
    return jnp.maximum(count, 0) // every


def _pow(base: float, exponent: jax.Array) -> jax.Array:
    """``base ** exponent`` for an integer array exponent, in the default float dtype."""
    dtype = default_float()
    return jnp.power(jnp.asarray(base, dtype), exponent.astype(dtype))


def _half_cosine(x: jax.Array) -> jax.Array:
    """``(1 + cos(pi x)) / 2``, computed as ``cos(pi x / 2) ** 2`` (no cancellation at 1)."""
    return jnp.cos(jnp.pi * x / 2) ** 2


def _per_count(fn: Callable[[jax.Array], jax.Array], n: jax.Array) -> jax.Array:
    """``fn`` on an int32 epoch array of any shape (``fn`` itself sees scalars)."""
    dtype = default_float()
    if n.ndim == 0:
        return jnp.asarray(fn(n)).astype(dtype)
    values = jax.vmap(lambda e: jnp.asarray(fn(e)).astype(dtype))(n.ravel())
    return values.reshape(n.shape)


class _LRScheduler:
    """What every scheduler shares: the call, the repr and torch's recursion.

    A subclass defines ``_update(e, lr)``: torch's ``get_lr()`` at ``last_epoch == e``
    when the optimizer holds ``lr`` (``e == 0`` is the step taken at construction). It
    may define ``_value(n)``, a closed form of the lr after ``n`` steps; the default runs
    the recursion. Purely multiplicative schedulers (``lr_t = lr_{t-1} * m_t``) set
    ``_multiplicative`` and define ``_factor(n)``, the closed-form product ``lr_n / lr``.
    """

    every: int
    lr: float
    _multiplicative: ClassVar[bool] = False

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        """The learning rate after ``count`` optimizer steps (``count // every`` epochs)."""
        return _per_count(self._value, _epochs(count, self.every))

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _value(self, n: jax.Array) -> jax.Array:
        return self._emulate(n)

    def _emulate(self, n: jax.Array) -> jax.Array:
        """torch's recursion, step by step: ``n`` iterations of ``_update``."""
        dtype = default_float()
        lr = self._update(jnp.zeros((), jnp.int32), jnp.asarray(self.lr, dtype)).astype(dtype)
        return jax.lax.fori_loop(1, n + 1, lambda e, lr: self._update(e, lr).astype(dtype), lr)

    def _restarted(self, n: jax.Array, lr_before: Callable[[], jax.Array]) -> jax.Array:
        """The lr ``n`` steps after :class:`SequentialLR` restarts this scheduler."""
        del lr_before
        return self._value(n)

    def __repr__(self) -> str:
        parts = []
        fields = sorted(dataclasses.fields(self), key=lambda f: f.kw_only is True)  # type: ignore[arg-type]
        for f in fields:
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING:
                try:
                    if value == f.default:
                        continue
                except Exception:  # pragma: no cover - exotic values are always shown
                    pass
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class StepLR(_LRScheduler):
    """Multiplies the learning rate by ``gamma`` every ``step_size`` epochs.

    Formula: ``lr_n = lr * gamma ** (n // step_size)`` (torch: ``lr_n = lr_{n-1} * gamma``
    when ``n % step_size == 0``, equal up to rounding).

    Args:
        lr: the base learning rate (the optimizer's ``lr`` in torch); ``>= 0``.
        step_size: epochs per decay; an integer ``>= 1``.
        gamma: the decay factor; ``> 0``.
        last_epoch: only ``-1`` (see the module notes).
        every: optimizer steps per epoch (per ``scheduler.step()``); ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.StepLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.StepLR(1.0, step_size=2, gamma=0.5)
        >>> [float(schedule(t)) for t in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
        >>> per_batch = lr_scheduler.StepLR(1.0, step_size=1, gamma=0.5, every=3)
        >>> [float(per_batch(t)) for t in range(7)]
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """

    lr: float
    step_size: int
    gamma: float = 0.1
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "step_size", check_steps("step_size", self.step_size, ge=1))
        _set(self, "gamma", _number("gamma", self.gamma, gt=0))

    def _factor(self, n: jax.Array) -> jax.Array:
        return _pow(self.gamma, n // self.step_size)

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        return jnp.where((e > 0) & (e % self.step_size == 0), lr * self.gamma, lr)


@dataclass(frozen=True, repr=False)
class MultiStepLR(_LRScheduler):
    """Multiplies the learning rate by ``gamma`` at each milestone epoch.

    Formula: ``lr_n = lr * gamma ** #{milestones <= n}`` (a milestone listed twice counts
    twice, as in torch).

    Args:
        lr: the base learning rate; ``>= 0``.
        milestones: epochs at which to decay; integers ``>= 0``, any order.
        gamma: the decay factor; ``> 0``.
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.MultiStepLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.MultiStepLR(1.0, milestones=[2, 4], gamma=0.1)
        >>> [round(float(schedule(t)), 6) for t in range(6)]
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """

    lr: float
    milestones: Sequence[int]
    gamma: float = 0.1
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        milestones = [
            check_steps(f"milestones[{i}]", m, ge=0) for i, m in enumerate(self.milestones)
        ]
        _set(self, "milestones", tuple(sorted(milestones)))
        _set(self, "gamma", _number("gamma", self.gamma, gt=0))

    def _factor(self, n: jax.Array) -> jax.Array:
        milestones = jnp.asarray(self.milestones, jnp.int32).reshape(-1)
        passed = jnp.sum(n[..., None] >= milestones, axis=-1)
        return _pow(self.gamma, passed)

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        milestones = jnp.asarray(self.milestones, jnp.int32).reshape(-1)
        hits = jnp.sum(e[..., None] == milestones, axis=-1)
        return jnp.where(hits > 0, lr * _pow(self.gamma, hits), lr)


@dataclass(frozen=True, repr=False)
class ConstantLR(_LRScheduler):
    """Scales the learning rate by ``factor`` for the first ``total_iters`` epochs.

    Formula: ``lr_n = lr * factor`` for ``n < total_iters``, ``lr`` after.

    Args:
        lr: the base learning rate; ``>= 0``.
        factor: the scale; in ``(0, 1]`` (torch accepts 0, then divides by it at epoch
            ``total_iters``).
        total_iters: epochs at the reduced rate; an integer ``>= 1`` (torch's recursion
            with 0 keeps ``lr * factor`` forever while its closed form gives ``lr``).
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.ConstantLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.ConstantLR(1.0, factor=0.5, total_iters=2)
        >>> [float(schedule(t)) for t in range(4)]
        [0.5, 0.5, 1.0, 1.0]
    """

    lr: float
    factor: float = 1.0 / 3
    total_iters: int = 5
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "factor", _number("factor", self.factor, gt=0, le=1))
        _set(self, "total_iters", check_steps("total_iters", self.total_iters, ge=1))

    def _factor(self, n: jax.Array) -> jax.Array:
        done = (n >= self.total_iters).astype(default_float())
        return self.factor + done * (1 - self.factor)

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        restored = jnp.where(e == self.total_iters, lr * (1.0 / self.factor), lr)
        return jnp.where(e == 0, lr * self.factor, restored)


@dataclass(frozen=True, repr=False)
class LinearLR(_LRScheduler):
    """Scales the learning rate by a factor moving linearly from ``start_factor`` to ``end_factor``.

    Formula: ``lr_n = lr * (s + (e - s) * min(n, T) / T)`` with ``s = start_factor``,
    ``e = end_factor``, ``T = total_iters`` (torch's recursion multiplies by
    ``1 + (e - s) / (T * s + (n - 1) * (e - s))``; equal up to rounding).

    Args:
        lr: the base learning rate; ``>= 0``.
        start_factor: the factor at epoch 0; in ``(0, 1]`` (as torch).
        end_factor: the factor from epoch ``total_iters`` on; in ``[0, 1]`` (as torch).
        total_iters: epochs of the ramp; an integer ``>= 1`` (torch divides by it).
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.LinearLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.LinearLR(1.0, start_factor=0.25, total_iters=3)
        >>> [float(schedule(t)) for t in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    lr: float
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "start_factor", _number("start_factor", self.start_factor, gt=0, le=1))
        _set(self, "end_factor", _number("end_factor", self.end_factor, ge=0, le=1))
        _set(self, "total_iters", check_steps("total_iters", self.total_iters, ge=1))

    def _factor(self, n: jax.Array) -> jax.Array:
        # torch's s + (e - s) * min(T, n) / T, pinned to e from n = T (under jit, / T is
        # * (1 / T) and end_factor=0 would end at -1e-18 instead of 0).
        s, e, total = self.start_factor, self.end_factor, self.total_iters
        return jnp.where(n >= total, e, s + (e - s) * n.astype(default_float()) / total)

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        s, end, total = self.start_factor, self.end_factor, self.total_iters
        t = e.astype(lr.dtype)
        ramp = lr * (1.0 + (end - s) / (total * s + (t - 1) * (end - s)))
        return jnp.where(e == 0, lr * s, jnp.where(e > total, lr, ramp))


@dataclass(frozen=True, repr=False)
class ExponentialLR(_LRScheduler):
    """Multiplies the learning rate by ``gamma`` every epoch.

    Formula: ``lr_n = lr * gamma ** n``.

    Args:
        lr: the base learning rate; ``>= 0``.
        gamma: the factor per epoch; ``> 0``.
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.ExponentialLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.ExponentialLR(1.0, gamma=0.5)
        >>> [float(schedule(t)) for t in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """

    lr: float
    gamma: float
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "gamma", _number("gamma", self.gamma, gt=0))

    def _factor(self, n: jax.Array) -> jax.Array:
        return _pow(self.gamma, n)

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        return jnp.where(e == 0, lr, lr * self.gamma)


@dataclass(frozen=True, repr=False)
class PolynomialLR(_LRScheduler):
    """Decays the learning rate to 0 along a polynomial over ``total_iters`` epochs.

    Formula: ``lr_n = lr * (1 - min(n, T) / T) ** power`` with ``T = total_iters``.

    Args:
        lr: the base learning rate; ``>= 0``.
        total_iters: epochs of the decay; an integer ``>= 1`` (torch divides by it).
        power: the degree of the polynomial; ``>= 0`` (torch raises 0 to a negative
            power at epoch ``total_iters``).
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.PolynomialLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.PolynomialLR(1.0, total_iters=4, power=2.0)
        >>> [float(schedule(t)) for t in range(6)]
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    lr: float
    total_iters: int = 5
    power: float = 1.0
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1
    _multiplicative: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "total_iters", check_steps("total_iters", self.total_iters, ge=1))
        _set(self, "power", _number("power", self.power, ge=0))

    def _factor(self, n: jax.Array) -> jax.Array:
        # torch's 1 - min(T, n) / T, pinned to 0 from n = T: under jit XLA computes / T
        # as * (1 / T) fused into an FMA and leaves 1e-17 there, which power < 1 magnifies.
        total = self.total_iters
        frac = jnp.where(n >= total, 0.0, 1.0 - n.astype(default_float()) / total)
        return frac**self.power

    def _value(self, n: jax.Array) -> jax.Array:
        return self.lr * self._factor(n)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        # torch's ((1 - t / T) / (1 - (t - 1) / T)) ** power, with the numerators as
        # exact integers so that jit's FMA contraction keeps the lr at exactly 0 at t = T.
        total = self.total_iters
        left = (total - e).astype(lr.dtype) / total
        decay = (left / ((total - e + 1).astype(lr.dtype) / total)) ** self.power
        return jnp.where((e == 0) | (e > total), lr, lr * decay)


@dataclass(frozen=True, repr=False)
class CosineAnnealingLR(_LRScheduler):
    """Anneals the learning rate along a cosine from ``lr`` to ``eta_min`` over ``T_max`` epochs.

    Formula (periodic: back up over the next ``T_max`` epochs, as torch)::

        lr_n = eta_min + (lr - eta_min) * (1 + cos(pi * n / T_max)) / 2

    torch computes it recursively, ``lr_n = eta_min + (lr_{n-1} - eta_min) *
    (1 + cos(pi n / T)) / (1 + cos(pi (n-1) / T))``; standalone, that equals the closed
    form within about 3e-16 of ``lr`` per step (measured), so the closed form is used.
    Inside a :class:`ChainedScheduler` the recursion itself runs. Both are evaluated with
    ``1 + cos(x) = 2 cos(x / 2) ** 2``: the same values in float64 (to 1e-16), and no
    cancellation near the bottom in float32, where ``1 + cos(x)`` loses all its digits
    and the recursion's ratio of two such terms would drift by 1e-4 within 300 steps.

    Args:
        lr: the base learning rate; ``>= 0``.
        T_max: epochs of a half period; an integer ``>= 1`` (torch divides by it).
        eta_min: the minimum learning rate; ``>= 0``.
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.CosineAnnealingLR``; Loshchilov & Hutter,
        *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR 2017.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.CosineAnnealingLR(1.0, T_max=4, eta_min=0.2)
        >>> [round(float(schedule(t)), 6) for t in (0, 2, 4, 6, 8)]
        [1.0, 0.6, 0.2, 0.6, 1.0]
    """

    lr: float
    T_max: int
    eta_min: float = 0.0
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "T_max", check_steps("T_max", self.T_max, ge=1))
        _set(self, "eta_min", _number("eta_min", self.eta_min, ge=0))

    def _value(self, n: jax.Array) -> jax.Array:
        t = n.astype(default_float())
        return self.eta_min + (self.lr - self.eta_min) * _half_cosine(t / self.T_max)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        eta, period, t = self.eta_min, self.T_max, e.astype(lr.dtype)
        # torch adds (lr - eta) * (1 - cos(pi / T)) / 2 after the bottom: that is
        # (lr - eta) * _half_cosine(t / T) at t = T + 1, computed here as the next ratio's
        # denominator so that the product telescopes in float32 too.
        rise = lr + (self.lr - eta) * _half_cosine(t / period)
        ratio = _half_cosine(t / period) / _half_cosine((t - 1) / period)
        follow = ratio * (lr - eta) + eta
        at_bottom = (e - 1 - period) % (2 * period) == 0
        return jnp.where(e == 0, lr, jnp.where(at_bottom, rise, follow))


@dataclass(frozen=True, repr=False)
class CosineAnnealingWarmRestarts(_LRScheduler):
    """Cosine annealing restarted every ``T_i`` epochs, the period growing by ``T_mult``.

    Formula: with ``T_cur`` the epochs since the last restart and ``T_i`` the current
    period (``T_0``, then ``T_0 * T_mult``, ``T_0 * T_mult**2``, ...)::

        lr_n = eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2

    Args:
        lr: the base learning rate; ``>= 0``.
        T_0: the first period; an integer ``>= 1`` (as torch).
        T_mult: the period's growth factor; an integer ``>= 1`` (as torch).
        eta_min: the minimum learning rate; ``>= 0``.
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``. torch also lets you step this one
            with fractional epochs, ``scheduler.step(epoch + i / iters)``: with ``every``
            the restarts fall on whole epochs instead.

    References:
        torch ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``; Loshchilov &
        Hutter, *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR 2017.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.CosineAnnealingWarmRestarts(1.0, T_0=2, T_mult=2)
        >>> [round(float(schedule(t)), 6) for t in range(7)]
        [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """

    lr: float
    T_0: int
    T_mult: int = 1
    eta_min: float = 0.0
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "T_0", check_steps("T_0", self.T_0, ge=1))
        _set(self, "T_mult", check_steps("T_mult", self.T_mult, ge=1))
        _set(self, "eta_min", _number("eta_min", self.eta_min, ge=0))

    def _position(self, n: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(T_cur, T_i)`` after ``n`` epochs, exactly as torch's integer recursion."""
        dtype = default_float()
        if self.T_mult == 1:
            return n % self.T_0, jnp.asarray(float(self.T_0), dtype)
        starts, periods = [0], [self.T_0]
        while starts[-1] + periods[-1] <= _INT32_MAX:
            starts.append(starts[-1] + periods[-1])
            periods.append(periods[-1] * self.T_mult)
        restarts = jnp.sum(n[..., None] >= jnp.asarray(starts[1:], jnp.int32), axis=-1)
        start = jnp.asarray(starts, jnp.int32)[restarts]
        return n - start, jnp.asarray([float(p) for p in periods], dtype)[restarts]

    def _value(self, n: jax.Array) -> jax.Array:
        t_cur, t_i = self._position(n)
        cosine = _half_cosine(t_cur.astype(default_float()) / t_i)
        return self.eta_min + (self.lr - self.eta_min) * cosine

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        del lr  # torch's get_lr reads only base_lrs and T_cur
        return self._value(e)


def _check_lambda(name: str, fn: Any) -> Callable[[jax.Array], Any]:
    if isinstance(fn, (list, tuple)):
        raise ValueError(
            f"{name} is a list of {len(fn)}: a jopt schedule serves one parameter group "
            "(give each group its own schedule with jopt.partition)"
        )
    if not callable(fn):
        raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
    return fn


@dataclass(frozen=True, repr=False)
class LambdaLR(_LRScheduler):
    """Sets the learning rate to ``lr`` times a function of the epoch.

    Formula: ``lr_n = lr * lr_lambda(n)``.

    Args:
        lr: the base learning rate; ``>= 0``.
        lr_lambda: ``epoch -> factor``, jax-traceable. It receives the epoch as a float
            array holding the integer (torch passes an int): ``lambda epoch: 0.95 **
            epoch`` works as is; write ``jnp.minimum(1.0, (epoch + 1) / 10)`` rather
            than ``min(1.0, (epoch + 1) / 10)``.
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.LambdaLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.LambdaLR(1.0, lambda epoch: 0.5**epoch)
        >>> [float(schedule(t)) for t in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """

    lr: float
    lr_lambda: Callable[[jax.Array], Any]
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _check_lambda("lr_lambda", self.lr_lambda)

    def _value(self, n: jax.Array) -> jax.Array:
        dtype = default_float()
        return self.lr * jnp.asarray(self.lr_lambda(n.astype(dtype))).astype(dtype)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        del lr
        return self._value(e)


@dataclass(frozen=True, repr=False)
class MultiplicativeLR(_LRScheduler):
    """Multiplies the learning rate by a function of the epoch, every epoch.

    Formula: ``lr_n = lr_{n-1} * lr_lambda(n)``, ``lr_0 = lr``; so ``lr_n = lr *
    prod(lr_lambda(k) for k in 1..n)``. The product is taken step by step as in torch
    (a ``jax.lax.fori_loop``): a call costs O(n).

    Args:
        lr: the base learning rate; ``>= 0``.
        lr_lambda: ``epoch -> factor``, jax-traceable, receiving the epoch as a float
            array (see :class:`LambdaLR`).
        last_epoch: only ``-1``.
        every: optimizer steps per epoch; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.MultiplicativeLR``.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.MultiplicativeLR(1.0, lambda epoch: 0.5)
        >>> [float(schedule(t)) for t in range(4)]
        [1.0, 0.5, 0.25, 0.125]
    """

    lr: float
    lr_lambda: Callable[[jax.Array], Any]
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _check_lambda("lr_lambda", self.lr_lambda)

    def _times(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        return lr * jnp.asarray(self.lr_lambda(e.astype(lr.dtype))).astype(lr.dtype)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        return jnp.where(e == 0, lr, self._times(e, lr))

    def _restarted(self, n: jax.Array, lr_before: Callable[[], jax.Array]) -> jax.Array:
        # SequentialLR restarts it with last_epoch=0 outside torch's initial step: torch
        # then multiplies the lr the previous scheduler left by lr_lambda(0), 1, ..., n.
        dtype = default_float()
        lr = jnp.asarray(lr_before()).astype(dtype)
        return jax.lax.fori_loop(0, n + 1, lambda e, lr: self._times(e, lr).astype(dtype), lr)


_MODES = ("triangular", "triangular2", "exp_range")


@dataclass(frozen=True, repr=False)
class CyclicLR(_LRScheduler):
    """Cycles the learning rate between ``base_lr`` and ``max_lr`` (cyclical learning rates).

    Formula, with ``S = step_size_up + step_size_down`` and ``r = step_size_up / S``::

        cycle = floor(1 + n / S);   x = 1 + n / S - cycle
        f     = x / r  if x <= r  else  (x - 1) / (r - 1)
        lr_n  = base_lr + (max_lr - base_lr) * f * scale
        momentum_n = max_momentum - (max_momentum - base_momentum) * f * scale

    with ``scale = scale_fn(cycle)`` (``scale_mode='cycle'``) or ``scale_fn(n)``
    (``'iterations'``); the modes are ``triangular`` (``scale = 1``), ``triangular2``
    (``1 / 2 ** (cycle - 1)``) and ``exp_range`` (``gamma ** n``).

    Args:
        lr: the optimizer's learning rate (torch overwrites it with ``base_lr``; kept so
            that combined schedulers share one ``lr``); ``>= 0``.
        base_lr: the lower bound of the cycle; ``>= 0``.
        max_lr: the upper bound of the cycle; ``>= 0``.
        step_size_up: epochs (usually batches) rising; an integer ``>= 1``.
        step_size_down: epochs falling; an integer ``>= 0``, ``None`` for
            ``step_size_up``.
        mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored when
            ``scale_fn`` is given.
        gamma: the ``exp_range`` decay per iteration; ``> 0``.
        scale_fn: a custom jax-traceable scale, receiving the cycle or iteration as a
            float array holding an integer; overrides ``mode``.
        scale_mode: ``'cycle'`` or ``'iterations'``: what ``scale_fn`` receives.
        cycle_momentum: also cycle the momentum, inversely; exposed as ``.momentum``.
        base_momentum: the momentum at the peak of the lr; in ``[0, 1)``.
        max_momentum: the momentum at ``base_lr``; in ``[0, 1)``.
        last_epoch: only ``-1``.
        every: optimizer steps per ``scheduler.step()``; ``>= 1`` (torch steps CyclicLR
            every batch: keep 1).

    References:
        torch ``torch.optim.lr_scheduler.CyclicLR``; Smith, *Cyclical Learning Rates for
        Training Neural Networks*, WACV 2017.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.CyclicLR(0.1, base_lr=0.1, max_lr=0.5, step_size_up=2)
        >>> [round(float(schedule(t)), 6) for t in range(5)]
        [0.1, 0.3, 0.5, 0.3, 0.1]
        >>> [round(float(schedule.momentum(t)), 6) for t in range(5)]
        [0.9, 0.85, 0.8, 0.85, 0.9]
    """

    lr: float
    base_lr: float
    max_lr: float
    step_size_up: int = 2000
    step_size_down: int | None = None
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = 1.0
    scale_fn: Callable[[jax.Array], Any] | None = None
    scale_mode: Literal["cycle", "iterations"] = "cycle"
    cycle_momentum: bool = True
    base_momentum: float = 0.8
    max_momentum: float = 0.9
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "base_lr", _number("base_lr", self.base_lr, ge=0))
        _set(self, "max_lr", _number("max_lr", self.max_lr, ge=0))
        _set(self, "step_size_up", check_steps("step_size_up", self.step_size_up, ge=1))
        if self.step_size_down is not None:
            _set(self, "step_size_down", check_steps("step_size_down", self.step_size_down, ge=0))
        if self.scale_fn is None and self.mode not in _MODES:
            raise ValueError(
                f"mode={self.mode!r} must be one of {', '.join(map(repr, _MODES))} "
                "(or give scale_fn)"
            )
        if self.scale_fn is not None and not callable(self.scale_fn):
            raise TypeError(f"scale_fn must be a function, got {type(self.scale_fn).__name__}")
        if self.scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode={self.scale_mode!r} must be 'cycle' or 'iterations'")
        _set(self, "gamma", _number("gamma", self.gamma, gt=0))
        _check_momentum(self)

    @property
    def momentum(self) -> Callable[[jax.typing.ArrayLike], jax.Array] | None:
        """The cycled momentum, ``count -> momentum``; ``None`` without ``cycle_momentum``."""
        return self._momentum if self.cycle_momentum else None

    def _momentum(self, count: jax.typing.ArrayLike) -> jax.Array:
        def at(n: jax.Array) -> jax.Array:
            f, scale = self._shape(n)
            return self.max_momentum - (self.max_momentum - self.base_momentum) * f * scale

        return _per_count(at, _epochs(count, self.every))

    def _shape(self, n: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(f, scale)`` of the formula at epoch ``n``, in torch's float operations."""
        dtype = default_float()
        up = float(self.step_size_up)
        down = up if self.step_size_down is None else float(self.step_size_down)
        total = up + down
        ratio = up / total
        t = n.astype(dtype)
        cycle = jnp.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        f = jnp.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        if self.scale_fn is not None:
            fn, by_cycle = self.scale_fn, self.scale_mode == "cycle"
        elif self.mode == "triangular":
            fn, by_cycle = (lambda c: jnp.ones((), dtype)), True
        elif self.mode == "triangular2":
            fn, by_cycle = (lambda c: 1 / (2.0 ** (c - 1))), True
        else:
            fn, by_cycle = (lambda i: self.gamma**i), False
        return f, jnp.asarray(fn(cycle if by_cycle else t)).astype(dtype)

    def _value(self, n: jax.Array) -> jax.Array:
        f, scale = self._shape(n)
        return self.base_lr + (self.max_lr - self.base_lr) * f * scale

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        del lr
        return self._value(e)


@dataclass(frozen=True, repr=False)
class OneCycleLR(_LRScheduler):
    """The one-cycle policy: warm up to ``max_lr``, then anneal far below the start.

    Formula: phases between knots, each annealed from its start to its end value with
    ``pct = (n - start) / (end - start)`` by ``cos`` (``end + (start - end) / 2 *
    (1 + cos(pi * pct))``) or ``linear`` (``start + (end - start) * pct``)::

        initial = max_lr / div_factor;  min_lr = initial / final_div_factor;  T = total_steps
        two phases:   0 -> pct_start*T - 1 : initial -> max_lr
                        -> T - 1            : max_lr  -> min_lr
        three phases: 0 -> pct_start*T - 1 : initial -> max_lr
                        -> 2*pct_start*T - 2: max_lr  -> initial
                        -> T - 1            : initial -> min_lr

    The momentum runs the other way (``max_momentum -> base_momentum`` while the lr
    rises, and back), exposed as ``.momentum``.

    Args:
        lr: the optimizer's learning rate (torch ignores it); ``>= 0``.
        max_lr: the peak learning rate; ``>= 0``.
        total_steps: the length of the cycle, an integer ``>= 1``; or ``None`` to use
            ``epochs * steps_per_epoch``. torch raises when stepped past it; a traced
            count cannot, so from ``total_steps + 1`` on the end of the cycle
            (``min_lr``) is held. At ``total_steps`` torch extrapolates the last phase one
            step (below ``min_lr``, even negative with ``'linear'``); that is kept.
        epochs: with ``steps_per_epoch``, the alternative to ``total_steps``.
        steps_per_epoch: see ``epochs``.
        pct_start: the fraction of the cycle spent warming up; in ``[0, 1]``, and such
            that the phases do not collapse (torch divides by zero then).
        anneal_strategy: ``'cos'`` or ``'linear'``.
        cycle_momentum: also cycle the momentum; exposed as ``.momentum``.
        base_momentum: the momentum at the peak lr; in ``[0, 1)``.
        max_momentum: the momentum at the start and the end; in ``[0, 1)``.
        div_factor: ``initial = max_lr / div_factor``; ``> 0``.
        final_div_factor: ``min_lr = initial / final_div_factor``; ``> 0``.
        three_phase: come back to ``initial`` before annealing to ``min_lr``.
        last_epoch: only ``-1``.
        every: optimizer steps per ``scheduler.step()``; ``>= 1`` (torch steps
            OneCycleLR every batch: keep 1).

    References:
        torch ``torch.optim.lr_scheduler.OneCycleLR``; Smith & Topin, *Super-Convergence:
        Very Fast Training of Neural Networks Using Large Learning Rates*, 2018.

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.OneCycleLR(
        ...     0.1, max_lr=1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear",
        ...     div_factor=5.0, final_div_factor=2.0,
        ... )
        >>> [round(float(schedule(t)), 6) for t in (0, 2, 4, 9, 10, 20)]
        [0.2, 0.6, 1.0, 0.1, -0.08, 0.1]
        >>> [round(float(schedule.momentum(t)), 6) for t in (0, 4, 9)]
        [0.95, 0.85, 0.95]
    """

    lr: float
    max_lr: float
    total_steps: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        _check_common(self)
        _set(self, "max_lr", _number("max_lr", self.max_lr, ge=0))
        if self.total_steps is not None:
            _set(self, "total_steps", check_steps("total_steps", self.total_steps, ge=1))
        elif self.epochs is not None and self.steps_per_epoch is not None:
            _set(self, "epochs", check_steps("epochs", self.epochs, ge=1))
            _set(
                self, "steps_per_epoch", check_steps("steps_per_epoch", self.steps_per_epoch, ge=1)
            )
        else:
            raise ValueError("give total_steps, or epochs and steps_per_epoch")
        _set(self, "pct_start", _number("pct_start", self.pct_start, ge=0, le=1))
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy={self.anneal_strategy!r} must be 'cos' or 'linear'")
        _set(self, "div_factor", _number("div_factor", self.div_factor, gt=0))
        _set(self, "final_div_factor", _number("final_div_factor", self.final_div_factor, gt=0))
        _check_momentum(self)
        ends = [phase[0] for phase in self._phases()]
        if ends[0] == 0 or any(a >= b for a, b in itertools.pairwise(ends)):
            raise ValueError(
                f"pct_start={self.pct_start!r} with total_steps={self._total} "
                f"{'and three_phase ' if self.three_phase else ''}gives phases ending at steps "
                f"{ends}: they must increase and the first must not end at step 0 (torch "
                "divides by zero)"
            )

    @property
    def _total(self) -> int:
        if self.total_steps is not None:
            return self.total_steps
        return self.epochs * self.steps_per_epoch  # type: ignore[operator]

    def _phases(self) -> list[tuple[float, float, float, float, float]]:
        """``(end_step, start_lr, end_lr, start_momentum, end_momentum)`` per phase."""
        total, pct = self._total, self.pct_start
        initial = self.max_lr / self.div_factor
        min_lr = initial / self.final_div_factor
        peak, low, high = self.max_lr, self.base_momentum, self.max_momentum
        if not self.cycle_momentum:
            low = high = 0.0
        if self.three_phase:
            return [
                (float(pct * total) - 1, initial, peak, high, low),
                (float(2 * pct * total) - 2, peak, initial, low, high),
                (total - 1, initial, min_lr, high, high),
            ]
        return [
            (float(pct * total) - 1, initial, peak, high, low),
            (total - 1, peak, min_lr, low, high),
        ]

    def _anneal(self, start: float, end: float, pct: jax.Array) -> jax.Array:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, n: jax.Array, column: int) -> jax.Array:
        """Column 1 (lr) or 3 (momentum) of the phase holding epoch ``n``."""
        # Past total_steps torch raises; hold the end of the cycle (total_steps - 1).
        t = jnp.where(n > self._total, self._total - 1, n).astype(default_float())
        phases, starts = self._phases(), [0.0]
        starts += [phase[0] for phase in phases[:-1]]
        values = [
            # A phase's last step gives its end value exactly (torch: to 1 ulp of the
            # start; in float32, start + (end - start) * pct keeps 1e-3 of min_lr).
            jnp.where(
                t == phase[0],
                phase[column + 1],
                self._anneal(phase[column], phase[column + 1], (t - start) / (phase[0] - start)),
            )
            for start, phase in zip(starts, phases, strict=True)
        ]
        value = values[-1]
        for phase, candidate in zip(phases[-2::-1], values[-2::-1], strict=True):
            value = jnp.where(t <= phase[0], candidate, value)
        return value

    @property
    def momentum(self) -> Callable[[jax.typing.ArrayLike], jax.Array] | None:
        """The cycled momentum, ``count -> momentum``; ``None`` without ``cycle_momentum``."""
        return self._momentum if self.cycle_momentum else None

    def _momentum(self, count: jax.typing.ArrayLike) -> jax.Array:
        return _per_count(lambda n: self._at(n, 3), _epochs(count, self.every))

    def _value(self, n: jax.Array) -> jax.Array:
        return self._at(n, 1)

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        del lr
        return self._value(e)


def _members(kind: str, schedulers: Sequence[Any]) -> tuple[_LRScheduler, ...]:
    """Checks the members of a combined scheduler; they share one ``lr`` and step together."""
    members = tuple(schedulers)
    if not members:
        raise ValueError(f"{kind} needs at least one scheduler")
    for i, member in enumerate(members):
        if not isinstance(member, _LRScheduler):
            raise TypeError(
                f"schedulers[{i}] must be a jopt.torch.lr_scheduler scheduler, got "
                f"{type(member).__name__}"
            )
        if isinstance(member, OneCycleLR):
            raise ValueError(
                f"schedulers[{i}] is a OneCycleLR, which {kind} does not take: in torch it "
                "rewrites the optimizer's initial_lr, which changes the schedulers around it"
            )
        if member.every != 1:
            raise ValueError(
                f"schedulers[{i}].every={member.every!r} must be 1: the members step "
                f"together; set every on the {kind}"
            )
        if member.lr != members[0].lr:
            raise ValueError(
                f"schedulers[{i}].lr={member.lr!r} must equal schedulers[0].lr="
                f"{members[0].lr!r}: torch's schedulers share one optimizer"
            )
    if isinstance(members[0], CyclicLR) and members[0].base_lr != members[0].lr:
        # Built first, torch's CyclicLR sets the optimizer's lr (hence initial_lr, the
        # base of every scheduler built after it) to base_lr.
        lr = members[0].base_lr
        members = (members[0], *(dataclasses.replace(m, lr=lr) for m in members[1:]))
    return members


@dataclass(frozen=True, repr=False)
class ChainedScheduler(_LRScheduler):
    """Steps several schedulers together, each acting on the lr the previous one set.

    Formula: torch's recursion, member by member: at each epoch every member's
    ``get_lr`` runs on the learning rate the members before it left. When all members
    are multiplicative (:class:`StepLR`, :class:`MultiStepLR`, :class:`ConstantLR`,
    :class:`LinearLR`, :class:`ExponentialLR`, :class:`PolynomialLR`) that is the product
    of their factors, ``lr_n = lr * prod(f_i(n))``, computed in O(1); otherwise the
    recursion runs with a ``jax.lax.fori_loop`` (O(n) per call), so that, e.g., a
    :class:`CosineAnnealingLR` acts on the learning rate another member decayed, as in
    torch.

    Args:
        schedulers: the members, in construction order; they share one ``lr`` and have
            ``every=1``. A nested :class:`ChainedScheduler` is flattened;
            :class:`SequentialLR` and :class:`OneCycleLR` members are rejected.
        every: optimizer steps per ``scheduler.step()``; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.ChainedScheduler`` (its ``optimizer`` argument
        is not needed).

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.ChainedScheduler([
        ...     lr_scheduler.ConstantLR(1.0, factor=0.5, total_iters=2),
        ...     lr_scheduler.ExponentialLR(1.0, gamma=0.5),
        ... ])
        >>> [float(schedule(t)) for t in range(4)]
        [0.5, 0.25, 0.25, 0.125]
    """

    schedulers: Sequence[_LRScheduler]
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        flat: list[Any] = []
        for member in self.schedulers:
            if isinstance(member, SequentialLR):
                raise ValueError("ChainedScheduler does not take a SequentialLR member")
            flat.extend(member.schedulers if isinstance(member, ChainedScheduler) else [member])
        _set(self, "schedulers", _members("ChainedScheduler", flat))
        _set(self, "every", check_steps("every", self.every, ge=1))

    @property
    def lr(self) -> float:  # type: ignore[override]
        """The base learning rate the members share."""
        return self.schedulers[0].lr

    def _update(self, e: jax.Array, lr: jax.Array) -> jax.Array:
        for member in self.schedulers:
            lr = member._update(e, lr).astype(lr.dtype)
        return lr

    def _value(self, n: jax.Array) -> jax.Array:
        if all(m._multiplicative for m in self.schedulers):
            value = jnp.asarray(self.lr, default_float())
            for member in self.schedulers:
                value = value * member._factor(n)  # type: ignore[attr-defined]
            return value
        return self._emulate(n)


@dataclass(frozen=True, repr=False)
class SequentialLR(_LRScheduler):
    """Runs schedulers one after the other, switching at the milestone epochs.

    Formula: with milestones ``m_1 < ... < m_k`` and ``m_0 = 0``, epoch ``n`` in
    ``[m_i, m_{i+1})`` gives ``schedulers[i]`` at epoch ``n - m_i``: torch restarts each
    member at its milestone from its closed form (so from its own ``lr``);
    a :class:`MultiplicativeLR` member, having no closed form, continues in torch from
    the lr the previous member left, times ``lr_lambda(0)``, and does so here too.

    Args:
        schedulers: the members; they share one ``lr`` and have ``every=1``.
            :class:`ChainedScheduler`, :class:`SequentialLR` and :class:`OneCycleLR`
            members are rejected (torch fails on the first two at a milestone).
        milestones: ``len(schedulers) - 1`` epochs; integers ``>= 1``, increasing.
        last_epoch: only ``-1``.
        every: optimizer steps per ``scheduler.step()``; ``>= 1``.

    References:
        torch ``torch.optim.lr_scheduler.SequentialLR`` (its ``optimizer`` argument is not
        needed).

    Example:
        >>> from jopt.torch import lr_scheduler
        >>> schedule = lr_scheduler.SequentialLR(
        ...     [
        ...         lr_scheduler.LinearLR(1.0, start_factor=0.5, total_iters=2),
        ...         lr_scheduler.ExponentialLR(1.0, gamma=0.5),
        ...     ],
        ...     milestones=[2],
        ... )
        >>> [float(schedule(t)) for t in range(5)]
        [0.5, 0.75, 1.0, 0.5, 0.25]
    """

    schedulers: Sequence[_LRScheduler]
    milestones: Sequence[int]
    last_epoch: int = -1
    _: KW_ONLY
    every: int = 1

    def __post_init__(self) -> None:
        for i, member in enumerate(self.schedulers):
            if isinstance(member, (ChainedScheduler, SequentialLR)):
                raise ValueError(
                    f"schedulers[{i}] is a {type(member).__name__}, which SequentialLR does "
                    "not take (torch fails on it at its milestone)"
                )
        _set(self, "schedulers", _members("SequentialLR", self.schedulers))
        milestones = tuple(
            check_steps(f"milestones[{i}]", m, ge=1) for i, m in enumerate(self.milestones)
        )
        if len(milestones) != len(self.schedulers) - 1:
            raise ValueError(
                f"len(milestones)={len(milestones)} must be len(schedulers) - 1 = "
                f"{len(self.schedulers) - 1}"
            )
        if any(a >= b for a, b in itertools.pairwise(milestones)):
            raise ValueError(f"milestones={list(milestones)!r} must be strictly increasing")
        _set(self, "milestones", milestones)
        _check_common(self, lr=False)

    @property
    def lr(self) -> float:  # type: ignore[override]
        """The base learning rate the members share."""
        return self.schedulers[0].lr

    def _segment(self, i: int, n: jax.Array) -> jax.Array:
        """The lr at epoch ``n``, supposing ``schedulers[i]`` is the one running."""
        starts = (0, *self.milestones)
        local = jnp.maximum(n - starts[i], 0)
        if i + 1 < len(starts):
            local = jnp.minimum(local, starts[i + 1] - starts[i] - 1)
        if i == 0:
            return self.schedulers[0]._value(local)
        previous_end = jnp.asarray(starts[i] - 1, jnp.int32)
        return self.schedulers[i]._restarted(local, lambda: self._segment(i - 1, previous_end))

    def _value(self, n: jax.Array) -> jax.Array:
        value = self._segment(len(self.schedulers) - 1, n)
        for i in range(len(self.milestones) - 1, -1, -1):
            value = jnp.where(n < self.milestones[i], self._segment(i, n), value)
        return value


def ReduceLROnPlateau(
    optimizer: GradientTransformation,
    mode: Literal["min", "max"] = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: Literal["rel", "abs"] = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
    *,
    every: int | None = 1,
) -> GradientTransformation:
    """Lowers the wrapped optimizer's learning rate when a monitored value stops improving.

    torch 2.13's ``ReduceLROnPlateau``, as a transformation wrapping ``optimizer`` (a
    jopt optimizer of either door): it reads the value from
    ``update(grads, state, params, value=loss)`` and lowers the ``lr`` (or
    ``learning_rate``) hyperparameter in the optimizer's state, so
    ``jopt.hyperparams(state)`` reports what torch's ``get_last_lr()`` does. Each
    scheduler step, on a value ``v`` (with ``t = threshold``)::

        better = v < best * (1 - t)   (min, rel)     v < best - t   (min, abs)
                 v > best * (1 + t)   (max, rel)     v > best + t   (max, abs)
        best <- v and num_bad_epochs <- 0 if better, else num_bad_epochs += 1
        in cooldown: cooldown_counter -= 1, num_bad_epochs <- 0
        if num_bad_epochs > patience:
            lr <- max(lr * factor, min_lr)   (skipped if it would lower lr by eps or less)
            cooldown_counter <- cooldown, num_bad_epochs <- 0

    The optimizer's update at a step uses the learning rate from before that step's
    value (torch's ``optimizer.step(); scheduler.step(loss)``). ``init`` raises if the
    optimizer has no learning rate in its state or if it follows a schedule. See
    :mod:`jopt.plateau` for per-epoch stepping with a validation loss.

    Args:
        optimizer: the jopt optimizer whose learning rate to reduce.
        mode: ``"min"`` (the value should decrease) or ``"max"``.
        factor: ``lr <- lr * factor``; in [0, 1).
        patience: scheduler steps without improvement tolerated; an integer >= 0.
        threshold: how much better counts as an improvement; >= 0.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: scheduler steps after a reduction during which bad ones are ignored.
        min_lr: the learning rate is not reduced below this; a number >= 0 (torch's
            per-group list is not supported).
        eps: reductions of ``eps`` or less are skipped; >= 0.
        every: updates per scheduler step, which takes the mean of their ``value``s;
            ``None``: ``update`` reads no value, step with :func:`jopt.plateau_step`.

    Returns:
        A transformation whose state is a :class:`jopt.plateau.PlateauState`.

    References:
        torch ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.torch.lr_scheduler import ReduceLROnPlateau
        >>> tx = ReduceLROnPlateau(jopt.torch.SGD(lr=1.0), factor=0.5, patience=1)
        >>> state = tx.init(jnp.zeros(1))
        >>> for loss in [1.0, 0.8, 0.9, 0.85, 0.7, 0.75]:
        ...     updates, state = tx.update(jnp.ones(1), state, value=loss)
        ...     print(updates, jopt.hyperparams(state)["lr"])
        [-1.] 1.0
        [-1.] 1.0
        [-1.] 1.0
        [-1.] 0.5
        [-0.5] 0.5
        [-0.5] 0.5
    """
    return _plateau.wrap(
        optimizer,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
        eps=eps,
        every=every,
    )
