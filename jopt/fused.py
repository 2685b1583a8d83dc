"""Fused updates: many small leaves packed into one buffer per dtype.

jax pays a few microseconds for every buffer that crosses a jitted call, and XLA
launches one kernel per leaf. An optimizer whose state mirrors a model of 1000 small
leaves moves thousands of buffers per step and compiles thousands of kernels.
:func:`fuse` keeps the state of an elementwise transformation in one flat buffer per
dtype for all leaves smaller than ``max_leaf_size`` elements, and one buffer per large
leaf (where the copy into a packed buffer would cost more bandwidth than it saves in
overhead). Inside, the wrapped transformation sees a dict of buffers; outside, the
updates have the structure, shapes and dtypes of the incoming gradients.

Only elementwise transformations (and ones whose cross-leaf statistics are sums,
like a global norm) may be fused: the result is then identical to the unfused one,
because each element sees exactly the same arithmetic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates

__all__ = ["DEFAULT_MAX_LEAF_SIZE", "FusedState", "Layout", "fuse"]

DEFAULT_MAX_LEAF_SIZE = 1 << 16
"""Leaves with fewer elements than this are packed together (tuned by ``benchmarks/``)."""

ROOT_KEY = "<root>"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each leaf of the parameter tree lives in the fused buffers (static).

    ``slots[i]`` is ``(key, offset)`` for leaf ``i``: the buffer it lives in and its
    start inside that buffer (packed buffers are 1-D; a large leaf has a buffer of
    its own with its own shape and offset 0).
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    slots: tuple[tuple[str, int], ...]
    buffers: tuple[tuple[str, tuple[int, ...], np.dtype], ...]

    @property
    def packed(self) -> frozenset[str]:
        return frozenset(key for key, shape, _ in self.buffers if _is_packed_key(key))

    def reference(self) -> Any:
        """The parameter tree as shapes and dtypes, for error messages."""
        leaves = [jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)


jax.tree_util.register_static(Layout)


def _packed_key(dtype: np.dtype) -> str:
    return f"<packed {jnp.dtype(dtype).name}>"


def _is_packed_key(key: str) -> bool:
    return key.startswith("<packed ")


def _replicated_or_local(leaf: Any) -> bool:
    """False for a concrete array split across devices (packing it would gather it)."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or isinstance(leaf, jax.core.Tracer):
        return True
    try:
        return len(sharding.device_set) == 1 or sharding.is_fully_replicated
    except Exception:  # an exotic sharding: do not pack
        return False


def make_layout(params: Params, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE) -> Layout:
    """Plans the fused buffers for ``params``: small leaves packed per dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.fused import make_layout
        >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((512, 512))}
        >>> layout = make_layout(params, max_leaf_size=1000)
        >>> layout.buffers
        (('<packed float32>', (3,), dtype('float32')), ('w', (512, 512), dtype('float32')))
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    shapes, dtypes, slots = [], [], []
    sizes: dict[str, int] = {}
    own: list[tuple[str, tuple[int, ...], np.dtype]] = []
    for path, leaf in flat:
        shape = tuple(np.shape(leaf))
        dtype = jnp.dtype(jnp.result_type(leaf))
        shapes.append(shape)
        dtypes.append(dtype)
        size = int(np.prod(shape, dtype=np.int64))
        if size < max_leaf_size and _replicated_or_local(leaf):
            key = _packed_key(dtype)
            slots.append((key, sizes.get(key, 0)))
            sizes[key] = sizes.get(key, 0) + size
        else:
            key = jtree.key_path_str(path) or ROOT_KEY
            if _is_packed_key(key) or key in {k for k, _, _ in own}:
                raise ValueError(f"fuse: parameter key path {key!r} is ambiguous")
            slots.append((key, 0))
            own.append((key, shape, dtype))
    packed = [(key, (n,), jnp.dtype(key[len("<packed ") : -1])) for key, n in sizes.items()]
    return Layout(treedef, tuple(shapes), tuple(dtypes), tuple(slots), tuple(packed + own))


def pack(layout: Layout, tree: Any, *, cast: bool = True) -> dict[str, jax.Array]:
    """Moves the leaves of ``tree`` (structured like the params) into the fused buffers.

    With ``cast``, each leaf is converted to its parameter's dtype first (gradients in
    another precision join their parameter's buffer).
    """
    leaves = jax.tree.leaves(tree)
    pieces: dict[str, list[jax.Array]] = {key: [] for key, _, _ in layout.buffers}
    for leaf, (key, _), dtype in zip(leaves, layout.slots, layout.dtypes, strict=True):
        leaf = jnp.asarray(leaf)
        if cast and leaf.dtype != dtype:
            leaf = jtree.cast(leaf, dtype)
        pieces[key].append(jnp.ravel(leaf) if _is_packed_key(key) else leaf)
    out = {}
    for key, _, _ in layout.buffers:
        parts = pieces[key]
        out[key] = parts[0] if len(parts) == 1 else jnp.concatenate(parts)
    return out


def unpack(layout: Layout, buffers: dict[str, jax.Array], dtypes: Any = None) -> Any:
    """The inverse of :func:`pack`: views of the buffers in the parameter tree's shape.

    ``dtypes``, a list with one dtype per leaf, casts each leaf on the way out.
    """
    leaves = []
    for i, ((key, offset), shape) in enumerate(zip(layout.slots, layout.shapes, strict=True)):
        buffer = buffers[key]
        if _is_packed_key(key):
            size = int(np.prod(shape, dtype=np.int64))
            leaf = jnp.reshape(jax.lax.slice_in_dim(buffer, offset, offset + size), shape)
        else:
            leaf = buffer
        if dtypes is not None and leaf.dtype != dtypes[i]:
            leaf = jtree.cast(leaf, dtypes[i])
        leaves.append(leaf)
    return jax.tree.unflatten(layout.treedef, leaves)


class FusedState(NamedTuple):
    """State of :func:`fuse`: the inner state (over fused buffers) and the static layout."""

    inner_state: OptState
    layout: Layout


def _check_against_layout(layout: Layout, tree: Any, name: str) -> None:
    leaves, treedef = jax.tree.flatten(tree)
    if treedef == layout.treedef and all(
        np.shape(x) == s for x, s in zip(leaves, layout.shapes, strict=True)
    ):
        return
    jtree.check_structure(layout.reference(), tree, names=("params", name))


def fuse(
    inner: GradientTransformation, *, max_leaf_size: int = DEFAULT_MAX_LEAF_SIZE
) -> GradientTransformation:
    """Runs an elementwise transformation on fused buffers: one per dtype for small leaves.

    Leaves with fewer than ``max_leaf_size`` elements are concatenated into one 1-D
    buffer per dtype; larger leaves keep a buffer of their own. The inner
    transformation's state lives on those buffers, so an Adam over 1000 small leaves
    carries two state buffers instead of 2000. The result is the same, element for
    element, as running ``inner`` unfused.

    Update rule: ``u <- unpack(inner(pack(u), pack(p)))``.

    Args:
        inner: an elementwise transformation (or one whose cross-leaf statistics are
            global sums, like clipping by global norm).
        max_leaf_size: leaves with at least this many elements are not packed.

    Returns:
        A transformation with a :class:`FusedState`.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
        >>> tx = jopt.fuse(jopt.scale_by_adam())
        >>> state = tx.init(params)
        >>> {k: v.shape for k, v in state.inner_state.mu.items()}
        {'<packed float32>': (6,)}
        >>> tx.update({"a": jnp.ones(2), "b": -jnp.ones((2, 2))}, state)[0]["b"]
        Array([[-1., -1.],
               [-1., -1.]], dtype=float32)
    """
    if max_leaf_size < 0:
        raise ValueError(f"max_leaf_size={max_leaf_size!r} must be >= 0")

    def init(params: Params) -> FusedState:
        layout = make_layout(params, max_leaf_size)
        return FusedState(inner.init(pack(layout, params)), layout)

    def update(
        updates: Updates, state: FusedState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, FusedState]:
        layout = state.layout
        _check_against_layout(layout, updates, "updates")
        if params is not None:
            _check_against_layout(layout, params, "params")
        out_dtypes = [jnp.result_type(u) for u in jax.tree.leaves(updates)]
        flat_params = None if params is None else pack(layout, params)
        flat_updates, inner_state = inner.update(
            pack(layout, updates), state.inner_state, flat_params, **extra
        )
        return unpack(layout, flat_updates, out_dtypes), FusedState(inner_state, layout)

    return GradientTransformation(init, update)
