"""The optax door: ``jopt.sgd``, ``jopt.adam``, ... with optax 0.2.8's signatures and math.

Each optimizer is a short recipe: a ``chain`` of building blocks inside
:func:`jopt.with_hyperparams` (so every numeric hyperparameter lives in the state)
and, for stateful ones, :func:`jopt.fuse` (so small leaves share one buffer per
dtype). Switching from optax is a one-word change; the trajectories are the same
(tested against optax in float32 and float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jopt import tree as jtree
from jopt.base import GradientTransformation, Params, ScalarOrSchedule
from jopt.combine import chain
from jopt.fused import fuse
from jopt.hyperparams import NONNEGATIVE, UNIT, UNIT_OPEN, with_hyperparams
from jopt.kernel_steps import (
    adadelta_plan,
    adagrad_plan,
    adam_plan,
    keeps,
    momentum_plan,
    rmsprop_plan,
    with_kernel_step,
)
from jopt.kernels import rules
from jopt.transforms.adaptive import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from jopt.transforms.momentum import _check_nesterov, trace
from jopt.transforms.scaling import scale_by_learning_rate
from jopt.transforms.weight_decay import add_decayed_weights

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamw",
    "amsgrad",
    "nadam",
    "nadamw",
    "rmsprop",
    "sgd",
]

Mask = Any | Callable[[Params], Any]


def _is_zero(value: Any) -> bool:
    return not callable(value) and not jtree.is_traced(value) and float(value) == 0.0


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Update rule::

        m_t = momentum * m_{t-1} + g_t                          (if momentum is given)
        u_t = -lr_t * (g_t + momentum * m_t  if nesterov  else  m_t)

    Args:
        learning_rate: a float or a schedule ``count -> lr``.
        momentum: the momentum coefficient, or ``None`` for plain SGD.
        nesterov: Nesterov momentum (needs ``momentum``).
        accumulator_dtype: dtype of the momentum buffer (default: the params').

    Hyperparameters in the state: ``learning_rate``, ``momentum``.

    Stepped with :func:`jopt.step`, momentum (heavy-ball or Nesterov, its buffer in
    float32 or bfloat16) runs a fused in-place kernel on CPU float32 parameters
    (:mod:`jopt.kernels`); plain SGD runs XLA's loop, already at the memory floor.

    References:
        Robbins & Monro, 1951; Sutskever et al., ICML 2013; optax ``sgd``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> loss = lambda w: jnp.sum((w - 3.0) ** 2)
        >>> tx = jopt.sgd(0.1, momentum=0.9)
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(3):
        ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
        ...     w = jopt.apply_updates(w, updates)
        ...     print(w)
        [0.6]
        [1.62]
        [2.8140001]
    """
    if nesterov:
        _check_nesterov(momentum, 0.0)
    values: dict[str, Any] = {"learning_rate": learning_rate}
    bounds = {"learning_rate": NONNEGATIVE}
    if momentum is not None:
        values["momentum"] = momentum
        bounds["momentum"] = NONNEGATIVE

    def build(learning_rate: Any, momentum: Any = None) -> GradientTransformation:
        lr = scale_by_learning_rate(learning_rate)
        if momentum is None:
            return lr  # XLA's loop for p - lr g runs at the memory-bandwidth floor
        inner = chain(trace(momentum, nesterov, accumulator_dtype), lr)
        if keeps(rules.MOMENTUM, accumulator_dtype):
            plan = momentum_plan(learning_rate, momentum, nesterov=nesterov)
            inner = with_kernel_step(inner, plan)
        return fuse(inner)

    return with_hyperparams(build, owner="sgd", bounds=bounds, **values)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """Adam: momentum over a per-coordinate RMS step size, both bias-corrected.

    Update rule (``t`` from 1)::

        m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        u_t = -lr_t * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    With ``nesterov=True`` this is NAdam (see :func:`jopt.scale_by_adam`). Stepped
    with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`), the moments in float32 or bfloat16 (NAdam's in
    float32).

    Args:
        learning_rate: a float or a schedule.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added outside the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: the params').
        nesterov: use Nesterov momentum (NAdam).
        nu_dtype: dtype of the second moment (jopt only; e.g. ``jnp.bfloat16``).

    Hyperparameters in the state: ``learning_rate``, ``b1``, ``b2``, ``eps``, ``eps_root``.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; optax ``adam``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> loss = lambda w: jnp.sum((w - 3.0) ** 2)
        >>> tx = jopt.adam(0.1)
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(3):
        ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
        ...     w = jopt.apply_updates(w, updates)
        ...     print(w)
        [0.09999934]
        [0.19989562]
        [0.29961646]
    """
    return _adam(
        "adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
    )


def _adam(
    owner: str,
    learning_rate: ScalarOrSchedule,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    mu_dtype: Any | None,
    *,
    nesterov: bool,
    nu_dtype: Any | None = None,
    amsgrad: bool = False,
) -> GradientTransformation:
    """Adam, NAdam (``nesterov``) or optax's AMSGrad (``amsgrad``), fused, with its
    hyperparameters in the state and a kernel step where the kernel keeps its state."""
    if amsgrad:
        plain = keeps(rules.AMSGRAD, mu_dtype, nu_dtype, nu_dtype)
    else:
        plain = keeps(rules.NADAM if nesterov else rules.ADAM, mu_dtype, nu_dtype)

    def build(learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any):
        if amsgrad:
            moments = scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, nu_dtype=nu_dtype)
        else:
            moments = scale_by_adam(
                b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
            )
        inner = chain(moments, scale_by_learning_rate(learning_rate))
        if plain:
            plan = adam_plan(
                b1,
                b2,
                eps,
                eps_root,
                learning_rate,
                None,
                nesterov=nesterov,
                amsgrad=amsgrad,
            )
            inner = with_kernel_step(inner, plan)
        return fuse(inner)

    return with_hyperparams(
        build,
        owner=owner,
        bounds=_ADAM_BOUNDS,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
    )


_ADAM_BOUNDS = {
    "learning_rate": NONNEGATIVE,
    "b1": UNIT_OPEN,
    "b2": UNIT_OPEN,
    "eps": NONNEGATIVE,
    "eps_root": NONNEGATIVE,
    "weight_decay": NONNEGATIVE,
}


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
) -> GradientTransformation:
    """AMSGrad: Adam whose bias-corrected second moment never decreases.

    Update rule (``t`` from 1)::

        m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        n_t = max(n_{t-1}, v_t / (1 - b2^t))                              (n_0 = 0)
        u_t = -lr_t * (m_t / (1 - b1^t)) / (sqrt(n_t + eps_root) + eps)

    optax's form: the maximum is taken after bias correction; torch's
    ``Adam(amsgrad=True)`` (:func:`jopt.torch.Adam`) takes it before. Stepped with
    :func:`jopt.step`, float32 parameters (and state) on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`).

    Args:
        learning_rate: a float or a schedule.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added outside the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment (default: the params').

    Hyperparameters in the state: ``learning_rate``, ``b1``, ``b2``, ``eps``, ``eps_root``.

    References:
        Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018;
        optax ``amsgrad``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> loss = lambda w: jnp.sum((w - 3.0) ** 2)
        >>> tx = jopt.amsgrad(0.1)
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(3):
        ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
        ...     w = jopt.apply_updates(w, updates)
        ...     print(w)
        [0.09999934]
        [0.1982443]
        [0.2946982]
    """
    return _adam(
        "amsgrad", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=False, amsgrad=True
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """AdamW: Adam with weight decay decoupled from the gradient statistics.

    Update rule, with ``d_t`` the Adam direction of :func:`adam`::

        u_t = -lr_t * (d_t + wd * p_{t-1})

    i.e. ``p_t = p_{t-1} - lr_t * d_t - lr_t * wd * p_{t-1}``: the decay is scaled by
    the learning rate, as in torch's ``AdamW``. Note the defaults differ: optax (and
    so this function) uses ``weight_decay=1e-4``, torch ``1e-2``
    (:func:`jopt.torch.AdamW` follows torch). Stepped with :func:`jopt.step`,
    float32 parameters on the CPU run a fused in-place kernel (:mod:`jopt.kernels`),
    the moments in float32 or bfloat16 (NAdamW's in float32), unless ``mask`` is set.

    Args:
        learning_rate: a float or a schedule.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added outside the square root.
        eps_root: added inside the square root.
        mu_dtype: dtype of the first moment.
        weight_decay: decay coefficient (float or schedule), >= 0.
        mask: tree of bools (or a function of the params returning one) choosing the
            leaves to decay.
        nesterov: use Nesterov momentum (NAdamW).
        nu_dtype: dtype of the second moment (jopt only).

    Hyperparameters in the state: those of :func:`adam` and ``weight_decay``.

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
        optax ``adamw``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.adamw(0.1, weight_decay=0.5)
        >>> w = jnp.ones(1)
        >>> tx.update(jnp.zeros(1), tx.init(w), w)[0]  # zero gradient: decay only
        Array([-0.05], dtype=float32)
    """
    return _adamw(
        "adamw",
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nesterov=nesterov,
        nu_dtype=nu_dtype,
    )


def _adamw(
    owner: str,
    learning_rate: ScalarOrSchedule,
    b1: float,
    b2: float,
    eps: float,
    eps_root: float,
    mu_dtype: Any | None,
    weight_decay: ScalarOrSchedule,
    mask: Mask | None,
    *,
    nesterov: bool,
    nu_dtype: Any | None,
) -> GradientTransformation:
    no_decay = _is_zero(weight_decay)

    def build(learning_rate: Any, b1: Any, b2: Any, eps: Any, eps_root: Any, weight_decay: Any):
        moments = scale_by_adam(
            b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
        )
        lr = scale_by_learning_rate(learning_rate)
        plain = keeps(rules.NADAMW if nesterov else rules.ADAMW, mu_dtype, nu_dtype)
        if no_decay:
            inner = chain(moments, lr)
            if plain:
                plan = adam_plan(b1, b2, eps, eps_root, learning_rate, None, nesterov=nesterov)
                inner = with_kernel_step(inner, plan)
            return fuse(inner)
        if mask is None:
            inner = chain(moments, add_decayed_weights(weight_decay), lr)
            if plain:
                plan = adam_plan(
                    b1, b2, eps, eps_root, learning_rate, weight_decay, nesterov=nesterov
                )
                inner = with_kernel_step(inner, plan)
            return fuse(inner)
        return chain(fuse(moments), add_decayed_weights(weight_decay, mask), lr)

    values = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    values, fixed = _weight_decay_values(values, weight_decay, no_decay)
    return with_hyperparams(build, owner=owner, bounds=_ADAM_BOUNDS, fixed=fixed, **values)


def _weight_decay_values(
    values: dict[str, Any], weight_decay: Any, no_decay: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A weight decay of exactly 0 is compiled out, so it becomes a fixed value."""
    if no_decay:
        return values, {"weight_decay": 0.0}
    return {**values, "weight_decay": weight_decay}, {}


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum, as optax's ``nadam`` (:func:`adam` with
    ``nesterov=True``).

    Update rule (``t`` from 1; ``m_t``, ``v_t`` as in :func:`adam`)::

        m^_t = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)
        u_t = -lr_t * m^_t / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

    Stepped with :func:`jopt.step`, float32 parameters with float32 or bfloat16 moments
    on the CPU run a fused in-place kernel (:mod:`jopt.kernels`).

    Args: those of :func:`adam`; ``nesterov=False`` gives plain Adam (the argument is
    there because optax's ``nadam`` has it).

    Hyperparameters in the state: those of :func:`adam`.

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016;
        optax ``nadam``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.nadam(0.1)
        >>> g = jnp.array([2.0])
        >>> tx.update(g, tx.init(jnp.zeros(1)))[0]  # the first step looks one step ahead
        Array([-0.14736743], dtype=float32)
        >>> adam = jopt.adam(0.1)
        >>> adam.update(g, adam.init(jnp.zeros(1)))[0]
        Array([-0.1], dtype=float32)
    """
    return _adam(
        "nadam",
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        nesterov=nesterov,
        nu_dtype=nu_dtype,
    )


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask | None = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any | None = None,
) -> GradientTransformation:
    """NAdamW: NAdam with decoupled weight decay, as optax's ``nadamw`` (:func:`adamw`
    with ``nesterov=True``).

    Update rule, with ``d_t`` the NAdam direction of :func:`nadam`::

        u_t = -lr_t * (d_t + wd * p_{t-1})

    Stepped with :func:`jopt.step`, float32 parameters with float32 or bfloat16 moments
    on the CPU run a fused in-place kernel (:mod:`jopt.kernels`), unless ``mask`` is set.

    Args: those of :func:`adamw`; ``nesterov=False`` gives plain AdamW (the argument is
    there because optax's ``nadamw`` has it).

    Hyperparameters in the state: those of :func:`adamw`.

    References:
        Dozat, ICLR workshop 2016; Loshchilov & Hutter, ICLR 2019; optax ``nadamw``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.nadamw(0.1, weight_decay=0.5)
        >>> w = jnp.ones(1)
        >>> tx.update(jnp.zeros(1), tx.init(w), w)[0]  # zero gradient: decay only
        Array([-0.05], dtype=float32)
    """
    return _adamw(
        "nadamw",
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nesterov=nesterov,
        nu_dtype=nu_dtype,
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop: divide the gradient by a running RMS of its recent magnitudes.

    Update rule (optax's placement: the learning rate goes *into* the momentum
    buffer, unlike :func:`jopt.torch.RMSprop`)::

        v_t = decay v_{t-1} + (1 - decay) g_t^2             (v_0 = initial_scale)
        s_t = -lr_t * g_t / sqrt(v_t + eps)                 (eps_in_sqrt; else sqrt(v_t) + eps)
        centered: v_t - m_t^2 replaces v_t, with m_t the EMA of g_t
        u_t = s_t, or with momentum: m'_t = momentum m'_{t-1} + s_t, u_t = m'_t

    Args:
        learning_rate: a float or a schedule.
        decay: EMA decay, in [0, 1].
        eps: the stabilizer.
        initial_scale: initial value of the squared-gradient EMA (fixed: used by init).
        eps_in_sqrt: put ``eps`` inside the square root.
        centered: normalize by the running variance instead of the raw second moment.
        momentum: momentum coefficient, or ``None``.
        nesterov: Nesterov momentum (needs ``momentum``).
        bias_correction: debias the EMAs.

    Stepped with :func:`jopt.step`, RMSprop without ``bias_correction``, centered or
    not (with ``momentum`` only with ``eps_in_sqrt``), runs a fused in-place kernel on
    CPU float32 parameters (:mod:`jopt.kernels`).

    Hyperparameters in the state: ``learning_rate``, ``decay``, ``eps``, ``momentum``
    (fixed: ``initial_scale``).

    References:
        Hinton, lecture 6e, 2012; Graves, 2013 (centered); optax ``rmsprop``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.rmsprop(0.1, decay=0.0, eps=0.0)
        >>> tx.update(jnp.array([4.0, -0.5]), tx.init(jnp.zeros(2)))[0]
        Array([-0.1,  0.1], dtype=float32)
    """
    if nesterov:
        _check_nesterov(momentum, 0.0)
    values: dict[str, Any] = dict(learning_rate=learning_rate, decay=decay, eps=eps)
    if momentum is not None:
        values["momentum"] = momentum

    def build(learning_rate: Any, decay: Any, eps: Any, initial_scale: float, momentum: Any = None):
        block = scale_by_stddev if centered else scale_by_rms
        steps = [
            block(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
            scale_by_learning_rate(learning_rate),
        ]
        if momentum is not None:
            steps.append(trace(momentum, nesterov))
        inner = chain(*steps)
        if not bias_correction and (momentum is None or eps_in_sqrt):
            plan = rmsprop_plan(
                learning_rate,
                decay,
                eps,
                eps_in_sqrt,
                momentum=momentum,
                nesterov=nesterov,
                centered=centered,
            )
            inner = with_kernel_step(inner, plan)
        return fuse(inner)

    return with_hyperparams(
        build,
        owner="rmsprop",
        bounds={
            "learning_rate": NONNEGATIVE,
            "decay": UNIT,
            "eps": NONNEGATIVE,
            "momentum": NONNEGATIVE,
            "initial_scale": NONNEGATIVE,
        },
        fixed={"initial_scale": initial_scale},
        **values,
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    """Adagrad: per-coordinate step sizes shrinking with the sum of squared gradients.

    Update rule (optax's: ``eps`` inside the root, a zero sum gives a zero step)::

        s_t = s_{t-1} + g_t^2                    (s_0 = initial_accumulator_value)
        u_t = -lr_t * g_t / sqrt(s_t + eps)

    torch's Adagrad differs (``s_0 = 0``, ``eps=1e-10`` outside the root,
    ``lr_decay``): use :func:`jopt.torch.Adagrad` for it.

    Args:
        learning_rate: a float or a schedule.
        initial_accumulator_value: starting value of the sum (fixed: used by init).
        eps: added inside the root.

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`).

    Hyperparameters in the state: ``learning_rate``, ``eps`` (fixed:
    ``initial_accumulator_value``).

    References:
        Duchi, Hazan & Singer, JMLR 2011; optax ``adagrad``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]
        Array([-1.], dtype=float32)
    """
    return with_hyperparams(
        lambda learning_rate, eps, initial_accumulator_value: fuse(
            with_kernel_step(
                chain(
                    scale_by_rss(initial_accumulator_value, eps),
                    scale_by_learning_rate(learning_rate),
                ),
                adagrad_plan(learning_rate, eps),
            )
        ),
        owner="adagrad",
        bounds={
            "learning_rate": NONNEGATIVE,
            "eps": NONNEGATIVE,
            "initial_accumulator_value": NONNEGATIVE,
        },
        fixed={"initial_accumulator_value": initial_accumulator_value},
        learning_rate=learning_rate,
        eps=eps,
    )


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    """Adadelta: step sizes from the ratio of running RMS of steps and of gradients.

    Update rule::

        g'_t = g_t + wd * p_{t-1}
        E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g'_t^2
        d_t = sqrt(E[x^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g'_t
        E[x^2]_t = rho E[x^2]_{t-1} + (1 - rho) d_t^2
        u_t = -lr_t * d_t

    Warning:
        optax 0.2.8's ``adadelta()`` with its default ``learning_rate=None`` applies
        ``+d_t``: it *ascends* the loss. Here ``None`` means 1.0, torch's default, and
        the step descends. Pass an explicit learning rate to get the same numbers as
        optax with that learning rate.

    Args:
        learning_rate: a float or a schedule; ``None`` means 1.0.
        rho: EMA decay, in [0, 1].
        eps: added inside both roots.
        weight_decay: coupled (L2) weight decay, >= 0.
        weight_decay_mask: tree of bools (or function) choosing the leaves to decay.

    Hyperparameters in the state: ``learning_rate``, ``rho``, ``eps``, ``weight_decay``.

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`); a ``weight_decay_mask`` decays the gradients first.

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012; optax ``adadelta``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.adadelta()
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]  # negative: descends
        Array([-0.00316...], dtype=float32)
    """
    if learning_rate is None:
        learning_rate = 1.0
    no_decay = _is_zero(weight_decay)

    def build(learning_rate: Any, rho: Any, eps: Any, weight_decay: Any) -> GradientTransformation:
        core = [scale_by_adadelta(rho, eps), scale_by_learning_rate(learning_rate)]
        if not no_decay and weight_decay_mask is None:  # the decay folds into the kernel
            plan = adadelta_plan(learning_rate, rho, eps, l2=weight_decay)
            return fuse(with_kernel_step(chain(add_decayed_weights(weight_decay), *core), plan))
        plain = fuse(with_kernel_step(chain(*core), adadelta_plan(learning_rate, rho, eps)))
        if no_decay:
            return plain
        return chain(add_decayed_weights(weight_decay, weight_decay_mask), plain)

    values: dict[str, Any] = dict(learning_rate=learning_rate, rho=rho, eps=eps)
    values, fixed = _weight_decay_values(values, weight_decay, no_decay)
    return with_hyperparams(
        build,
        owner="adadelta",
        bounds={
            "learning_rate": NONNEGATIVE,
            "rho": UNIT,
            "eps": NONNEGATIVE,
            "weight_decay": NONNEGATIVE,
        },
        fixed=fixed,
        **values,
    )
