"""Fused in-place optimizer kernels, used by :func:`jopt.step`.

An optimizer step followed by ``apply_updates`` is one elementwise pass over the
parameters, gradients and state. XLA compiles it into one loop, but on a CPU that loop
reaches about 60% of the memory bandwidth an in-place update can use (measured with
``python -m benchmarks.step``: Adam on 16M float32 parameters, 2-core EPYC). The
kernels here do the same arithmetic, in the same order and rounding, in a vectorised
C++ loop spread over XLA's thread pool, writing the parameters and the state in place
(the outputs alias the donated inputs).

:func:`jopt.step` uses them where they apply (today: :func:`jopt.adam` and
:func:`jopt.adamw` without ``mask``, ``nesterov``, ``mu_dtype``/``nu_dtype``, on
float32 buffers, on the CPU, optionally behind :func:`jopt.clip_by_global_norm`); on
other devices and dtypes the same step runs as XLA code. The kernels are compiled on
first use (see :mod:`jopt.kernels._build`); :func:`status` says whether they are in use.

Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> p, g = jnp.ones(3), jnp.full(3, 0.5)
    >>> m = v = jnp.zeros(3)
    >>> coefs = jopt.kernels.AdamCoefficients.of(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0,
    ...                                          count=jnp.int32(1), learning_rate=0.1)
    >>> new_p, new_m, new_v = jopt.kernels.adam_step(p, g, m, v, coefs)
    >>> new_p
    Array([0.9, 0.9, 0.9], dtype=float32)
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.kernels._build import load, status
from jopt.transforms.adaptive import _correction

__all__ = ["MIN_KERNEL_SIZE", "AdamCoefficients", "adam_step", "available", "status"]

MIN_KERNEL_SIZE = 1 << 18
"""Buffers with fewer elements run the XLA twin.

Below about a megabyte the update is not bound by memory bandwidth, and XLA fuses the
twin with its neighbours (the packing of small leaves into a buffer, the unpacking of
the new parameters), which a custom call cannot: jopt Adam on 1000 leaves of 1000
(16 packed buffers of 61K elements) took 12.0 ms per step with the kernel and 9.8 ms
as update + apply (``python -m benchmarks.step``'s layouts, 2-core CPU).
"""


def available() -> bool:
    """Whether the CPU kernels are built and registered (building them if needed).

    Example:
        >>> import jopt
        >>> isinstance(jopt.kernels.available(), bool)
        True
    """
    return load()


def _zero_after(grads: Any) -> jax.Array:
    """A float32 zero computed from every gradient (one element of each).

    The kernel overwrites the parameters in place. In a training step the backward
    pass also reads them (``delta @ W.T`` for the layer below), and XLA copies every
    parameter whose readers it cannot prove to run first. Adding this zero to a kernel
    coefficient (``AdamCoefficients.of(wait_for=grads)``) makes each kernel wait for
    all the gradients, hence for every such read, and the copies go (the benchmarks'
    16M MLP: 8 copies of 8-16 MiB per step without it, none with it). NaN and Inf
    become 0 first, so a bad gradient element cannot spread beyond its own update.
    """
    # One concatenation of one-element slices: a single kernel for XLA to compile (a
    # slice, a cast and an add per leaf compiled into hundreds of kernels, +17 s for
    # the 196-leaf GPT tree).
    firsts = [jnp.ravel(g)[:1].astype(jnp.float32) for g in jax.tree.leaves(grads)]
    firsts = [x for x in firsts if x.size]
    if not firsts:
        return jnp.zeros((), jnp.float32)
    total = jnp.sum(jnp.nan_to_num(jnp.concatenate(firsts), nan=0.0, posinf=0.0, neginf=0.0))
    return total * jnp.float32(0)  # not folded: XLA keeps x * 0 for floats (NaN rules)


class AdamCoefficients(NamedTuple):
    """The scalars of one Adam(W) step, in the dtype the update computes in.

    ``d1, c1``: ``b1`` and ``1 - b1`` (the latter rounded once from the exact value);
    ``bc1, bc2``: the bias corrections ``1 - b^t``; ``neg_lr``: ``-learning_rate``;
    ``grad_scale``: a factor applied to the gradient first (a global-norm clip).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> c = jopt.kernels.AdamCoefficients.of(
        ...     b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, count=jnp.int32(2), learning_rate=0.1)
        >>> round(float(c.bc1), 6), round(float(c.neg_lr), 6)  # 1 - 0.9**2, -lr
        (0.19, -0.1)
    """

    grad_scale: jax.Array
    d1: jax.Array
    c1: jax.Array
    d2: jax.Array
    c2: jax.Array
    bc1: jax.Array
    bc2: jax.Array
    eps_root: jax.Array
    eps: jax.Array
    weight_decay: jax.Array
    neg_lr: jax.Array

    @classmethod
    def of(
        cls,
        *,
        b1: Any,
        b2: Any,
        eps: Any,
        eps_root: Any,
        count: jax.Array,
        learning_rate: Any,
        weight_decay: Any = 0.0,
        grad_scale: Any = 1.0,
        dtype: Any = jnp.float32,
        wait_for: Any = None,
    ) -> AdamCoefficients:
        """The coefficients exactly as :func:`jopt.scale_by_adam`,
        :func:`jopt.add_decayed_weights` and :func:`jopt.scale_by_learning_rate` compute
        them at step ``count`` (counted from 1). Hyperparameters may be traced or
        :class:`jopt.tree.SplitScalar`. ``wait_for``, a tree of all the gradients of the
        step, makes every kernel that takes these coefficients run after them (see
        ``_zero_after``), so that XLA need not copy parameters it overwrites in place."""
        d1, c1 = jtree.decay_pair(b1, dtype)
        d2, c2 = jtree.decay_pair(b2, dtype)
        scale = jnp.asarray(grad_scale).astype(dtype)
        return cls(
            grad_scale=scale if wait_for is None else scale + _zero_after(wait_for).astype(dtype),
            d1=d1,
            c1=c1,
            d2=d2,
            c2=c2,
            bc1=_correction(b1, count, dtype),
            bc2=_correction(b2, count, dtype),
            eps_root=jtree.scalar(eps_root, dtype),
            eps=jtree.scalar(eps, dtype),
            weight_decay=jtree.scalar(weight_decay, dtype),
            neg_lr=jtree.scalar(-learning_rate, dtype),
        )


def _reference(
    p: jax.Array,
    g: jax.Array,
    m: jax.Array,
    v: jax.Array,
    c: AdamCoefficients,
    decoupled_decay: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The kernel's arithmetic as XLA code (other devices and dtypes, the tests' oracle).

    Computes in the promoted dtype (at least float32) and rounds each result once to
    its input's dtype.
    """
    dtypes = (p.dtype, m.dtype, v.dtype)
    ct = jtree.compute_dtype(jtree.promote(p.dtype, g.dtype, m.dtype, v.dtype))
    c = AdamCoefficients(*(jnp.asarray(x).astype(ct) for x in c))
    p, g, m, v = (x.astype(ct) for x in (p, g, m, v))
    g = g * c.grad_scale
    m = c.c1 * g + c.d1 * m
    v = c.c2 * (g * g) + c.d2 * v
    u = (m / c.bc1) / (jnp.sqrt(v / c.bc2 + c.eps_root) + c.eps)
    if decoupled_decay:
        u = u + c.weight_decay * p
    out = (p + u * c.neg_lr, m, v)
    return tuple(jtree.cast(x, d) for x, d in zip(out, dtypes, strict=True))  # type: ignore[return-value]


def _kernel(
    p: jax.Array,
    g: jax.Array,
    m: jax.Array,
    v: jax.Array,
    c: AdamCoefficients,
    decoupled_decay: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    target = "jopt_adamw_step_f32" if decoupled_decay else "jopt_adam_step_f32"
    out = jax.ShapeDtypeStruct(p.shape, p.dtype)
    call = jax.ffi.ffi_call(
        target,
        (out, out, out),
        input_output_aliases={0: 0, 2: 1, 3: 2},
        vmap_method="sequential",  # one kernel call per batch element
    )
    p, m, v = call(p, g, m, v, jnp.stack(c))
    return p, m, v


def adam_step(
    p: jax.Array,
    g: jax.Array,
    m: jax.Array,
    v: jax.Array,
    coefficients: AdamCoefficients,
    *,
    decoupled_decay: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Adam(W) step on one buffer, applied to the parameters: ``(p, m, v)`` new.

    Update rule (``c`` the coefficients)::

        g <- g * grad_scale
        m <- c1 g + d1 m,   v <- c2 g^2 + d2 v
        u <- (m / bc1) / (sqrt(v / bc2 + eps_root) + eps)  [+ weight_decay * p]
        p <- p + neg_lr * u

    which is :func:`jopt.adamw` (``decoupled_decay=True``) or :func:`jopt.adam`
    followed by :func:`jopt.apply_updates` (to an ulp: XLA chooses its own fused
    multiply-adds). Float32 buffers of equal shape with at least
    :data:`MIN_KERNEL_SIZE` elements on the CPU run the fused kernel (in place when the
    caller donates ``p``, ``m`` and ``v``); anything else runs the same arithmetic as
    XLA code. Derivatives (``jax.grad`` through a step, for meta-learning) and
    ``jax.vmap`` work: they use the XLA twin's rules.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.

    Example: AdamW's decay alone (a zero gradient) shrinks ``p`` by ``lr * wd``.

        >>> import jax.numpy as jnp
        >>> import jopt
        >>> c = jopt.kernels.AdamCoefficients.of(
        ...     b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, count=jnp.int32(1),
        ...     learning_rate=0.5, weight_decay=0.1)
        >>> z = jnp.zeros(2)
        >>> jopt.kernels.adam_step(jnp.ones(2), z, z, z, c, decoupled_decay=True)[0]
        Array([0.95, 0.95], dtype=float32)
    """
    same = p.shape == g.shape == m.shape == v.shape
    f32 = all(x.dtype == jnp.float32 for x in (p, g, m, v))
    if not (same and f32 and p.size >= MIN_KERNEL_SIZE) or not available():
        return _reference(p, g, m, v, coefficients, decoupled_decay)
    return _fused(p, g, m, v, coefficients, decoupled_decay)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _fused(
    p: jax.Array,
    g: jax.Array,
    m: jax.Array,
    v: jax.Array,
    c: AdamCoefficients,
    decoupled_decay: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jax.lax.platform_dependent(
        p,
        g,
        m,
        v,
        c,
        cpu=functools.partial(_kernel, decoupled_decay=decoupled_decay),
        default=functools.partial(_reference, decoupled_decay=decoupled_decay),
    )


@_fused.defjvp
def _fused_jvp(decoupled_decay: bool, primals: tuple, tangents: tuple) -> tuple[Any, Any]:
    # The kernel computes the values; the XLA twin, the same function, gives the
    # derivatives (its values are discarded).
    twin = functools.partial(_reference, decoupled_decay=decoupled_decay)
    _, tangents_out = jax.jvp(twin, primals, tangents)
    return _fused(*primals, decoupled_decay), tangents_out
