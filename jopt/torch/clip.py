"""The torch door to gradient clipping: ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``.

torch clips the ``.grad`` of the parameters in place between ``backward()`` and
``optimizer.step()``; jopt puts the same arithmetic first in a chain. In torch::

    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

and in jopt::

    tx = jopt.chain(jopt.torch.clip_grad_norm(1.0), jopt.torch.AdamW(lr=1e-3))
    updates, state = tx.update(grads, state, params)
    norm = state[0].total_norm

The total norm that torch returns is kept in the state (:class:`ClipGradNormState`).
The numbers match torch 2.13 (tested against it in float32 and float64).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from jopt import tree as jtree
from jopt.base import GradientTransformation, Params, Updates
from jopt.clipping import _check_threshold, clip
from jopt.transforms.scaling import _scale_tree

__all__ = ["ClipGradNormState", "clip_grad_norm", "clip_grad_value"]

_EPS = 1e-6  # torch's: coef = max_norm / (total_norm + 1e-6)


class ClipGradNormState(NamedTuple):
    """State of :func:`clip_grad_norm`.

    Attributes:
        total_norm: the total norm of the last gradients it clipped, before clipping:
            what ``torch.nn.utils.clip_grad_norm_`` returns (0 before the first update).
            float32, or float64 when a parameter is float64.
    """

    total_norm: jax.Array


def _norm_order(norm_type: Any) -> float:
    """torch's ``float(norm_type)``, limited to the p-norms: ``1 <= p <= inf``."""
    try:
        order = float(norm_type)
    except (TypeError, ValueError):
        order = float("nan")
    if not order >= 1:  # also refuses NaN
        raise ValueError(
            f"norm_type={norm_type!r} must be >= 1 (a p-norm), or 'inf' for the largest "
            f"absolute value"
        )
    return order


def _norm_dtype(tree: Any) -> Any:
    """The dtype of the total norm of ``tree``: that of :func:`jopt.global_norm`."""
    return jax.eval_shape(jtree.global_norm, tree).dtype


def total_norm(tree: Any, norm_type: float = 2.0) -> jax.Array:
    """The p-norm of all leaves together, as torch's ``get_total_norm`` computes it.

    ``||(||g_1||_p, ..., ||g_n||_p)||_p``, the norm of the per-leaf norms, equals the
    p-norm of all elements together, which is what this sums: ``(sum_i sum |g_i|^p)^(1/p)``
    (``max_i max |g_i|`` for ``p = inf``), one reduction per leaf, in at least float32,
    so it is the same over :func:`jopt.fuse`'s packed buffers as over the leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.torch.clip import total_norm
        >>> tree = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([12.0])}
        >>> total_norm(tree, 2.0), total_norm(tree, 1.0), total_norm(tree, "inf")
        (Array(13., dtype=float32), Array(19., dtype=float32), Array(12., dtype=float32))
    """
    order = _norm_order(norm_type)
    if order == 2:
        return jtree.global_norm(tree)
    dtype = _norm_dtype(tree)
    partials = []
    for x in jax.tree.leaves(tree):
        a = jnp.abs(x.astype(jtree.compute_dtype(x.dtype)))  # real for complex leaves
        if order == float("inf"):
            partials.append(jnp.max(a, initial=0.0).astype(dtype))
        elif order == 1:
            partials.append(jnp.sum(a).astype(dtype))
        else:
            partials.append(jnp.sum(a**order).astype(dtype))
    if not partials:
        return jnp.zeros((), dtype)
    if order == float("inf"):
        return jnp.max(jnp.stack(partials))
    total = sum(partials[1:], partials[0])
    return total if order == 1 else total ** (1 / order)


def _check_finite(norm: jax.Array, order: float) -> None:
    """torch's ``error_if_nonfinite``, raised through :mod:`jax.experimental.checkify`."""
    checkify.check(
        jnp.isfinite(norm),
        f"The total norm of order {order} for gradients is non-finite ({{norm}}), so it "
        f"cannot be clipped. To scale the gradients by the non-finite norm anyway, set "
        f"error_if_nonfinite=False",
        norm=norm,
    )


def clip_grad_norm(
    max_norm: float | jax.Array,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> GradientTransformation:
    """torch's ``clip_grad_norm_``: rescale the gradients to total p-norm ``max_norm``.

    Update rule, torch's, with ``N`` the p-norm of all gradients together
    (:func:`total_norm`)::

        c = min(max_norm / (N + 1e-6), 1)
        g <- c * g                           (always: c = 1 changes nothing)

    Unlike :func:`jopt.clip_by_global_norm` (optax's), a gradient whose norm is
    exactly ``max_norm`` is scaled by ``max_norm / (max_norm + 1e-6)``, and any p-norm
    may be used. As in torch, an Inf norm gives ``c = 0`` (finite entries become 0, Inf
    entries NaN) and a NaN norm makes every entry NaN. ``N`` is stored in the state,
    where torch returns it: ``state.total_norm``, or ``state[i].total_norm`` for the
    ``i``-th member of a chain.

    ``error_if_nonfinite=True``: torch raises ``RuntimeError`` when ``N`` is NaN or
    Inf. A jitted jax function cannot raise from a value, so jopt raises through
    :mod:`jax.experimental.checkify`, with torch's message but checkify's exception
    type, ``checkify.JaxRuntimeError`` (a ``ValueError``, not a ``RuntimeError``).
    Called eagerly (no ``jit``), the update raises at once, as torch does. A jitted
    step must be wrapped: ``err, out = jax.jit(checkify.checkify(step))(...)``, then
    ``err.throw()`` raises on the host (one device-to-host sync, as torch's check
    costs). A jitted step that is not wrapped fails to compile, with jax's
    ``ValueError: Cannot abstractly evaluate a checkify.check which was not
    functionalized``. To skip bad steps instead of stopping, keep the flag off and test
    ``jnp.isfinite(state.total_norm)``.

    Args:
        max_norm: the largest allowed total norm, >= 0 (may be traced). torch accepts
            a negative one and flips the gradients; jopt refuses it.
        norm_type: the ``p`` of the p-norm, ``1 <= p``, or ``float("inf")`` / ``"inf"``
            for the largest absolute value. torch also takes ``p < 1``, which is not a
            norm; jopt refuses it.
        error_if_nonfinite: raise on a NaN or Inf total norm, through checkify (see
            above).
        foreach: ignored (torch kernel choice; jopt's update is one fused pass).

    Returns:
        A transformation with a :class:`ClipGradNormState`.

    References:
        ``torch.nn.utils.clip_grad_norm_``; Pascanu et al., "On the difficulty of
        training recurrent neural networks", ICML 2013.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.clip_grad_norm(max_norm=1.0)
        >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
        >>> clipped, state = tx.update(grads, tx.init(grads))
        >>> clipped
        {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}
        >>> state.total_norm
        Array(5., dtype=float32)

        With ``error_if_nonfinite=True``, a jitted step is wrapped in checkify:

        >>> import jax
        >>> from jax.experimental import checkify
        >>> tx = jopt.torch.clip_grad_norm(1.0, error_if_nonfinite=True)
        >>> step = jax.jit(checkify.checkify(tx.update))
        >>> err, _ = step({"a": jnp.array([1.0, jnp.inf])}, tx.init(None))
        >>> print(err.get())
        The total norm of order 2.0 for gradients is non-finite (inf), so it cannot be ...
    """
    del foreach
    _check_threshold("max_norm", max_norm)
    order = _norm_order(norm_type)

    def init(params: Params) -> ClipGradNormState:
        return ClipGradNormState(jnp.zeros((), _norm_dtype(params)))

    def update(
        updates: Updates, state: ClipGradNormState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, ClipGradNormState]:
        del params, extra
        norm = total_norm(updates, order)
        if error_if_nonfinite:
            _check_finite(norm, order)
        dtype = norm.dtype
        # torch evaluates ``max_norm / t`` as ``t.reciprocal() * max_norm``
        coef = (1 / (norm + jnp.asarray(_EPS, dtype))) * jtree.scalar(max_norm, dtype)
        coef = jnp.minimum(coef, jnp.ones((), dtype))
        stored = norm.astype(state.total_norm.dtype)
        return _scale_tree(updates, coef), ClipGradNormState(stored)

    return GradientTransformation(init, update)


def clip_grad_value(
    clip_value: float | jax.Array, foreach: bool | None = None
) -> GradientTransformation:
    """torch's ``clip_grad_value_``: clamp every gradient element to ``[-clip_value, clip_value]``.

    Update rule: ``g <- min(max(g, -clip_value), clip_value)``, elementwise (NaN stays
    NaN). The same transformation as :func:`jopt.clip`.

    Args:
        clip_value: the largest allowed absolute value, >= 0 (may be traced). torch
            accepts a negative one (and then sets every gradient to it); jopt refuses it.
        foreach: ignored (torch kernel choice).

    Returns:
        A stateless transformation.

    References:
        ``torch.nn.utils.clip_grad_value_``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.torch.clip_grad_value(0.5)
        >>> tx.update(jnp.array([0.1, -2.0, 3.0]), tx.init(None))[0]
        Array([ 0.1, -0.5,  0.5], dtype=float32)
    """
    del foreach
    _check_threshold("clip_value", clip_value)
    return clip(clip_value)
