"""Fused updates: many small leaves packed into one buffer per dtype.

jax pays a few microseconds for every buffer that crosses a jitted call, and XLA
launches one kernel per leaf. An optimizer whose state mirrors a model of 1000 small
leaves moves thousands of buffers per step. :func:`fuse` keeps the state of an
elementwise transformation in one flat buffer per dtype for all leaves smaller than
``max_leaf_size`` elements, and one buffer per large leaf (where the copy into a
packed buffer would cost more bandwidth than it saves in overhead). Inside, the
wrapped transformation sees a dict of buffers; outside, the updates have the
structure, shapes and dtypes of the incoming gradients.

Only elementwise transformations (and ones whose cross-leaf statistics are sums,
like a global norm) may be fused: the result is then identical to the unfused one,
because each element sees exactly the same arithmetic in the same dtypes.

State layout. ``FusedState(inner_state, layout)``: ``inner_state`` is the wrapped
transformation's state for a "parameter tree" that is a dict of buffers, keyed
``"<packed float32>"``, ``"<packed float32 #1>"``, ... (1-D buffers holding the
small float32 leaves, raveled: at most ``max_chunks`` such chunks per dtype, each
with its leaves in tree order) and, for each large leaf, its key path (the leaf as
it is). ``layout`` is static (no arrays): the parameter tree's structure, shapes and
dtypes, and where each leaf lives (``Layout.slots``: buffer key and offset). Adam's
state over 1000 small float32 leaves is therefore 2 x 17 1-D buffers holding exactly
twice the parameter bytes. :func:`jopt.state_dict` unpacks the buffers to the
parameters' key paths, so checkpoints do not depend on the packing.

Dtypes. Each buffer of the state has its parameters' dtype (or whatever dtype the
wrapped transformation chooses, e.g. ``mu_dtype``). Gradients are packed in their
own dtype, not the parameters', so bfloat16 gradients of float32 parameters go
through the same roundings as unfused; a packed buffer whose leaves' gradients have
different dtypes is packed in their common promoted dtype, and the updates are cast
back to each gradient's dtype on the way out.

Compile time. Each leaf's output is a slice of a packed buffer, and XLA compiles
one kernel per distinct computation: slices at different offsets are different
kernels (tens of milliseconds each on XLA:CPU), equal ones are compiled once. One
packed buffer for 1000 leaves therefore meant 1000 kernels (28 s for Adam on a
2-core CPU); 16 chunks of equal-size leaves repeat the same 63 offsets, and the step
compiles in about 4 s (optax: 10 s). :mod:`jopt.flat`, whose steps never unpack,
compiles the optimizer step in a fraction of a second. Under :func:`jopt.step`, a
transformation with a packed step (:func:`jopt.stepping.with_packed_step`, e.g. Adam's
CPU kernels) reads the leaves where they lie and packs nothing: about 1 s for the
clipped AdamW chain on 1000 leaves.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import stepping
from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates

__all__ = ["DEFAULT_MAX_LEAF_SIZE", "FusedState", "Layout", "fuse"]

DEFAULT_MAX_LEAF_SIZE = 1 << 14
"""Leaves with fewer elements than this are packed together.

Packing a leaf costs a copy of its gradient into the packed buffer (about 0.75 ns per
float32 element on a 2-core CPU) and about 12 us of per-leaf work; a leaf with buffers
of its own costs about 24 us per step (its state buffers crossing ``jit``, its
kernels). Measured with ``python -m benchmarks.step --sweep-leaf-size`` (jopt Adam on
2M parameters in equal leaves): packing wins at 8K elements per leaf (0.91x the time)
and loses at 16K (1.3x), so leaves below 16K elements are packed.
"""

DEFAULT_MAX_CHUNKS = 16
"""Small leaves of one dtype are packed into at most this many buffers (see make_layout)."""
MIN_CHUNK = 1 << 12
"""Packed chunks hold at least this many elements (a 4K-element buffer costs as much
to pass through ``jit`` as it saves in compile time)."""

ROOT_KEY = "<root>"


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """Where each leaf of the parameter tree lives in the fused buffers (static).

    ``slots[i]`` is ``(key, offset)`` for leaf ``i``: the buffer it lives in and its
    start inside that buffer (packed buffers are 1-D; a large leaf has a buffer of
    its own with its own shape and offset 0). ``buffers`` lists every buffer as
    ``(key, shape, dtype)``, packed ones first.

    A layout is part of the static structure of the state: jax hashes and compares it
    on every call of a jitted step, so both are cheap (the hash is computed once, and
    a layout compares equal to itself without looking at its fields).
    """

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    slots: tuple[tuple[str, int], ...]
    buffers: tuple[tuple[str, tuple[int, ...], np.dtype], ...]

    def _key(self) -> tuple[Any, ...]:
        return (self.treedef, self.shapes, self.dtypes, self.slots, self.buffers)

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(self._key())
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Layout) or hash(self) != hash(other):
            return False
        return self._key() == other._key()

    @property
    def packed(self) -> frozenset[str]:
        """The keys of the packed (1-D, many-leaf) buffers."""
        return frozenset(key for key, _, _ in self.buffers if _is_packed_key(key))

    def reference(self) -> Any:
        """The parameter tree as shapes and dtypes, for error messages."""
        leaves = [jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes, strict=True)]
        return jax.tree.unflatten(self.treedef, leaves)


jax.tree_util.register_static(Layout)


def _packed_key(dtype: np.dtype, chunk: int = 0) -> str:
    name = jnp.dtype(dtype).name
    return f"<packed {name}>" if chunk == 0 else f"<packed {name} #{chunk}>"


def _is_packed_key(key: str) -> bool:
    return key.startswith("<packed ")


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _replicated_or_local(leaf: Any) -> bool:
    """False for a concrete array split across devices (packing it would gather it)."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or isinstance(leaf, jax.core.Tracer):
        return True
    try:
        return len(sharding.device_set) == 1 or sharding.is_fully_replicated
    except Exception:  # an exotic sharding: do not pack
        return False


def make_layout(
    params: Params,
    max_leaf_size: int | None = DEFAULT_MAX_LEAF_SIZE,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
) -> Layout:
    """Plans the fused buffers for ``params``: small leaves packed per dtype, in chunks.

    The small leaves of one dtype are split into at most ``max_chunks`` packed buffers
    of about equal size (none below ``MIN_CHUNK`` elements), largest leaves first, each
    chunk keeping its leaves in tree order. Leaves of equal shape then sit at the same
    offsets in different chunks, and XLA compiles one kernel for all of them (see the
    module docstring). ``max_leaf_size=None`` packs every leaf (that is not sharded
    across devices); ``max_chunks=1`` gives one packed buffer per dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.fused import make_layout
        >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((512, 512))}
        >>> layout = make_layout(params, max_leaf_size=1000)
        >>> layout.buffers
        (('<packed float32>', (3,), dtype('float32')), ('w', (512, 512), dtype('float32')))
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks={max_chunks!r} must be >= 1")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    shapes, dtypes, slots = [], [], []
    small: dict[np.dtype, list[int]] = {}
    own: list[tuple[str, tuple[int, ...], np.dtype]] = []
    taken: set[str] = set()
    for i, (path, leaf) in enumerate(flat):
        shape = tuple(np.shape(leaf))
        dtype = jnp.dtype(jnp.result_type(leaf))
        shapes.append(shape)
        dtypes.append(dtype)
        fits = max_leaf_size is None or _size(shape) < max_leaf_size
        if fits and _replicated_or_local(leaf):
            small.setdefault(dtype, []).append(i)
            slots.append(("", 0))  # placed below
        else:
            key = jtree.key_path_str(path) or ROOT_KEY
            if _is_packed_key(key) or key in taken:  # e.g. a jopt.flat buffer's own path
                key = f"{key}#{len(own)}"
            taken.add(key)
            slots.append((key, 0))
            own.append((key, shape, dtype))
    packed = []
    for dtype, members in small.items():
        for c, chunk in enumerate(_chunks([_size(shapes[i]) for i in members], max_chunks)):
            key = _packed_key(dtype, c)
            offset = 0
            for j in chunk:  # tree order inside a chunk
                slots[members[j]] = (key, offset)
                offset += _size(shapes[members[j]])
            packed.append((key, (offset,), dtype))
    return Layout(treedef, tuple(shapes), tuple(dtypes), tuple(slots), tuple(packed + own))


def _chunks(sizes: list[int], max_chunks: int) -> list[list[int]]:
    """Indices into ``sizes`` grouped into at most about ``max_chunks`` chunks.

    Largest first, so that equal sizes fill chunks alike; each chunk sorted back into
    the original order.
    """
    total = sum(sizes)
    capacity = max(MIN_CHUNK, -(-total // max_chunks))
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])  # stable: ties in tree order
    chunks: list[list[int]] = []
    filled = 0
    for i in order:
        if not chunks or (filled + sizes[i] > capacity and filled > 0):
            chunks.append([])
            filled = 0
        chunks[-1].append(i)
        filled += sizes[i]
    return [sorted(chunk) for chunk in chunks]


def pack(layout: Layout, tree: Any, *, cast: bool = True) -> dict[str, jax.Array]:
    """Moves the leaves of ``tree`` (structured like the params) into the fused buffers.

    With ``cast``, each leaf is converted to its parameter's dtype first. Without it,
    leaves keep their dtype, and a packed buffer whose leaves differ in dtype holds
    them in their promoted dtype.
    """
    leaves = jax.tree.leaves(tree)  # flax Variables or not: the same leaves in the same order
    pieces: dict[str, list[jax.Array]] = {key: [] for key, _, _ in layout.buffers}
    for leaf, (key, _), dtype in zip(leaves, layout.slots, layout.dtypes, strict=True):
        leaf = jnp.asarray(leaf)
        if cast and leaf.dtype != dtype:
            leaf = jtree.cast(leaf, dtype)
        pieces[key].append(jnp.ravel(leaf) if _is_packed_key(key) else leaf)
    out = {}
    for key, _, _ in layout.buffers:
        parts = pieces[key]
        if len(parts) == 1:
            out[key] = parts[0]
            continue
        common = jtree.promote(*(p.dtype for p in parts))
        out[key] = jnp.concatenate([p if p.dtype == common else p.astype(common) for p in parts])
    return out


def unpack(layout: Layout, buffers: dict[str, jax.Array], dtypes: Any = None) -> Any:
    """The inverse of :func:`pack`: views of the buffers in the parameter tree's shape.

    ``dtypes``, a list with one dtype per leaf, casts each leaf on the way out.
    """
    leaves = []
    for i, ((key, offset), shape) in enumerate(zip(layout.slots, layout.shapes, strict=True)):
        buffer = buffers[key]
        if _is_packed_key(key):
            leaf = jnp.reshape(jax.lax.slice_in_dim(buffer, offset, offset + _size(shape)), shape)
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


def check_against_layout(layout: Layout, tree: Any, name: str) -> None:
    """Raises :class:`jopt.TreeMismatchError` naming the first key path where ``tree``
    differs from the parameters ``layout`` was planned for (structure or shape).

    flax ``nnx.Variable`` wrappers on either side are looked through.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if treedef == layout.treedef and _same_shapes(leaves, layout):
        return
    reference = layout.reference()
    if "flax.nnx" in sys.modules:
        reference = jtree.strip_flax_variables(reference)
        tree = jtree.strip_flax_variables(tree)
        expected: Any = jax.tree.structure(reference)  # (PyTreeDef's == is untyped)
        if expected == jax.tree.structure(tree) and _same_shapes(jax.tree.leaves(tree), layout):
            return
    jtree.check_structure(reference, tree, names=("params", name))


def _same_shapes(leaves: list[Any], layout: Layout) -> bool:
    return len(leaves) == len(layout.shapes) and all(
        np.shape(x) == s for x, s in zip(leaves, layout.shapes, strict=True)
    )


def fuse(
    inner: GradientTransformation,
    *,
    max_leaf_size: int | None = DEFAULT_MAX_LEAF_SIZE,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
) -> GradientTransformation:
    """Runs an elementwise transformation on fused buffers: one per dtype for small leaves.

    Leaves with fewer than ``max_leaf_size`` elements are concatenated into one 1-D
    buffer per dtype; larger leaves keep a buffer of their own. The inner
    transformation's state lives on those buffers, so an Adam over 1000 small leaves
    carries two state buffers instead of 2000. The result is the same, element for
    element and bit for bit, as running ``inner`` unfused.

    Update rule: ``u <- unpack(inner(pack(u), pack(p)))``.

    Args:
        inner: an elementwise transformation (or one whose cross-leaf statistics are
            global sums, like clipping by global norm).
        max_leaf_size: leaves with at least this many elements are not packed;
            ``None`` packs all leaves.
        max_chunks: the small leaves of one dtype go into at most this many packed
            buffers (see :func:`make_layout`).

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
    if max_leaf_size is not None and max_leaf_size < 0:
        raise ValueError(f"max_leaf_size={max_leaf_size!r} must be >= 0 (or None)")
    if max_chunks < 1:
        raise ValueError(f"max_chunks={max_chunks!r} must be >= 1")

    def init(params: Params) -> FusedState:
        layout = make_layout(params, max_leaf_size, max_chunks)
        return FusedState(inner.init(pack(layout, params)), layout)

    def update(
        updates: Updates, state: FusedState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, FusedState]:
        if not isinstance(state, FusedState):
            raise TypeError(
                f"fuse.update got a {type(state).__name__}, not the FusedState its init made"
            )
        layout = state.layout
        incoming = jax.tree.structure(updates)  # flax Variables come back as Variables
        check_against_layout(layout, updates, "updates")
        if params is not None:
            check_against_layout(layout, params, "params")
        out_dtypes = [jnp.result_type(u) for u in jax.tree.leaves(updates)]
        flat_params = None if params is None else pack(layout, params)
        flat_updates, inner_state = inner.update(
            pack(layout, updates, cast=False), state.inner_state, flat_params, **extra
        )
        out = unpack(layout, flat_updates, out_dtypes)
        if incoming != layout.treedef:
            out = jax.tree.unflatten(incoming, jax.tree.leaves(out))
        return out, FusedState(inner_state, layout)

    tx = GradientTransformation(init, update)
    packed_step = stepping.packed_step_of(inner)
    if stepping.step_of(inner) is None and packed_step is None:
        return tx  # packing the params would cost more than update + apply_updates

    def step(
        grads: Updates,
        state: FusedState,
        params: Params,
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[Params, FusedState]:
        if not isinstance(state, FusedState):
            raise TypeError(
                f"fuse step got a {type(state).__name__}, not the FusedState its init made"
            )
        layout = state.layout
        check_against_layout(layout, grads, "updates")
        check_against_layout(layout, params, "params")
        leaves, incoming = jax.tree.flatten(params)
        if packed_step is not None:
            grad_leaves = jax.tree.leaves(grads)
            done = packed_step(layout, grad_leaves, state.inner_state, leaves, grad_scale, **extra)
            if done is not None:
                new_leaves, inner_state = done
                return jax.tree.unflatten(incoming, new_leaves), FusedState(inner_state, layout)
        new_buffers, inner_state = stepping.step_scaled(
            inner,
            pack(layout, grads, cast=False),
            state.inner_state,
            pack(layout, params),
            grad_scale,
            extra,
        )
        out = unpack(layout, new_buffers, [jnp.result_type(p) for p in leaves])
        if incoming != layout.treedef:
            out = jax.tree.unflatten(incoming, jax.tree.leaves(out))
        return out, FusedState(inner_state, layout)

    return stepping.with_step(tx, step)
