"""Gradient clipping: by value, by global norm, by block RMS, and adaptive (unit-wise).

The optax door: ``jopt.clip``, ``jopt.clip_by_global_norm``, ``jopt.clip_by_block_rms``,
``jopt.adaptive_grad_clip`` and ``jopt.per_example_global_norm_clip`` have optax 0.2.8's
names, signatures and values (tested against optax in float32 and float64). torch's
``clip_grad_norm_`` and ``clip_grad_value_`` are in :mod:`jopt.torch.clip`.

Every clip here computes one scalar factor per tree (global norm) or per leaf or unit
(block RMS, AGC) and multiplies by it, so under ``jit`` XLA reads each gradient once
for the norm and once for the product, and writes only the clipped output (on CPU,
XLA keeps a float32 copy of each half-precision leaf between the two passes, for
optax's clips as for these). Norms are summed in at least float32 and the product is
cast back to each leaf's dtype, so half-precision gradients keep their dtype and never
overflow on the way.

These are building blocks and keep no hyperparameters in their state, but every
threshold may be a traced value: build one inside :func:`jopt.with_hyperparams` to
read and change it without recompiling (see :func:`clip_by_global_norm`).

Where optax divides zero by zero (a zero threshold with a zero gradient), jopt takes
the limit instead and returns zeros; NaN and Inf gradients still propagate exactly as
in optax, so bad inputs stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import kernels, stepping
from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates, stateless
from jopt.fused import _is_packed_key
from jopt.hyperparams import NONNEGATIVE, check_hyperparam
from jopt.transforms.adaptive import _abs_sq
from jopt.transforms.scaling import _scale_tree

__all__ = [
    "adaptive_grad_clip",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "per_example_global_norm_clip",
]

Axis = int | Sequence[int] | None


def _check_threshold(name: str, value: Any) -> None:
    """A threshold is a scalar >= 0 (checked now unless it is traced)."""
    check_hyperparam(name, value, NONNEGATIVE)
    if not jtree.is_traced(value) and np.shape(value) != ():
        raise ValueError(f"{name} must be a scalar, got shape {list(np.shape(value))}")


def _real(dtype: Any) -> Any:
    """The real dtype a norm of ``dtype`` values has (float32 for complex64)."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def _factor(
    norm: jax.Array, limit: jax.Array, *, keep_equal: bool = False, floor: float | None = None
) -> jax.Array:
    """``1`` if ``norm`` is within ``limit``, else ``limit / max(norm, floor)``.

    Within means ``norm < limit`` (optax's global norm and AGC), or ``norm <= limit``
    with ``keep_equal`` (optax's block RMS). ``floor`` defaults to the smallest normal
    number, so ``0 / 0`` gives 0 instead of NaN; a NaN norm still gives a NaN factor.
    """
    dtype = norm.dtype
    keep = norm <= limit if keep_equal else norm < limit
    smallest = jnp.finfo(dtype).tiny if floor is None else floor
    return jnp.where(keep, jnp.ones((), dtype), limit / jnp.maximum(norm, smallest))


def _refuse_fused(updates: Updates, name: str) -> None:
    """Per-leaf clips cannot see leaves inside :func:`jopt.fuse`'s packed buffers."""
    if isinstance(updates, dict) and any(
        isinstance(key, str) and _is_packed_key(key) for key in updates
    ):
        raise ValueError(
            f"{name} clips each leaf on its own, but inside jopt.fuse it sees buffers that "
            f"pack many leaves together; apply it before the fused part instead: "
            f"jopt.chain(jopt.{name}(...), jopt.fuse(...))"
        )


def clip(max_delta: float | jax.Array) -> GradientTransformation:
    """Clips every element of the updates to ``[-max_delta, max_delta]``.

    Update rule: ``u <- min(max(u, -max_delta), max_delta)``, elementwise. NaN stays NaN
    and ``±Inf`` becomes ``±max_delta``. Half precision is clipped in float32 and
    rounded back (saturating), so a bound beyond the dtype's range clips to its
    largest finite value instead of Inf.

    Args:
        max_delta: the largest allowed absolute value, >= 0 (may be traced).

    Returns:
        A stateless transformation.

    References:
        optax ``clip``; ``torch.nn.utils.clip_grad_value_`` (see
        :func:`jopt.torch.clip_grad_value`).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.clip(1.0)
        >>> tx.update({"w": jnp.array([0.5, -3.0, 2.0])}, tx.init(None))[0]
        {'w': Array([ 0.5, -1. ,  1. ], dtype=float32)}
    """
    _check_threshold("max_delta", max_delta)

    def clipped(updates: Updates, params: Params | None) -> Updates:
        del params

        def one(u: jax.Array) -> jax.Array:
            ct = jtree.compute_dtype(u.dtype)
            bound = jtree.scalar(max_delta, ct)
            return jtree.cast(jnp.clip(u.astype(ct), -bound, bound), u.dtype)

        return jax.tree.map(one, updates)

    return stateless(clipped)


def clip_by_global_norm(max_norm: float | jax.Array) -> GradientTransformation:
    """Rescales the updates so that their global L2 norm is at most ``max_norm``.

    Update rule, with ``n = sqrt(sum_i sum(u_i ** 2))`` over all leaves
    (:func:`jopt.global_norm`)::

        u <- u                    if n < max_norm
        u <- u * max_norm / n     otherwise

    The direction is kept. The norm is summed in at least float32 (float64 if any
    leaf is float64) and each leaf is multiplied by the one scalar factor in its
    compute dtype and cast back, so half-precision leaves keep their dtype and stay
    finite where optax's half-precision sum of squares overflows. Inside
    :func:`jopt.fuse` the norm over the fused buffers is the norm over the leaves.

    Differs from optax only where optax computes ``0 / 0``: with ``max_norm=0`` and a
    zero gradient optax returns NaN, jopt zeros. A NaN or Inf gradient gives NaN (or
    zeros and NaN) exactly as in optax.

    Args:
        max_norm: the largest allowed global norm, >= 0 (may be traced).

    Returns:
        A stateless transformation.

    References:
        Pascanu et al., "On the difficulty of training recurrent neural networks",
        ICML 2013; optax ``clip_by_global_norm``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.clip_by_global_norm(1.0)
        >>> tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))[0]
        {'a': Array([0.6], dtype=float32), 'b': Array([0.8], dtype=float32)}

        To read and change the threshold without recompiling, put it in the state:

        >>> from jopt.hyperparams import NONNEGATIVE
        >>> tx = jopt.with_hyperparams(
        ...     jopt.clip_by_global_norm, owner="clip",
        ...     bounds={"max_norm": NONNEGATIVE}, max_norm=1.0)
        >>> state = jopt.set_hyperparams(tx.init(None), max_norm=2.5)
        >>> float(jopt.hyperparams(state)["max_norm"])
        2.5
        >>> tx.update(jnp.array([3.0, 4.0]), state)[0]
        Array([1.5, 2. ], dtype=float32)
    """
    _check_threshold("max_norm", max_norm)

    def factor(updates: Updates, norm_of: Any = jtree.global_norm) -> jax.Array:
        norm = norm_of(updates)
        return _factor(norm, jtree.scalar(max_norm, norm.dtype))

    def clipped(updates: Updates, params: Params | None) -> Updates:
        del params
        return _scale_tree(updates, factor(updates))

    def scale_fn(updates: Updates, state: OptState, params: Params | None) -> tuple[Any, OptState]:
        # Folded into jopt.step: the norm comes from one kernel call over all the
        # leaves where it can (jopt.kernels.global_norm), the same value to rounding.
        del params
        return factor(updates, kernels.global_norm), state

    return stepping.with_scale(stateless(clipped), scale_fn)


def clip_by_block_rms(threshold: float | jax.Array) -> GradientTransformation:
    """Rescales each leaf (block) so that its root mean square is at most ``threshold``.

    Update rule, for each leaf ``u`` with ``r = sqrt(mean(u ** 2))``::

        u <- u / max(1, r / threshold)

    A block is a leaf of the tree: a weight vector or matrix. The mean is taken in at
    least float32 and each leaf keeps its dtype. A leaf is a block only outside
    :func:`jopt.fuse` (whose buffers pack many leaves), so inside it this raises.
    With ``threshold=0`` an all-zero leaf stays zero (optax: NaN).

    Args:
        threshold: the largest allowed RMS per leaf, >= 0 (may be traced).

    Returns:
        A stateless transformation.

    References:
        optax ``clip_by_block_rms``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.clip_by_block_rms(1.0)
        >>> grads = {"w": jnp.array([3.0, -3.0]), "b": jnp.array([0.5])}
        >>> tx.update(grads, tx.init(None))[0]
        {'b': Array([0.5], dtype=float32), 'w': Array([ 1., -1.], dtype=float32)}
    """
    _check_threshold("threshold", threshold)

    def clipped(updates: Updates, params: Params | None) -> Updates:
        del params
        _refuse_fused(updates, "clip_by_block_rms")

        def one(u: jax.Array) -> jax.Array:
            uc = u.astype(jtree.compute_dtype(u.dtype))
            rms = jnp.sqrt(jnp.mean(_abs_sq(uc)))
            factor = _factor(rms, jtree.scalar(threshold, rms.dtype), keep_equal=True)
            return jtree.cast(uc * factor.astype(uc.dtype), u.dtype)

        return jax.tree.map(one, updates)

    return stateless(clipped)


def _unit_axes(shape: tuple[int, ...], axis: Axis, path: str) -> int | tuple[int, ...] | None:
    """The axes a unit-wise norm sums over, by optax's layer conventions."""
    if axis is not None:
        return axis if isinstance(axis, int) else tuple(axis)
    if sum(d != 1 for d in shape) <= 1:  # scalars and vectors: the whole leaf
        return None
    if len(shape) in (2, 3):  # dense (in, out) and multi-head dense kernels
        return 0
    if len(shape) in (4, 5):  # conv kernels: spatial dims and input channels
        return tuple(range(len(shape) - 1))
    raise ValueError(
        f"adaptive_grad_clip: leaf '{path}' has shape {list(shape)}; the default units "
        f"cover ranks 1 to 5: pass axis= to choose the axes to take norms over"
    )


def adaptive_grad_clip(
    clipping: float | jax.Array, eps: float | jax.Array = 1e-3, axis: Axis = None
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC): each unit's gradient norm at most ``clipping``
    times its parameter norm.

    Update rule, for each unit (a slice of a leaf, see below) with gradient ``g`` and
    parameter ``p``::

        limit = clipping * max(||p||, eps)
        g <- g                                     if ||g|| < limit
        g <- g * limit / max(||g||, 1e-6)          otherwise

    Units, as in optax: a scalar or vector leaf is one unit; rank-2 and rank-3 leaves
    (dense ``(in, out)`` and multi-head kernels) take norms over axis 0, one unit per
    output; rank-4 and rank-5 leaves (conv kernels, ``HWIO`` / ``DHWIO``) take norms
    over all axes but the last. ``axis`` overrides this. Norms are taken
    in at least float32; each leaf keeps its gradient's dtype. A unit is a slice of a
    leaf only outside :func:`jopt.fuse`, so inside it this raises.

    Args:
        clipping: the largest allowed ratio of gradient norm to parameter norm, >= 0
            (may be traced).
        eps: floor on the parameter norm, so zero-initialized parameters can move, >= 0.
        axis: axis or axes to take the unit norms over (default: by rank, as above).

    Returns:
        A stateless transformation whose ``update`` needs ``params``.

    References:
        Brock et al., "High-Performance Large-Scale Image Recognition Without
        Normalization", ICML 2021; optax ``adaptive_grad_clip``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"w": jnp.array([[3.0, 0.1], [4.0, 0.1]])}
        >>> grads = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
        >>> tx = jopt.adaptive_grad_clip(0.1)
        >>> tx.update(grads, tx.init(params), params)[0]
        {'w': Array([[1.      , 0.      ],
                [0.      , 0.014142]], dtype=float32)}
    """
    _check_threshold("clipping", clipping)
    _check_threshold("eps", eps)

    def clipped(updates: Updates, params: Params | None) -> Updates:
        if params is None:
            raise ValueError("adaptive_grad_clip needs params: call update(updates, state, params)")
        _refuse_fused(updates, "adaptive_grad_clip")
        jtree.check_structure(params, updates, names=("params", "updates"))

        def one(path: Any, g: jax.Array, p: jax.Array) -> jax.Array:
            axes = _unit_axes(np.shape(g), axis, jtree.key_path_str(path))
            ct = jtree.compute_dtype(jtree.promote(g.dtype, p.dtype))
            gc, pc = g.astype(ct), p.astype(ct)
            g_norm = jnp.sqrt(jnp.sum(_abs_sq(gc), axis=axes, keepdims=True))
            p_norm = jnp.sqrt(jnp.sum(_abs_sq(pc), axis=axes, keepdims=True))
            real = _real(ct)
            limit = jtree.scalar(clipping, real) * jnp.maximum(p_norm, jtree.scalar(eps, real))
            factor = _factor(g_norm, limit, floor=1e-6)
            return jtree.cast(gc * factor.astype(ct), g.dtype)

        return jax.tree_util.tree_map_with_path(one, updates, params)

    return stateless(clipped)


def per_example_global_norm_clip(
    grads: Any, l2_norm_clip: float | jax.Array
) -> tuple[Any, jax.Array]:
    """Clips each example's gradient to global norm ``l2_norm_clip`` and sums them.

    Update rule, for per-example gradients ``g_1 .. g_B`` (axis 0 of every leaf)::

        c_b = min(l2_norm_clip / ||g_b||, 1)       (1 where that is 0 / 0)
        sum = sum_b c_b g_b,     clipped = #{b : c_b < 1}

    The aggregation step of DP-SGD (before noise is added). Not a transformation: a
    function of the per-example gradients, as in optax. Norms are taken in at least
    float32; the sums keep each leaf's floating dtype (optax returns float32 sums for
    half-precision leaves) and integer leaves give float32 sums, as in optax. The
    count is int32 (optax: the default integer, int64 under x64).

    Args:
        grads: a tree whose every leaf has the batch of examples on axis 0.
        l2_norm_clip: the largest allowed per-example global norm, >= 0.

    Returns:
        ``(clipped_sum, num_clipped)``: the tree of summed clipped gradients (leaves
        without the batch axis) and how many examples were clipped.

    References:
        Abadi et al., "Deep Learning with Differential Privacy", CCS 2016; optax
        ``per_example_global_norm_clip``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> grads = [jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
        >>> jopt.per_example_global_norm_clip(grads, 1.25)
        ([Array([1.75, 1.75, 1.75], dtype=float32)], Array(3, dtype=int32))
    """
    check_hyperparam("l2_norm_clip", l2_norm_clip, NONNEGATIVE)
    flat, treedef = jax.tree_util.tree_flatten_with_path(grads)
    if not flat:
        raise ValueError("per_example_global_norm_clip: grads has no leaves")
    batch = np.shape(flat[0][1])[:1]
    for path, leaf in flat:
        if np.ndim(leaf) < 1 or np.shape(leaf)[:1] != batch:
            raise ValueError(
                f"per_example_global_norm_clip expects every leaf of grads to have the "
                f"batch of examples on axis 0, of size {batch[0] if batch else '?'}; "
                f"'{jtree.key_path_str(path)}' has shape {list(np.shape(leaf))}"
            )
    leaves = [jnp.asarray(leaf) for _, leaf in flat]
    floats = [x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32) for x in leaves]
    norms = jax.vmap(jtree.global_norm)(floats)
    limit = jtree.scalar(l2_norm_clip, norms.dtype)
    multipliers = jnp.nan_to_num(jnp.minimum(limit / norms, 1.0), nan=1.0)
    num_clipped = jnp.sum(multipliers < 1.0, dtype=jnp.int32)

    def weighted_sum(g: jax.Array) -> jax.Array:
        ct = jtree.compute_dtype(jtree.promote(g.dtype, norms.dtype))
        total = jnp.tensordot(
            multipliers.astype(ct), g.astype(ct), axes=1, precision=jax.lax.Precision.HIGHEST
        )
        return jtree.cast(total, g.dtype) if jnp.issubdtype(g.dtype, jnp.inexact) else total

    return jax.tree.unflatten(treedef, [weighted_sum(g) for g in leaves]), num_clipped
