"""Flat parameters: the model's small leaves kept in one buffer per dtype between steps.

A jitted training step pays a few microseconds for every buffer it takes and returns
(on CPU about 3-4 us), so a model of 1000 small leaves spends milliseconds per step
just passing its parameters, gradients and optimizer state in and out, however the
optimizer stores its own state. :class:`FlatParams` stores the parameters themselves
packed: every leaf smaller than ``max_leaf_size`` elements lives in one 1-D buffer
per dtype, larger leaves keep a buffer of their own (as in :func:`jopt.fuse`, whose
layout this is). Inside the step, :meth:`FlatParams.tree` gives the model the
original tree as views of the buffers, and the gradient with respect to a
``FlatParams`` is a ``FlatParams`` of gradient buffers, concatenated once by the
backward pass. The optimizer, any jopt or optax transformation, then runs on a
handful of buffers:

    >>> import jax, jax.numpy as jnp
    >>> import jopt
    >>> params = {"layers": [{"w": jnp.eye(3), "b": jnp.zeros(3)} for _ in range(4)]}
    >>> flat = jopt.flat.flatten(params)
    >>> [(k, b.shape) for k, b in flat.buffers.items()]
    [('<packed float32>', (48,))]
    >>> def loss(params, x):
    ...     for layer in params["layers"]:
    ...         x = jnp.tanh(layer["w"] @ x + layer["b"])
    ...     return jnp.sum(x**2)
    >>> tx = jopt.adam(1e-2)
    >>> state = tx.init(flat)
    >>> @jax.jit
    ... def step(flat, state, x):
    ...     value, grads = jax.value_and_grad(jopt.flat.on_tree(loss))(flat, x)
    ...     updates, state = tx.update(grads, state, flat)
    ...     return jopt.apply_updates(flat, updates), state, value
    >>> flat, state, value = step(flat, state, jnp.ones(3))
    >>> flat.tree()["layers"][0]["w"].shape
    (3, 3)

What changes for the optimizer: it sees buffers, not leaves. Elementwise optimizers
(every ``jopt.<name>`` and ``jopt.torch.<Name>`` without masks) and global-norm
clipping give the same numbers as on the tree (a global norm sums in another order,
so it may differ in the last bit). Transformations that look at leaves individually
(per-leaf clipping, masks and :func:`jopt.partition` by key path, shape-dependent
factored moments) need the tree: keep those models as trees, or give such
transformations only the buffers they should see.

Cost model. A large leaf would be sliced out of a packed buffer for every matmul
that reads it and its gradient concatenated into a temporary as large as the model,
so large leaves stay unpacked (``max_leaf_size``, the same default as
:func:`jopt.fuse`); packing pays where leaves are many and small. XLA compiles one
small slicing kernel per packed leaf in the forward pass, as it would compile one
kernel per leaf for the model itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt import fused
from jopt.base import Params

__all__ = ["FlatParams", "flatten", "on_tree", "unflatten"]


@jax.tree_util.register_pytree_with_keys_class
class FlatParams:
    """Parameters stored as fused buffers: one per dtype for small leaves, one per large leaf.

    A pytree whose leaves are the buffers (``buffers``, keyed as in
    :attr:`jopt.fused.Layout.buffers`) and whose static part is the
    :class:`~jopt.fused.Layout` of the original tree. Optimizers, ``jax.grad``,
    ``jax.jit`` (with donation) and checkpointing see a few large arrays.

    Attributes:
        buffers: the buffers, by key (``"<packed float32>"``, or a large leaf's path).
        layout: where each leaf of the original tree lives.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"b": jnp.zeros(3), "w": jnp.ones((512, 512))}
        >>> jopt.flat.flatten(params)
        FlatParams({'<packed float32>': float32[3], 'w': float32[512, 512]}, 2 leaves)
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: dict[str, Any], layout: fused.Layout):
        self.buffers = buffers
        self.layout = layout

    def tree(self) -> Params:
        """The original parameter tree, as views of the buffers (differentiable).

        Inside ``jit`` the views are slices that XLA reads in place; the gradient of a
        function of the views, taken with respect to this ``FlatParams``, is a
        ``FlatParams`` whose packed buffers are the leaves' gradients concatenated once.
        """
        return unflatten(self)

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], fused.Layout]:
        keys = [key for key, _, _ in self.layout.buffers]
        return [(jax.tree_util.DictKey(k), self.buffers[k]) for k in keys], self.layout

    @classmethod
    def tree_unflatten(cls, layout: fused.Layout, children: Any) -> FlatParams:
        keys = [key for key, _, _ in layout.buffers]
        return cls(dict(zip(keys, children, strict=True)), layout)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k!r}: {jnp.dtype(d).name}{list(s)}" for k, s, d in self.layout.buffers)
        return f"FlatParams({{{parts}}}, {len(self.layout.slots)} leaves)"


def flatten(
    params: Params,
    *,
    max_leaf_size: int | None = fused.DEFAULT_MAX_LEAF_SIZE,
    max_chunks: int = 1,
) -> FlatParams:
    """Packs a parameter tree into :class:`FlatParams` (one copy; do it once, not per step).

    Leaves with fewer than ``max_leaf_size`` elements go into one 1-D buffer per
    dtype, in leaf order; larger ones keep their own buffer. ``max_leaf_size=None``
    packs everything into one buffer per dtype.

    Args:
        params: any pytree of arrays (a dict, a flax ``nnx.State``, ...).
        max_leaf_size: leaves with at least this many elements are not packed.
        max_chunks: pack each dtype's small leaves into up to this many buffers
            instead of one. One buffer is the fastest step; with many small leaves of
            equal shape, a few chunks let XLA compile the model's per-leaf kernels
            once per offset instead of once per leaf (see :mod:`jopt.fused`).

    Returns:
        The packed parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> flat = jopt.flat.flatten({"b": jnp.zeros(3), "w": jnp.ones((2, 3))})
        >>> flat.buffers["<packed float32>"]
        Array([0., 0., 0., 1., 1., 1., 1., 1., 1.], dtype=float32)
    """
    if max_leaf_size is not None and max_leaf_size < 0:
        raise ValueError(f"max_leaf_size={max_leaf_size!r} must be >= 0 (or None)")
    layout = fused.make_layout(params, max_leaf_size, max_chunks)
    return FlatParams(fused.pack(layout, params), layout)


def unflatten(flat: FlatParams) -> Params:
    """The original tree, as views of ``flat``'s buffers (``flat.tree()``); differentiable.

    Outside ``jit`` the views are new arrays (one dispatch per leaf): use it to read
    the trained parameters, not inside a loop.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}
        >>> jopt.flat.unflatten(jopt.flat.flatten(params))["w"]
        Array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """
    if not isinstance(flat, FlatParams):
        raise TypeError(f"unflatten expects FlatParams, got {type(flat).__name__}")
    keys = tuple(key for key, _, _ in flat.layout.buffers)
    return _views(flat.layout, keys, tuple(flat.buffers[k] for k in keys))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _views(layout: fused.Layout, keys: tuple[str, ...], buffers: tuple[Any, ...]) -> Params:
    return fused.unpack(layout, dict(zip(keys, buffers, strict=True)))


def _views_fwd(layout: fused.Layout, keys: tuple[str, ...], buffers: tuple[Any, ...]):
    return _views(layout, keys, buffers), None


def _views_bwd(layout: fused.Layout, keys: tuple[str, ...], _: None, cotangents: Params):
    """The transpose of slicing: one concatenation per packed buffer (not a sum of pads)."""
    leaves = [
        jnp.zeros(shape, dtype) if getattr(ct, "dtype", None) == jax.dtypes.float0 else ct
        for ct, shape, dtype in zip(
            jax.tree.leaves(cotangents), layout.shapes, layout.dtypes, strict=True
        )
    ]
    grads = fused.pack(layout, jax.tree.unflatten(layout.treedef, leaves))
    out: list[Any] = []
    for key, shape, dtype in layout.buffers:
        if jnp.issubdtype(dtype, jnp.inexact):
            out.append(grads[key])
        else:  # integer leaves have no gradient
            out.append(np.zeros(shape, jax.dtypes.float0))
    return (tuple(out),)


_views.defvjp(_views_fwd, _views_bwd)


def on_tree(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``fn(params, *args)`` into ``g(flat, *args) = fn(flat.tree(), *args)``.

    The way to take gradients with respect to the flat buffers of a loss written for
    the parameter tree: ``jax.grad(jopt.flat.on_tree(loss))(flat, batch)`` returns a
    :class:`FlatParams` of gradients.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> flat = jopt.flat.flatten({"a": jnp.ones(2), "b": jnp.full(3, 2.0)})
        >>> loss = lambda params: jnp.sum(params["a"]) + jnp.sum(params["b"] ** 2)
        >>> jax.grad(jopt.flat.on_tree(loss))(flat).buffers["<packed float32>"]
        Array([1., 1., 4., 4., 4.], dtype=float32)
    """

    @functools.wraps(fn)
    def wrapped(flat: FlatParams, *args: Any, **kwargs: Any) -> Any:
        return fn(unflatten(flat), *args, **kwargs)

    return wrapped
