"""The torch door: ``jopt.torch.SGD(lr=...)`` and friends, with torch.optim 2.13's math.

Each takes torch's constructor arguments and defaults, minus the parameters (``init``
takes those), and returns a :class:`~jopt.GradientTransformation`. The numbers match
torch.optim step for step (tested against torch in float32 and float64). The
hyperparameters live in the state under torch's names (``lr``, ``betas``, ...):

    >>> import jax.numpy as jnp
    >>> import jopt
    >>> state = jopt.torch.Adam(lr=1e-3).init(jnp.zeros(2))
    >>> [name for name in jopt.hyperparams(state)]
    ['lr', 'betas', 'eps', 'weight_decay']

torch's implementation switches (``foreach``, ``fused``, ``capturable``,
``differentiable``) are accepted so that code ports unchanged; they select kernels in
torch and change no numbers, and jopt's update is always one fused, differentiable,
jit-compiled pass, so they are ignored.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt.base import GradientTransformation, ScalarOrSchedule
from jopt.combine import chain
from jopt.fused import fuse
from jopt.hyperparams import NONNEGATIVE, UNIT, UNIT_OPEN, with_hyperparams
from jopt.kernel_steps import (
    PlanFn,
    adadelta_plan,
    adagrad_plan,
    adam_plan,
    momentum_plan,
    rmsprop_plan,
    with_kernel_step,
)
from jopt.transforms.adaptive import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from jopt.transforms.momentum import _check_nesterov, trace
from jopt.transforms.scaling import maximize as maximize_block
from jopt.transforms.scaling import scale_by_learning_rate, scale_by_schedule
from jopt.transforms.weight_decay import add_decayed_weights

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "RMSprop"]


def _nonzero(value: Any) -> bool:
    return callable(value) or float(value) != 0.0


def _split(values: dict[str, Any], zero_is_fixed: tuple[str, ...]) -> dict[str, Any]:
    """Moves hyperparameters that are exactly 0 (and so compiled out) to ``fixed``."""
    fixed = {k: float(values.pop(k)) for k in zero_is_fixed if not _nonzero(values[k])}
    return {"fixed": fixed, **values}


def _recipe(
    maximize: bool,
    *steps: GradientTransformation | None,
    stateful: bool = True,
    plan: PlanFn | None = None,
) -> GradientTransformation:
    """Chains the present steps (maximize first); fuses them when they keep state.

    ``plan``: the chain is one of jopt's fused kernels (:mod:`jopt.kernel_steps`),
    which :func:`jopt.step` runs.
    """
    present = [s for s in steps if s is not None]
    if maximize:
        present.insert(0, maximize_block())
    tx = chain(*present)
    if plan is not None:
        tx = with_kernel_step(tx, plan)
    return fuse(tx) if stateful else tx


def SGD(
    lr: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch.optim.SGD: gradient descent with momentum, dampening and L2 weight decay.

    Update rule (torch's)::

        g_t <- -g_t if maximize;   g_t <- g_t + weight_decay * p_{t-1}
        b_1 = g_1;   b_t = momentum b_{t-1} + (1 - dampening) g_t       (if momentum)
        g_t <- g_t + momentum b_t  if nesterov  else  b_t
        p_t = p_{t-1} - lr_t g_t

    Stepped with :func:`jopt.step`, momentum (heavy-ball or Nesterov, with or without
    ``weight_decay`` and ``maximize``) on float32 parameters on the CPU runs a fused
    in-place kernel (:mod:`jopt.kernels`).

    Args:
        lr: learning rate (float or schedule, e.g. from :mod:`jopt.torch.lr_scheduler`).
        momentum: momentum factor, >= 0 (0 means no buffer).
        dampening: dampening of the momentum, in [0, 1]; the first step is undampened.
        weight_decay: L2 penalty added to the gradient, >= 0.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
        maximize: ascend instead of descend.
        foreach: ignored (torch kernel choice).
        differentiable: ignored (jopt is always differentiable).
        fused: ignored (jopt is always fused).

    Hyperparameters in the state: ``lr``, ``momentum``, ``dampening``, ``weight_decay``
    (a value of exactly 0 for momentum or weight decay is compiled out and fixed).

    References:
        ``torch.optim.SGD``; Sutskever et al., ICML 2013.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> loss = lambda w: jnp.sum((w - 3.0) ** 2)
        >>> tx = jopt.torch.SGD(lr=0.1, momentum=0.9, dampening=0.5)
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(3):
        ...     updates, state = tx.update(jax.grad(loss)(w), state, w)
        ...     w = jopt.apply_updates(w, updates)
        ...     print(w)
        [0.6]
        [1.38]
        [2.244]
    """
    del foreach, differentiable, fused
    if nesterov:
        _check_nesterov(momentum, dampening)
    has_momentum, has_decay = _nonzero(momentum), _nonzero(weight_decay)

    def build(lr: Any, momentum: Any, dampening: Any, weight_decay: Any) -> GradientTransformation:
        l2 = weight_decay if has_decay else None
        return _recipe(
            maximize,
            add_decayed_weights(weight_decay) if has_decay else None,
            trace(momentum, nesterov, dampening=dampening) if has_momentum else None,
            scale_by_learning_rate(lr),
            stateful=has_momentum,
            plan=momentum_plan(lr, momentum, dampening, nesterov, l2=l2, maximize=maximize)
            if has_momentum
            else None,
        )

    values = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    split = _split(values, ("momentum", "weight_decay"))
    if not has_momentum:
        split["fixed"]["dampening"] = float(split.pop("dampening"))
    return with_hyperparams(
        build,
        owner="torch.SGD",
        bounds={
            "lr": NONNEGATIVE,
            "momentum": NONNEGATIVE,
            "dampening": UNIT,
            "weight_decay": NONNEGATIVE,
        },
        **split,
    )


_ADAM_BOUNDS = {
    "lr": NONNEGATIVE,
    "betas": UNIT_OPEN,
    "eps": NONNEGATIVE,
    "weight_decay": NONNEGATIVE,
}


def _adam(
    owner: str,
    lr: ScalarOrSchedule,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> GradientTransformation:
    if len(tuple(betas)) != 2:
        raise ValueError(f"betas={betas!r} must be a pair (beta1, beta2)")
    has_decay = _nonzero(weight_decay)

    def build(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> GradientTransformation:
        if amsgrad:
            moments = scale_by_amsgrad(
                betas[0],
                betas[1],
                eps,
                max_before_bias_correction=True,
                precise_bias_correction=True,
            )
        else:
            moments = scale_by_adam(betas[0], betas[1], eps, precise_bias_correction=True)
        decay = add_decayed_weights(weight_decay) if has_decay else None
        # optax's Adam(W) rule (or torch's AMSGrad) with torch's bias correction
        plan = adam_plan(
            betas[0],
            betas[1],
            eps,
            0.0,
            lr,
            weight_decay if has_decay and decoupled else None,
            precise_bias_correction=True,
            l2=weight_decay if has_decay and not decoupled else None,
            maximize=maximize,
            amsgrad=amsgrad,
            max_before_bias_correction=True,
        )
        return _recipe(
            maximize,
            None if decoupled else decay,
            moments,
            decay if decoupled else None,
            scale_by_learning_rate(lr),
            plan=plan,
        )

    values = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    return with_hyperparams(
        build, owner=owner, bounds=_ADAM_BOUNDS, **_split(values, ("weight_decay",))
    )


def Adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """torch.optim.Adam, with torch's L2 weight decay and torch's AMSGrad.

    Update rule (torch's)::

        g_t <- -g_t if maximize;   g_t <- g_t + weight_decay * p_{t-1}   (unless decoupled)
        m_t = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
        amsgrad: v_t <- max(v_max, v_t)   (the raw moment, before bias correction)
        p_t = p_{t-1} - lr_t (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
        decoupled_weight_decay: p_{t-1} <- p_{t-1} (1 - lr_t weight_decay) first (AdamW)

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`), coupled or decoupled weight decay, ``maximize`` and
    ``amsgrad`` included (torch's ``fused=True``, whose argument is ignored here).

    Args:
        lr: learning rate (float or schedule).
        betas: ``(b1, b2)``, each in [0, 1).
        eps: added to the root of the second moment.
        weight_decay: L2 penalty (coupled), >= 0.
        amsgrad: keep the running maximum of the second moment.
        foreach: ignored.
        maximize: ascend instead of descend.
        capturable: ignored.
        differentiable: ignored.
        fused: ignored.
        decoupled_weight_decay: decay the weights as :func:`AdamW` does.

    Hyperparameters in the state: ``lr``, ``betas`` (a 2-vector), ``eps``, ``weight_decay``.

    References:
        Kingma & Ba, ICLR 2015; Reddi et al., ICLR 2018; ``torch.optim.Adam``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.Adam(lr=0.1)
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
        Array([-0.1,  0.1], dtype=float32)
    """
    del foreach, capturable, differentiable, fused
    return _adam(
        "torch.Adam", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay
    )


def AdamW(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2, optax's is 1e-4).

    Update rule (torch's)::

        p'_{t-1} = p_{t-1} (1 - lr_t weight_decay)
        p_t = p'_{t-1} - lr_t (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

    with ``m_t``, ``v_t`` (and AMSGrad) as in :func:`Adam`.

    Args:
        lr: learning rate (float or schedule).
        betas: ``(b1, b2)``, each in [0, 1).
        eps: added to the root of the second moment.
        weight_decay: decoupled decay coefficient, >= 0.
        amsgrad: keep the running maximum of the raw second moment.
        maximize: ascend instead of descend.
        foreach: ignored.
        capturable: ignored.
        differentiable: ignored.
        fused: ignored.

    Hyperparameters in the state: ``lr``, ``betas``, ``eps``, ``weight_decay``.

    References:
        Loshchilov & Hutter, ICLR 2019; ``torch.optim.AdamW``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.AdamW(lr=0.1, weight_decay=0.5)
        >>> w = jnp.ones(1)
        >>> tx.update(jnp.zeros(1), tx.init(w), w)[0]  # zero gradient: decay only
        Array([-0.05], dtype=float32)
    """
    del foreach, capturable, differentiable, fused
    return _adam("torch.AdamW", lr, betas, eps, weight_decay, amsgrad, maximize, True)


def RMSprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch.optim.RMSprop: eps outside the root, learning rate applied after momentum.

    Update rule (torch's)::

        g_t <- -g_t if maximize;   g_t <- g_t + weight_decay * p_{t-1}
        v_t = alpha v_{t-1} + (1 - alpha) g_t^2
        centered: a_t = alpha a_{t-1} + (1 - alpha) g_t;  d_t = sqrt(v_t - a_t^2) + eps
        otherwise: d_t = sqrt(v_t) + eps
        momentum: b_t = momentum b_{t-1} + g_t / d_t;  p_t = p_{t-1} - lr_t b_t
        otherwise: p_t = p_{t-1} - lr_t g_t / d_t

    Unlike optax's ``rmsprop`` (:func:`jopt.rmsprop`), the learning rate multiplies the
    momentum buffer instead of entering it, which matters once ``lr`` follows a schedule.

    Args:
        lr: learning rate (float or schedule).
        alpha: smoothing constant, in [0, 1].
        eps: added to the root, outside it.
        weight_decay: L2 penalty, >= 0.
        momentum: momentum factor, >= 0.
        centered: normalize by the estimated variance.
        capturable: ignored.
        foreach: ignored.
        maximize: ascend instead of descend.
        differentiable: ignored.

    Hyperparameters in the state: ``lr``, ``alpha``, ``eps``, ``weight_decay``, ``momentum``.

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`), ``centered``, ``weight_decay``, ``maximize`` and
    ``momentum`` included.

    References:
        Hinton, lecture 6e, 2012; Graves, 2013; ``torch.optim.RMSprop``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.RMSprop(lr=0.01, alpha=0.0, eps=0.0)
        >>> tx.update(jnp.array([4.0, -0.5]), tx.init(jnp.zeros(2)))[0]
        Array([-0.01,  0.01], dtype=float32)
    """
    del capturable, foreach, differentiable
    has_momentum, has_decay = _nonzero(momentum), _nonzero(weight_decay)

    def build(lr: Any, alpha: Any, eps: Any, weight_decay: Any, momentum: Any):
        block = scale_by_stddev if centered else scale_by_rms
        plan = rmsprop_plan(
            lr,
            alpha,
            eps,
            eps_in_sqrt=False,
            momentum=momentum if has_momentum else None,
            centered=centered,
            l2=weight_decay if has_decay else None,
            maximize=maximize,
        )
        return _recipe(
            maximize,
            add_decayed_weights(weight_decay) if has_decay else None,
            block(alpha, eps, 0.0, eps_in_sqrt=False),
            trace(momentum) if has_momentum else None,
            scale_by_learning_rate(lr),
            plan=plan,
        )

    values = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    return with_hyperparams(
        build,
        owner="torch.RMSprop",
        bounds={
            "lr": NONNEGATIVE,
            "alpha": UNIT,
            "eps": NONNEGATIVE,
            "weight_decay": NONNEGATIVE,
            "momentum": NONNEGATIVE,
        },
        **_split(values, ("weight_decay", "momentum")),
    )


def _inverse_time(lr_decay: Any) -> Any:
    """``count -> 1 / (1 + count * lr_decay)``: torch Adagrad's learning-rate decay."""

    def factor(count: Any) -> Any:
        decay = jnp.asarray(lr_decay)
        return 1 / (1 + count.astype(decay.dtype) * decay)

    return factor


def Adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch.optim.Adagrad: accumulator from 0, eps outside the root, ``lr_decay``.

    Update rule (torch's, ``t`` from 1)::

        g_t <- -g_t if maximize;   g_t <- g_t + weight_decay * p_{t-1}
        s_t = s_{t-1} + g_t^2                 (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr_t / (1 + (t - 1) lr_decay) * g_t / (sqrt(s_t) + eps)

    Args:
        lr: learning rate (float or schedule).
        lr_decay: inverse-time decay of the learning rate, >= 0.
        weight_decay: L2 penalty, >= 0.
        initial_accumulator_value: starting value of the sum (fixed: used by init).
        eps: added to the root, outside it.
        foreach: ignored.
        maximize: ascend instead of descend.
        differentiable: ignored.
        fused: ignored.

    Hyperparameters in the state: ``lr``, ``lr_decay``, ``weight_decay``, ``eps``
    (fixed: ``initial_accumulator_value``).

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`), ``lr_decay``, ``weight_decay`` and ``maximize``
    included.

    References:
        Duchi, Hazan & Singer, JMLR 2011; ``torch.optim.Adagrad``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.Adagrad(lr=1.0, eps=0.0)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]
        Array([-1.], dtype=float32)
    """
    del foreach, differentiable, fused
    has_lr_decay, has_decay = _nonzero(lr_decay), _nonzero(weight_decay)

    def build(
        lr: Any, lr_decay: Any, weight_decay: Any, eps: Any, initial_accumulator_value: float
    ):
        plan = adagrad_plan(
            lr,
            eps,
            eps_in_sqrt=False,
            lr_factor=_inverse_time(lr_decay) if has_lr_decay else None,
            l2=weight_decay if has_decay else None,
            maximize=maximize,
        )
        return _recipe(
            maximize,
            add_decayed_weights(weight_decay) if has_decay else None,
            scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
            scale_by_learning_rate(lr),
            scale_by_schedule(_inverse_time(lr_decay)) if has_lr_decay else None,
            plan=plan,
        )

    values = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    split = _split(values, ("lr_decay", "weight_decay"))
    split["fixed"]["initial_accumulator_value"] = float(initial_accumulator_value)
    return with_hyperparams(
        build,
        owner="torch.Adagrad",
        bounds={
            "lr": NONNEGATIVE,
            "lr_decay": NONNEGATIVE,
            "weight_decay": NONNEGATIVE,
            "eps": NONNEGATIVE,
            "initial_accumulator_value": NONNEGATIVE,
        },
        **split,
    )


def Adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch.optim.Adadelta.

    Update rule (torch's)::

        g_t <- -g_t if maximize;   g_t <- g_t + weight_decay * p_{t-1}
        v_t = rho v_{t-1} + (1 - rho) g_t^2
        d_t = sqrt(a_{t-1} + eps) / sqrt(v_t + eps) * g_t
        a_t = rho a_{t-1} + (1 - rho) d_t^2
        p_t = p_{t-1} - lr_t d_t

    Args:
        lr: learning rate (float or schedule); torch's default 1.0.
        rho: EMA decay, in [0, 1].
        eps: added inside both roots.
        weight_decay: L2 penalty, >= 0.
        foreach: ignored.
        capturable: ignored.
        maximize: ascend instead of descend.
        differentiable: ignored.

    Hyperparameters in the state: ``lr``, ``rho``, ``eps``, ``weight_decay``.

    Stepped with :func:`jopt.step`, float32 parameters on the CPU run a fused in-place
    kernel (:mod:`jopt.kernels`), ``weight_decay`` and ``maximize`` included.

    References:
        Zeiler, 2012; ``torch.optim.Adadelta``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.Adadelta()
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]
        Array([-0.00316...], dtype=float32)
    """
    del foreach, capturable, differentiable
    has_decay = _nonzero(weight_decay)

    def build(lr: Any, rho: Any, eps: Any, weight_decay: Any) -> GradientTransformation:
        l2 = weight_decay if has_decay else None
        return _recipe(
            maximize,
            add_decayed_weights(weight_decay) if has_decay else None,
            scale_by_adadelta(rho, eps),
            scale_by_learning_rate(lr),
            plan=adadelta_plan(lr, rho, eps, l2=l2, maximize=maximize),
        )

    values = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    return with_hyperparams(
        build,
        owner="torch.Adadelta",
        bounds={"lr": NONNEGATIVE, "rho": UNIT, "eps": NONNEGATIVE, "weight_decay": NONNEGATIVE},
        **_split(values, ("weight_decay",)),
    )
