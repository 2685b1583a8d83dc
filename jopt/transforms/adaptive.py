"""Adaptive moment estimates: Adam, AMSGrad, RMSprop (plain and centered), Adagrad, Adadelta.

Each block is one elementwise kernel per leaf: it reads the gradient and its moments,
computes in at least float32, and writes the direction and the new moments, so XLA
(and :func:`jopt.fuse`) see a single pass over memory. The switches where optax and
torch differ (where ``eps`` sits, what AMSGrad takes the maximum of) are keyword
arguments documented with both formulas.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import GradientTransformation, Params, Updates
from jopt.hyperparams import NONNEGATIVE, UNIT, UNIT_OPEN, check_hyperparam

__all__ = [
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByStddevState",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
]


def _ct(*arrays: jax.Array) -> Any:
    return jtree.compute_dtype(jtree.promote(*(a.dtype for a in arrays)))


def _abs_sq(g: jax.Array) -> jax.Array:
    return jnp.real(g * jnp.conj(g)) if jnp.iscomplexobj(g) else g * g


def _correction(decay: Any, count: jax.Array, dtype: Any, precise: bool = False) -> jax.Array:
    """The bias correction ``1 - decay ** count``, in the hyperparameter's precision.

    ``precise=False`` computes it directly, as optax does: in float32, ``1 - 0.999``
    from the rounded ``0.99900001`` cancels and is 1.3e-5 off in relative terms at
    ``t = 1``. ``precise=True`` computes ``-expm1(t * log1p(-(1 - decay)))`` from the
    exactly rounded ``1 - decay`` (:func:`jopt.tree.decay_pair`), which is what torch's
    double-precision host arithmetic gives, to a few float32 ulps.
    """
    hyper_dtype = jnp.asarray(decay).dtype
    if not jnp.issubdtype(hyper_dtype, jnp.floating):
        hyper_dtype = jnp.dtype(jnp.float32)
    t = count.astype(hyper_dtype)
    if precise:
        _, complement = jtree.decay_pair(decay, hyper_dtype)
        return (-jnp.expm1(t * jnp.log1p(-complement))).astype(dtype)
    return (1 - jnp.asarray(decay).astype(hyper_dtype) ** t).astype(dtype)


def _check_moments(names: tuple[str, ...], state: NamedTuple, updates: Updates) -> None:
    for name in names:
        jtree.check_structure(getattr(state, name), updates, names=(f"state.{name}", "updates"))


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`: step count, first and second moments."""

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    mu: Updates
    nu: Updates


def _check_adam(b1: Any, b2: Any, eps: Any, eps_root: Any) -> None:
    check_hyperparam("b1", b1, UNIT_OPEN)
    check_hyperparam("b2", b2, UNIT_OPEN)
    check_hyperparam("eps", eps, NONNEGATIVE)
    check_hyperparam("eps_root", eps_root, NONNEGATIVE)


def scale_by_adam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any | None = None,
    precise_bias_correction: bool = False,
) -> GradientTransformation:
    """The Adam direction: bias-corrected first moment over the root of the second.

    Update rule (``t`` counts from 1)::

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = m_t / (1 - b1^t)                  v^_t = v_t / (1 - b2^t)
        u_t = m^_t / (sqrt(v^_t + eps_root) + eps)

    With ``nesterov`` (NAdam), ``m^_t = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)``.
    torch's Adam computes the same quantity as ``(lr / (1 - b1^t)) m_t /
    (sqrt(v_t) / sqrt(1 - b2^t) + eps)``.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added to the second moment inside the root (for meta-gradients).
        mu_dtype: dtype of the first moment (default: the params').
        nesterov: use Nesterov momentum (NAdam, Dozat 2016).
        nu_dtype: dtype of the second moment (default: the params'), e.g. bfloat16 to
            halve the state; arithmetic still runs in float32.
        precise_bias_correction: compute ``1 - b^t`` to full precision as torch does
            (its host arithmetic is double), instead of directly in the storage precision
            as optax does; the two differ by up to 1.3e-5 relative in float32 (see
            ``_correction``), and agree in float64.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_adam()
        >>> tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    _check_adam(b1, b2, eps, eps_root)

    def init(params: Params) -> ScaleByAdamState:
        return ScaleByAdamState(
            jnp.zeros((), jnp.int32),
            jtree.zeros_like(params, mu_dtype),
            jtree.zeros_like(params, nu_dtype),
        )

    def update(
        updates: Updates, state: ScaleByAdamState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAdamState]:
        del params, extra
        _check_moments(("mu", "nu"), state, updates)
        count = jtree.safe_increment(state.count)

        def leaf(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple[jax.Array, ...]:
            ct = _ct(g, m, v)
            d1, c1 = jtree.decay_pair(b1, ct)
            d2, c2 = jtree.decay_pair(b2, ct)
            gc = g.astype(ct)
            m_new = c1 * gc + d1 * m.astype(ct)
            v_new = c2 * _abs_sq(gc) + d2 * v.astype(ct)
            precise = precise_bias_correction
            bc1 = _correction(b1, count, ct, precise)
            if nesterov:
                bc1_next = _correction(b1, jtree.safe_increment(count), ct, precise)
                m_hat = d1 * m_new / bc1_next + c1 * gc / bc1
            else:
                m_hat = m_new / bc1
            v_hat = v_new / _correction(b2, count, ct, precise)
            u = m_hat / (jnp.sqrt(v_hat + jtree.scalar(eps_root, ct)) + jtree.scalar(eps, ct))
            return jtree.cast(u, g.dtype), jtree.cast(m_new, m.dtype), jtree.cast(v_new, v.dtype)

        out, mu, nu = jtree.map_many(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`: count, moments and the running maximum."""

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    mu: Updates
    nu: Updates
    nu_max: Updates


def scale_by_amsgrad(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any | None = None,
    *,
    max_before_bias_correction: bool = False,
    nu_dtype: Any | None = None,
    precise_bias_correction: bool = False,
) -> GradientTransformation:
    """AMSGrad: Adam whose denominator never shrinks.

    Update rule, with ``m^_t``, ``v_t`` as in :func:`scale_by_adam`::

        optax (default):  n_t = max(n_{t-1}, v_t / (1 - b2^t))
                          u_t = m^_t / (sqrt(n_t + eps_root) + eps)
        torch:            n_t = max(n_{t-1}, v_t)
                          u_t = m^_t / (sqrt(n_t / (1 - b2^t) + eps_root) + eps)

    The two differ: torch takes the maximum of the raw second moment, before bias
    correction (``max_before_bias_correction=True``), optax of the corrected one.

    Args:
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the root of the denominator.
        eps_root: added inside the root.
        mu_dtype: dtype of the first moment.
        max_before_bias_correction: torch's form (see above).
        nu_dtype: dtype of the second moment and its maximum.
        precise_bias_correction: torch's full-precision ``1 - b^t`` (see
            :func:`scale_by_adam`).

    References:
        Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_amsgrad()
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)
        >>> u, state = tx.update(jnp.array([0.0]), state)
        >>> u  # the denominator remembers the large first gradient
        Array([0.4737...], dtype=float32)
    """
    _check_adam(b1, b2, eps, eps_root)

    def init(params: Params) -> ScaleByAmsgradState:
        return ScaleByAmsgradState(
            jnp.zeros((), jnp.int32),
            jtree.zeros_like(params, mu_dtype),
            jtree.zeros_like(params, nu_dtype),
            jtree.zeros_like(params, nu_dtype),
        )

    def update(
        updates: Updates, state: ScaleByAmsgradState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAmsgradState]:
        del params, extra
        _check_moments(("mu", "nu", "nu_max"), state, updates)
        count = jtree.safe_increment(state.count)

        def leaf(g: jax.Array, m: jax.Array, v: jax.Array, n: jax.Array) -> tuple[jax.Array, ...]:
            ct = _ct(g, m, v, n)
            d1, c1 = jtree.decay_pair(b1, ct)
            d2, c2 = jtree.decay_pair(b2, ct)
            gc = g.astype(ct)
            m_new = c1 * gc + d1 * m.astype(ct)
            v_new = c2 * _abs_sq(gc) + d2 * v.astype(ct)
            m_hat = m_new / _correction(b1, count, ct, precise_bias_correction)
            bc2 = _correction(b2, count, ct, precise_bias_correction)
            if max_before_bias_correction:
                n_new = jnp.maximum(n.astype(ct), v_new)
                denom_sq = n_new / bc2
            else:
                n_new = jnp.maximum(n.astype(ct), v_new / bc2)
                denom_sq = n_new
            u = m_hat / (jnp.sqrt(denom_sq + jtree.scalar(eps_root, ct)) + jtree.scalar(eps, ct))
            return (
                jtree.cast(u, g.dtype),
                jtree.cast(m_new, m.dtype),
                jtree.cast(v_new, v.dtype),
                jtree.cast(n_new, n.dtype),
            )

        out, mu, nu, nu_max = jtree.map_many(leaf, 4, updates, state.mu, state.nu, state.nu_max)
        return out, ScaleByAmsgradState(count, mu, nu, nu_max)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: step count and the EMA of squared gradients."""

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    nu: Updates


def _normalize(g: jax.Array, second: jax.Array, eps: Any, eps_in_sqrt: bool) -> jax.Array:
    """``g / sqrt(second + eps)`` (as optax, via rsqrt) or ``g / (sqrt(second) + eps)`` (torch)."""
    eps = jtree.scalar(eps, second.dtype)
    if eps_in_sqrt:
        return jax.lax.rsqrt(second + eps) * g
    return g / (jnp.sqrt(second) + eps)


def scale_by_rms(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop's direction: the gradient over the root of an EMA of its square.

    Update rule::

        v_t = decay v_{t-1} + (1 - decay) g_t^2          (v_0 = initial_scale)
        u_t = g_t / sqrt(v^_t + eps)     (eps_in_sqrt, optax's default)
        u_t = g_t / (sqrt(v^_t) + eps)   (torch's RMSprop)

    where ``v^_t = v_t / (1 - decay^t)`` with ``bias_correction``, else ``v_t``.

    Args:
        decay: EMA decay (torch's ``alpha``), in [0, 1].
        eps: the stabilizer; where it sits is ``eps_in_sqrt``.
        initial_scale: initial value of the EMA.
        eps_in_sqrt: put ``eps`` inside the square root.
        bias_correction: divide the EMA by ``1 - decay^t``.

    References:
        Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture 6e,
        2012; ``torch.optim.RMSprop``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_rms(decay=0.75, eps=0.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
        Array([2.], dtype=float32)
    """
    check_hyperparam("decay", decay, UNIT)
    check_hyperparam("eps", eps, NONNEGATIVE)
    check_hyperparam("initial_scale", initial_scale, NONNEGATIVE)

    def init(params: Params) -> ScaleByRmsState:
        return ScaleByRmsState(jnp.zeros((), jnp.int32), jtree.full_like(params, initial_scale))

    def update(
        updates: Updates, state: ScaleByRmsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRmsState]:
        del params, extra
        _check_moments(("nu",), state, updates)
        count = jtree.safe_increment(state.count)

        def leaf(g: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
            ct = _ct(g, v)
            d, c = jtree.decay_pair(decay, ct)
            gc = g.astype(ct)
            v_new = c * _abs_sq(gc) + d * v.astype(ct)
            v_hat = v_new / _correction(decay, count, ct) if bias_correction else v_new
            u = _normalize(gc, v_hat, eps, eps_in_sqrt)
            return jtree.cast(u, g.dtype), jtree.cast(v_new, v.dtype)

        out, nu = jtree.map_many(leaf, 2, updates, state.nu)
        return out, ScaleByRmsState(count, nu)

    return GradientTransformation(init, update)


class ScaleByStddevState(NamedTuple):
    """State of :func:`scale_by_stddev`: count, EMAs of the gradient and its square."""

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    mu: Updates
    nu: Updates


def scale_by_stddev(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    """Centered RMSprop's direction: the gradient over its running standard deviation.

    Update rule::

        m_t = decay m_{t-1} + (1 - decay) g_t     v_t = decay v_{t-1} + (1 - decay) g_t^2
        u_t = g_t / sqrt(v^_t - m^_t^2 + eps)     (eps_in_sqrt)
        u_t = g_t / (sqrt(v^_t - m^_t^2) + eps)   (torch's centered RMSprop)

    Args:
        decay: EMA decay (torch's ``alpha``), in [0, 1].
        eps: the stabilizer; where it sits is ``eps_in_sqrt``.
        initial_scale: initial value of the second-moment EMA.
        eps_in_sqrt: put ``eps`` inside the square root.
        bias_correction: divide both EMAs by ``1 - decay^t``.

    References:
        Graves, "Generating Sequences With Recurrent Neural Networks", 2013, eq. 38-45.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_stddev(decay=0.5, eps=0.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
        Array([2.], dtype=float32)
    """
    check_hyperparam("decay", decay, UNIT)
    check_hyperparam("eps", eps, NONNEGATIVE)
    check_hyperparam("initial_scale", initial_scale, NONNEGATIVE)

    def init(params: Params) -> ScaleByStddevState:
        return ScaleByStddevState(
            jnp.zeros((), jnp.int32),
            jtree.zeros_like(params),
            jtree.full_like(params, initial_scale),
        )

    def update(
        updates: Updates, state: ScaleByStddevState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByStddevState]:
        del params, extra
        _check_moments(("mu", "nu"), state, updates)
        count = jtree.safe_increment(state.count)

        def leaf(g: jax.Array, m: jax.Array, v: jax.Array) -> tuple[jax.Array, ...]:
            ct = _ct(g, m, v)
            d, c = jtree.decay_pair(decay, ct)
            gc = g.astype(ct)
            m_new = c * gc + d * m.astype(ct)
            v_new = c * _abs_sq(gc) + d * v.astype(ct)
            if bias_correction:
                bc = _correction(decay, count, ct)
                m_hat, v_hat = m_new / bc, v_new / bc
            else:
                m_hat, v_hat = m_new, v_new
            u = _normalize(gc, v_hat - _abs_sq(m_hat), eps, eps_in_sqrt)
            return jtree.cast(u, g.dtype), jtree.cast(m_new, m.dtype), jtree.cast(v_new, v.dtype)

        out, mu, nu = jtree.map_many(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByStddevState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the running sum of squared gradients."""

    sum_of_squares: Updates


def scale_by_rss(
    initial_accumulator_value: float = 0.1,
    eps: float | jax.Array = 1e-7,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    """Adagrad's direction: the gradient over the root of the sum of its squares.

    Update rule::

        s_t = s_{t-1} + g_t^2                            (s_0 = initial_accumulator_value)
        u_t = g_t / sqrt(s_t + eps), or 0 where s_t = 0  (eps_in_sqrt, optax)
        u_t = g_t / (sqrt(s_t) + eps)                    (torch's Adagrad)

    Args:
        initial_accumulator_value: starting value of the sum (optax 0.1, torch 0).
        eps: the stabilizer (optax 1e-7 inside the root, torch 1e-10 outside).
        eps_in_sqrt: put ``eps`` inside the root (and map a zero sum to a zero update).

    References:
        Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 2011.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
        >>> tx.update(jnp.array([3.0, -4.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)
    """
    check_hyperparam("initial_accumulator_value", initial_accumulator_value, NONNEGATIVE)
    check_hyperparam("eps", eps, NONNEGATIVE)

    def init(params: Params) -> ScaleByRssState:
        return ScaleByRssState(jtree.full_like(params, initial_accumulator_value))

    def update(
        updates: Updates, state: ScaleByRssState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByRssState]:
        del params, extra
        _check_moments(("sum_of_squares",), state, updates)

        def leaf(g: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
            ct = _ct(g, s)
            gc = g.astype(ct)
            s_new = _abs_sq(gc) + s.astype(ct)
            if eps_in_sqrt:
                scale = jnp.where(
                    s_new > 0, jax.lax.rsqrt(s_new + jtree.scalar(eps, ct)), jnp.zeros((), ct)
                )
                u = scale * gc
            else:
                u = gc / (jnp.sqrt(s_new) + jtree.scalar(eps, ct))
            return jtree.cast(u, g.dtype), jtree.cast(s_new, s.dtype)

        out, sums = jtree.map_many(leaf, 2, updates, state.sum_of_squares)
        return out, ScaleByRssState(sums)

    return GradientTransformation(init, update)


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: EMAs of squared gradients and squared steps."""

    e_g: Updates
    e_x: Updates


def scale_by_adadelta(
    rho: float | jax.Array = 0.9, eps: float | jax.Array = 1e-6
) -> GradientTransformation:
    """Adadelta's direction: a unit-corrected ratio of two running RMS values.

    Update rule::

        E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g_t^2
        u_t = sqrt(E[x^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[x^2]_t = rho E[x^2]_{t-1} + (1 - rho) u_t^2

    Args:
        rho: EMA decay, in [0, 1].
        eps: added inside both roots.

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.scale_by_adadelta(rho=0.0, eps=1.0)
        >>> tx.update(jnp.array([0.0]), tx.init(jnp.zeros(1)))[0]
        Array([0.], dtype=float32)
    """
    check_hyperparam("rho", rho, UNIT)
    check_hyperparam("eps", eps, NONNEGATIVE)

    def init(params: Params) -> ScaleByAdaDeltaState:
        return ScaleByAdaDeltaState(jtree.zeros_like(params), jtree.zeros_like(params))

    def update(
        updates: Updates, state: ScaleByAdaDeltaState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ScaleByAdaDeltaState]:
        del params, extra
        _check_moments(("e_g", "e_x"), state, updates)

        def leaf(g: jax.Array, eg: jax.Array, ex: jax.Array) -> tuple[jax.Array, ...]:
            ct = _ct(g, eg, ex)
            d, c = jtree.decay_pair(rho, ct)
            e = jtree.scalar(eps, ct)
            gc = g.astype(ct)
            eg_new = c * _abs_sq(gc) + d * eg.astype(ct)
            u = jnp.sqrt(ex.astype(ct) + e) / jnp.sqrt(eg_new + e) * gc
            ex_new = c * _abs_sq(u) + d * ex.astype(ct)
            return (
                jtree.cast(u, g.dtype),
                jtree.cast(eg_new, eg.dtype),
                jtree.cast(ex_new, ex.dtype),
            )

        out, e_g, e_x = jtree.map_many(leaf, 3, updates, state.e_g, state.e_x)
        return out, ScaleByAdaDeltaState(e_g, e_x)

    return GradientTransformation(init, update)
