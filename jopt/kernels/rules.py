"""The update rules that jopt's fused step kernels implement, with their XLA twins.

A :class:`StepKernel` names a C++ kernel, its state arrays, the dtypes each state may
be stored in (one FFI target in ``cpu_kernels.cc`` per combination) and the order of
its coefficients, and gives the same update as XLA code
(:meth:`StepKernel.reference`): the twin that runs on other devices and dtypes, gives
derivatives and batching, and is the tests' oracle. Each rule is its optimizer's
``update`` followed by ``apply_updates``, operation for operation, with ``g`` first
multiplied by ``grad_scale`` (a folded :func:`jopt.clip_by_global_norm`) and
``neg_lr = -learning_rate``.

Adding an optimizer to :func:`jopt.step`'s kernels is: a loop in ``cpu_kernels.cc``
(one handler per storage combination), a ``StepKernel`` here, and a plan in
:mod:`jopt.kernel_steps` that maps its state and hyperparameters onto them. Torch's
coupled weight decay (``g <- g + weight_decay p`` before the rule) is not a rule of its
own: :meth:`StepKernel.with_l2` adds it to any rule, a handler per rule in C++.

Example:
    >>> import jax.numpy as jnp
    >>> from jopt.kernels import rules
    >>> c = rules.MOMENTUM.pack(grad_scale=1.0, d=0.9, c=1.0, neg_lr=-0.1)
    >>> p, (m,) = rules.MOMENTUM.reference(jnp.ones(2), jnp.ones(2), (jnp.ones(2),), c)
    >>> p, m
    (Array([0.81, 0.81], dtype=float32), Array([1.9, 1.9], dtype=float32))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree

__all__ = [
    "ADADELTA",
    "ADADELTA_L2",
    "ADAGRAD",
    "ADAGRAD_EPS_OUTSIDE",
    "ADAGRAD_EPS_OUTSIDE_L2",
    "ADAM",
    "ADAMW",
    "ADAM_L2",
    "AMSGRAD",
    "AMSGRADW_RAW",
    "AMSGRAD_RAW",
    "AMSGRAD_RAW_L2",
    "KERNELS",
    "MOMENTUM",
    "MOMENTUM_L2",
    "MOMENTUM_NESTEROV",
    "MOMENTUM_NESTEROV_L2",
    "NADAM",
    "NADAMW",
    "RMSPROP",
    "RMSPROP_CENTERED",
    "RMSPROP_CENTERED_EPS_OUTSIDE",
    "RMSPROP_CENTERED_EPS_OUTSIDE_L2",
    "RMSPROP_CENTERED_MOMENTUM",
    "RMSPROP_CENTERED_MOMENTUM_NESTEROV",
    "RMSPROP_EPS_OUTSIDE",
    "RMSPROP_EPS_OUTSIDE_L2",
    "RMSPROP_MOMENTUM",
    "RMSPROP_MOMENTUM_NESTEROV",
    "TORCH_RMSPROP_CENTERED_MOMENTUM",
    "TORCH_RMSPROP_CENTERED_MOMENTUM_L2",
    "TORCH_RMSPROP_MOMENTUM",
    "TORCH_RMSPROP_MOMENTUM_L2",
    "Rule",
    "StepKernel",
]

Rule = Callable[
    [jax.Array, jax.Array, tuple[jax.Array, ...], dict[str, jax.Array]],
    tuple[jax.Array, tuple[jax.Array, ...]],
]


_DTYPE_CODES = {"float32": "f32", "bfloat16": "bf16"}


class StepKernel(NamedTuple):
    """A fused step kernel: ``name``, ``states`` (the names of its state arrays, each
    shaped like the parameters), ``coefficients`` (the names, in the order of the
    kernel's coefficient vector), ``rule`` (the update as XLA code on one buffer, in
    the compute dtype) and ``storage`` (the dtypes each state may be kept in; every
    combination has a kernel). Parameters and gradients are float32; the arithmetic
    is float32 whatever the storage, each new state rounded once to its dtype.
    ``l2``: the rule sees ``g + l2 p`` (see :meth:`with_l2`).

    Example:
        >>> from jopt.kernels import rules
        >>> rules.ADAM.states, rules.ADAM.target("float32", "bfloat16")
        (('mu', 'nu'), 'jopt_adam_step_f32_bf16')
    """

    name: str
    states: tuple[str, ...]
    coefficients: tuple[str, ...]
    rule: Rule
    storage: tuple[str, ...] = ("float32",)
    l2: bool = False

    def with_l2(self) -> StepKernel:
        """This rule after torch's coupled weight decay, ``g <- g + l2 p`` (``g`` already
        multiplied by ``grad_scale``; torch's ``maximize`` is a negative ``grad_scale``):
        named ``<name>_l2``, its coefficients ``grad_scale, l2`` then the rule's, its
        state float32 (the torch door's).

        Example:
            >>> from jopt.kernels import rules
            >>> rules.MOMENTUM.with_l2().coefficients
            ('grad_scale', 'l2', 'd', 'c', 'neg_lr')
        """
        head, *rest = self.coefficients
        return self._replace(
            name=f"{self.name}_l2",
            coefficients=(head, "l2", *rest),
            storage=("float32",),
            l2=True,
        )

    def target(self, *dtypes: Any) -> str | None:
        """The FFI target for states stored in ``dtypes`` (one per state), or None.

        Example:
            >>> import jax.numpy as jnp
            >>> from jopt.kernels import rules
            >>> rules.MOMENTUM.target(jnp.bfloat16), rules.ADAGRAD.target(jnp.bfloat16)
            ('jopt_momentum_step_bf16', None)
        """
        names = [jnp.dtype(d).name for d in dtypes]
        if len(names) != len(self.states) or any(n not in self.storage for n in names):
            return None
        return "_".join([f"jopt_{self.name}_step", *(_DTYPE_CODES[n] for n in names)])

    def target_for(self, states: Any) -> str | None:
        """The FFI target for state buffers ``states[s][j]`` (buffer ``j`` of state
        ``s``), or None when a state's buffers mix dtypes or one the kernel does not keep.

        Example:
            >>> import jax.numpy as jnp
            >>> from jopt.kernels import rules
            >>> rules.MOMENTUM.target_for([[jnp.zeros(2), jnp.zeros(3, jnp.bfloat16)]]) is None
            True
        """
        dtypes = [{jnp.result_type(x) for x in buffers} for buffers in states]
        if any(len(d) != 1 for d in dtypes):
            return None
        return self.target(*(d.pop() for d in dtypes))

    def targets(self) -> list[str]:
        """Every FFI target of this kernel (one per storage combination).

        Example:
            >>> from jopt.kernels import rules
            >>> rules.RMSPROP.targets()
            ['jopt_rmsprop_step_f32']
        """
        combos = itertools.product(self.storage, repeat=len(self.states))
        return [t for combo in combos if (t := self.target(*combo)) is not None]

    def pack(self, **values: Any) -> jax.Array:
        """The coefficient vector (float32, in the kernel's order) from named values.

        Example:
            >>> from jopt.kernels import rules
            >>> rules.MOMENTUM.pack(grad_scale=1.0, d=0.5, c=1.0, neg_lr=-0.5)
            Array([ 1. ,  0.5,  1. , -0.5], dtype=float32)
        """
        missing = [k for k in self.coefficients if k not in values]
        extra = [k for k in values if k not in self.coefficients]
        if missing or extra:
            raise TypeError(
                f"{self.name} kernel coefficients: missing {missing}, unexpected {extra}; "
                f"it takes {list(self.coefficients)}"
            )
        return jnp.stack([jtree.scalar(values[k], jnp.float32) for k in self.coefficients])

    def reference(
        self, p: jax.Array, g: jax.Array, states: tuple[jax.Array, ...], coefficients: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """The step on one buffer as XLA code: new ``(p, states)``.

        Computes in the promoted dtype (at least float32) and rounds each result once to
        its input's dtype.

        Example:
            >>> import jax.numpy as jnp
            >>> from jopt.kernels import rules
            >>> c = rules.MOMENTUM.pack(grad_scale=2.0, d=0.5, c=1.0, neg_lr=-0.25)
            >>> rules.MOMENTUM.reference(jnp.ones(2), jnp.ones(2), (jnp.zeros(2),), c)[0]
            Array([0.5, 0.5], dtype=float32)
        """
        ct = jtree.compute_dtype(jtree.promote(p.dtype, g.dtype, *(s.dtype for s in states)))
        c = {k: coefficients[i].astype(ct) for i, k in enumerate(self.coefficients)}
        p_ct, g_ct = p.astype(ct), g.astype(ct) * c["grad_scale"]
        if self.l2:
            g_ct = g_ct + c["l2"] * p_ct
        new_p, new_states = self.rule(p_ct, g_ct, tuple(s.astype(ct) for s in states), c)
        return jtree.cast(new_p, p.dtype), tuple(
            jtree.cast(x, s.dtype) for x, s in zip(new_states, states, strict=True)
        )


def _momentum(nesterov: bool) -> Rule:
    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        m = c["d"] * s[0] + g * c["c"]
        u = g + c["d"] * m if nesterov else m
        return p + u * c["neg_lr"], (m,)

    return rule


def _second_moment(g: Any, s: tuple, c: dict, centered: bool) -> tuple[Any, tuple]:
    """RMSprop's new state (``(v,)``, or ``(m, v)`` centered) and the value under its
    root (``v``, or the variance ``v - m^2``)."""
    if not centered:
        v = c["c"] * (g * g) + c["d"] * s[0]
        return v, (v,)
    m = c["c"] * g + c["d"] * s[0]
    v = c["c"] * (g * g) + c["d"] * s[1]
    return v - m * m, (m, v)


def _rmsprop(eps_in_sqrt: bool, centered: bool = False) -> Rule:
    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        second, new = _second_moment(g, s, c, centered)
        if eps_in_sqrt:
            u = jax.lax.rsqrt(second + c["eps"]) * g
        else:
            u = g / (jnp.sqrt(second) + c["eps"])
        return p + u * c["neg_lr"], new

    return rule


def _rmsprop_momentum(lr_inside: bool, nesterov: bool = False, centered: bool = False) -> Rule:
    """RMSprop, then a momentum buffer (the last state): optax's order (``scale_by_rms``
    or ``scale_by_stddev``, ``scale_by_learning_rate``, ``trace``; eps inside the root)
    with ``lr_inside``, torch's (eps outside the root, ``trace``, the learning rate)
    without."""

    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        second, new = _second_moment(g, s, c, centered)
        if lr_inside:
            u = (jax.lax.rsqrt(second + c["eps"]) * g) * c["neg_lr"]
            b = c["momentum"] * s[-1] + u
            return p + (u + c["momentum"] * b if nesterov else b), (*new, b)
        b = c["momentum"] * s[-1] + g / (jnp.sqrt(second) + c["eps"])
        return p + b * c["neg_lr"], (*new, b)

    return rule


def _adagrad(eps_in_sqrt: bool) -> Rule:
    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        total = g * g + s[0]
        if eps_in_sqrt:
            root = jax.lax.rsqrt(total + c["eps"])
            u = jnp.where(total > 0, root, jnp.zeros((), total.dtype)) * g
        else:
            u = g / (jnp.sqrt(total) + c["eps"])
        return p + u * c["neg_lr"], (total,)

    return rule


def _adadelta(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
    e_g = c["c"] * (g * g) + c["d"] * s[0]
    u = jnp.sqrt(s[1] + c["eps"]) / jnp.sqrt(e_g + c["eps"]) * g
    e_x = c["c"] * (u * u) + c["d"] * s[1]
    return p + u * c["neg_lr"], (e_g, e_x)


def _adam_moments(g: Any, s: tuple, c: dict) -> tuple[Any, Any]:
    """Adam's new moments ``m``, ``v`` (``scale_by_adam``'s order of operations)."""
    return c["c1"] * g + c["d1"] * s[0], c["c2"] * (g * g) + c["d2"] * s[1]


def _adam_apply(p: Any, m_hat: Any, v_hat: Any, c: dict, decoupled_decay: bool) -> Any:
    """``p + neg_lr (m_hat / (sqrt(v_hat + eps_root) + eps) [+ weight_decay p])``."""
    u = m_hat / (jnp.sqrt(v_hat + c["eps_root"]) + c["eps"])
    if decoupled_decay:
        u = u + c["weight_decay"] * p
    return p + u * c["neg_lr"]


def _adam(decoupled_decay: bool, nesterov: bool = False) -> Rule:
    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        m, v = _adam_moments(g, s, c)
        m_hat = m / c["bc1"]
        if nesterov:  # NAdam (unused m / bc1 is dead code to XLA)
            m_hat = c["d1"] * m / c["bc1_next"] + c["c1"] * g / c["bc1"]
        return _adam_apply(p, m_hat, v / c["bc2"], c, decoupled_decay), (m, v)

    return rule


def _amsgrad_raw(decoupled_decay: bool) -> Rule:
    def rule(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
        m, v = _adam_moments(g, s, c)
        n = jnp.maximum(s[2], v)
        return _adam_apply(p, m / c["bc1"], n / c["bc2"], c, decoupled_decay), (m, v, n)

    return rule


def _amsgrad(p: Any, g: Any, s: tuple, c: dict) -> tuple[Any, tuple]:
    m, v = _adam_moments(g, s, c)
    n = jnp.maximum(s[2], v / c["bc2"])
    return _adam_apply(p, m / c["bc1"], n, c, False), (m, v, n)


_ADAM_COEFFICIENTS = (
    "grad_scale", "d1", "c1", "d2", "c2", "bc1", "bc2", "eps_root", "eps", "weight_decay", "neg_lr",
)  # fmt: skip

_LOW_PRECISION = ("float32", "bfloat16")

MOMENTUM = StepKernel(
    "momentum", ("trace",), ("grad_scale", "d", "c", "neg_lr"), _momentum(False), _LOW_PRECISION
)
"""``m <- d m + c g;  p <- p + neg_lr m``, the momentum in float32 or bfloat16:
:func:`jopt.sgd` with momentum ``d`` (``c = 1``), :func:`jopt.torch.SGD` (``c = 1 -
dampening`` after the first step)."""
MOMENTUM_NESTEROV = MOMENTUM._replace(name="momentum_nesterov", rule=_momentum(True))
"""Nesterov momentum: ``m <- d m + c g;  p <- p + neg_lr (g + d m)`` (``nesterov=True``)."""
RMSPROP = StepKernel(
    "rmsprop",
    ("nu",),
    ("grad_scale", "d", "c", "eps", "neg_lr"),
    _rmsprop(eps_in_sqrt=True),
)
"""``v <- c g^2 + d v;  p <- p + neg_lr g / sqrt(v + eps)``: :func:`jopt.rmsprop`."""
RMSPROP_EPS_OUTSIDE = RMSPROP._replace(name="rmsprop_eps_outside", rule=_rmsprop(eps_in_sqrt=False))
"""RMSprop with ``g / (sqrt(v) + eps)`` (``eps_in_sqrt=False``)."""
_RMSPROP_MOMENTUM_COEFFICIENTS = ("grad_scale", "d", "c", "eps", "momentum", "neg_lr")
RMSPROP_MOMENTUM = StepKernel(
    "rmsprop_momentum",
    ("nu", "trace"),
    _RMSPROP_MOMENTUM_COEFFICIENTS,
    _rmsprop_momentum(lr_inside=True),
)
"""optax's RMSprop with momentum (eps inside the root, the learning rate inside the
buffer): ``v <- c g^2 + d v;  b <- momentum b + neg_lr g / sqrt(v + eps);  p <- p + b``:
:func:`jopt.rmsprop` with ``momentum``."""
RMSPROP_MOMENTUM_NESTEROV = RMSPROP_MOMENTUM._replace(
    name="rmsprop_momentum_nesterov", rule=_rmsprop_momentum(lr_inside=True, nesterov=True)
)
"""The same with Nesterov momentum: ``p <- p + u + momentum b`` for ``u = neg_lr g / sqrt(v +
eps)`` (``nesterov=True``)."""
TORCH_RMSPROP_MOMENTUM = RMSPROP_MOMENTUM._replace(
    name="torch_rmsprop_momentum", rule=_rmsprop_momentum(lr_inside=False)
)
"""torch's RMSprop with momentum (eps outside the root, the learning rate after the
buffer): ``b <- momentum b + g / (sqrt(v) + eps);  p <- p + neg_lr b``:
:func:`jopt.torch.RMSprop` with ``momentum``."""
RMSPROP_CENTERED = StepKernel(
    "rmsprop_centered",
    ("mu", "nu"),
    RMSPROP.coefficients,
    _rmsprop(eps_in_sqrt=True, centered=True),
)
"""Centered RMSprop: ``m <- c g + d m;  v <- c g^2 + d v;  p <- p + neg_lr g / sqrt(v - m^2 +
eps)``: :func:`jopt.rmsprop` with ``centered=True``."""
RMSPROP_CENTERED_EPS_OUTSIDE = RMSPROP_CENTERED._replace(
    name="rmsprop_centered_eps_outside", rule=_rmsprop(eps_in_sqrt=False, centered=True)
)
"""Centered RMSprop with ``g / (sqrt(v - m^2) + eps)``: :func:`jopt.torch.RMSprop` with
``centered=True``, :func:`jopt.rmsprop` with ``centered=True, eps_in_sqrt=False``."""
RMSPROP_CENTERED_MOMENTUM = StepKernel(
    "rmsprop_centered_momentum",
    ("mu", "nu", "trace"),
    _RMSPROP_MOMENTUM_COEFFICIENTS,
    _rmsprop_momentum(lr_inside=True, centered=True),
)
"""optax's centered RMSprop with momentum: :data:`RMSPROP_MOMENTUM` with the variance
``v - m^2`` under the root."""
RMSPROP_CENTERED_MOMENTUM_NESTEROV = RMSPROP_CENTERED_MOMENTUM._replace(
    name="rmsprop_centered_momentum_nesterov",
    rule=_rmsprop_momentum(lr_inside=True, nesterov=True, centered=True),
)
"""The same with Nesterov momentum."""
TORCH_RMSPROP_CENTERED_MOMENTUM = RMSPROP_CENTERED_MOMENTUM._replace(
    name="torch_rmsprop_centered_momentum",
    rule=_rmsprop_momentum(lr_inside=False, centered=True),
)
"""torch's centered RMSprop with momentum: :data:`TORCH_RMSPROP_MOMENTUM` with the
variance ``v - m^2`` under the root."""
ADAGRAD = StepKernel(
    "adagrad", ("sum_of_squares",), ("grad_scale", "eps", "neg_lr"), _adagrad(eps_in_sqrt=True)
)
"""``s <- s + g^2;  p <- p + neg_lr g / sqrt(s + eps)`` (0 where s = 0): :func:`jopt.adagrad`."""
ADAGRAD_EPS_OUTSIDE = ADAGRAD._replace(name="adagrad_eps_outside", rule=_adagrad(eps_in_sqrt=False))
"""Adagrad with ``g / (sqrt(s) + eps)``: :func:`jopt.torch.Adagrad`."""
ADADELTA = StepKernel(
    "adadelta", ("e_g", "e_x"), ("grad_scale", "d", "c", "eps", "neg_lr"), _adadelta
)
"""``e_g <- c g^2 + d e_g;  u = sqrt(e_x + eps) / sqrt(e_g + eps) g;  e_x <- c u^2 + d e_x;
p <- p + neg_lr u`` (``d = rho``, ``c = 1 - rho``): :func:`jopt.adadelta`,
:func:`jopt.torch.Adadelta`."""
ADAM = StepKernel("adam", ("mu", "nu"), _ADAM_COEFFICIENTS, _adam(False), _LOW_PRECISION)
"""Adam (see :func:`jopt.kernels.adam_step_many`); each moment in float32 or bfloat16."""
ADAMW = StepKernel("adamw", ("mu", "nu"), _ADAM_COEFFICIENTS, _adam(True), _LOW_PRECISION)
"""AdamW: Adam with ``u <- u + weight_decay p`` before the learning rate."""
NADAM = StepKernel(
    "nadam", ("mu", "nu"), (*_ADAM_COEFFICIENTS, "bc1_next"), _adam(False, True), _LOW_PRECISION
)
"""NAdam (:func:`jopt.adam` with ``nesterov=True``): Adam with the bias-corrected first
moment ``b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t)`` (from the new moment before
it is rounded to its storage); each moment in float32 or bfloat16."""
NADAMW = NADAM._replace(name="nadamw", rule=_adam(True, True))
"""NAdamW: NAdam with ``u <- u + weight_decay p`` before the learning rate."""

AMSGRAD_RAW = StepKernel(
    "amsgrad_raw", ("mu", "nu", "nu_max"), _ADAM_COEFFICIENTS, _amsgrad_raw(False)
)
"""AMSGrad as torch keeps it (:func:`jopt.scale_by_amsgrad` with
``max_before_bias_correction=True``): Adam's moments, ``n <- max(n, v)`` of the raw second
moment, ``p <- p + neg_lr (m / bc1) / (sqrt(n / bc2 + eps_root) + eps)``; float32 state:
:func:`jopt.torch.Adam` with ``amsgrad=True``."""
AMSGRADW_RAW = AMSGRAD_RAW._replace(name="amsgradw_raw", rule=_amsgrad_raw(True))
"""Torch's AMSGrad with ``u <- u + weight_decay p`` before the learning rate:
:func:`jopt.torch.AdamW` with ``amsgrad=True``."""
AMSGRAD = AMSGRAD_RAW._replace(name="amsgrad", rule=_amsgrad)
"""AMSGrad as optax keeps it (:func:`jopt.scale_by_amsgrad`'s default): Adam's moments,
``n <- max(n, v / bc2)`` of the bias-corrected second moment, ``p <- p + neg_lr (m / bc1) /
(sqrt(n + eps_root) + eps)``; float32 state: :func:`jopt.amsgrad`."""

MOMENTUM_L2 = MOMENTUM.with_l2()
"""Momentum after torch's coupled weight decay: :func:`jopt.torch.SGD` with ``weight_decay``."""
MOMENTUM_NESTEROV_L2 = MOMENTUM_NESTEROV.with_l2()
"""Nesterov momentum after torch's coupled weight decay."""
RMSPROP_EPS_OUTSIDE_L2 = RMSPROP_EPS_OUTSIDE.with_l2()
"""RMSprop (eps outside the root) after coupled weight decay: :func:`jopt.torch.RMSprop`."""
TORCH_RMSPROP_MOMENTUM_L2 = TORCH_RMSPROP_MOMENTUM.with_l2()
"""torch's RMSprop with momentum after coupled weight decay."""
RMSPROP_CENTERED_EPS_OUTSIDE_L2 = RMSPROP_CENTERED_EPS_OUTSIDE.with_l2()
"""Centered RMSprop (eps outside the root) after coupled weight decay."""
TORCH_RMSPROP_CENTERED_MOMENTUM_L2 = TORCH_RMSPROP_CENTERED_MOMENTUM.with_l2()
"""torch's centered RMSprop with momentum after coupled weight decay."""
ADAGRAD_EPS_OUTSIDE_L2 = ADAGRAD_EPS_OUTSIDE.with_l2()
"""Adagrad (eps outside the root) after coupled weight decay: :func:`jopt.torch.Adagrad`."""
ADADELTA_L2 = ADADELTA.with_l2()
"""Adadelta after weight decay added to the gradient: :func:`jopt.torch.Adadelta` and
:func:`jopt.adadelta` (no mask) with ``weight_decay``."""
ADAM_L2 = ADAM.with_l2()
"""Adam after coupled weight decay: :func:`jopt.torch.Adam` with ``weight_decay``."""
AMSGRAD_RAW_L2 = AMSGRAD_RAW.with_l2()
"""Torch's AMSGrad after coupled weight decay: :func:`jopt.torch.Adam` with ``amsgrad``
and ``weight_decay``."""

KERNELS = (
    MOMENTUM,
    MOMENTUM_NESTEROV,
    RMSPROP,
    RMSPROP_EPS_OUTSIDE,
    RMSPROP_MOMENTUM,
    RMSPROP_MOMENTUM_NESTEROV,
    TORCH_RMSPROP_MOMENTUM,
    RMSPROP_CENTERED,
    RMSPROP_CENTERED_EPS_OUTSIDE,
    RMSPROP_CENTERED_MOMENTUM,
    RMSPROP_CENTERED_MOMENTUM_NESTEROV,
    TORCH_RMSPROP_CENTERED_MOMENTUM,
    ADAGRAD,
    ADAGRAD_EPS_OUTSIDE,
    ADADELTA,
    ADAM,
    ADAMW,
    NADAM,
    NADAMW,
    AMSGRAD_RAW,
    AMSGRADW_RAW,
    AMSGRAD,
    MOMENTUM_L2,
    MOMENTUM_NESTEROV_L2,
    RMSPROP_EPS_OUTSIDE_L2,
    TORCH_RMSPROP_MOMENTUM_L2,
    RMSPROP_CENTERED_EPS_OUTSIDE_L2,
    TORCH_RMSPROP_CENTERED_MOMENTUM_L2,
    ADAGRAD_EPS_OUTSIDE_L2,
    ADADELTA_L2,
    ADAM_L2,
    AMSGRAD_RAW_L2,
)
