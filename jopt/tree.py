"""Pytree helpers: key paths, structure checks, norms, casting and moment arithmetic.

The update rules of jopt read like their papers because the arithmetic lives here:
``update_moment`` is an exponential moving average, ``bias_correction`` undoes its
zero initialisation, and every helper computes in at least float32 and casts back,
so half-precision trees never overflow on the way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SplitScalar",
    "TreeMismatchError",
    "all_have_dtype",
    "bias_correction",
    "cast",
    "cast_tree",
    "check_structure",
    "compute_dtype",
    "decay_pair",
    "full_like",
    "global_norm",
    "is_flax_variable",
    "is_traced",
    "key_path_str",
    "map_many",
    "paths",
    "promote",
    "safe_increment",
    "scalar",
    "strip_flax_variables",
    "update_moment",
    "zeros_like",
]

_KEY_SEP = "/"


def key_path_str(path: Sequence[Any]) -> str:
    """Renders a jax key path as ``/``-joined dict keys, attribute names and indices.

    Example:
        >>> import jax
        >>> import jopt
        >>> (path, _), = jax.tree_util.tree_flatten_with_path({"layers": [0.0, {"w": 1.0}]})[0][1:]
        >>> jopt.tree.key_path_str(path)
        'layers/1/w'
    """
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:  # a custom key type: its own string form
            parts.append(str(entry).strip(".[]'\""))
    return _KEY_SEP.join(parts)


def paths(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list[str]:
    """Returns the ``/``-joined key path of every leaf of ``tree``, in leaf order.

    A flax ``nnx.Variable`` counts as a leaf, so a model's kernel reads ``"kernel"``,
    not ``"kernel/value"``.

    Example:
        >>> import jopt
        >>> jopt.tree.paths({"b": 1.0, "a": (2.0, 3.0)})
        ['a/0', 'a/1', 'b']
    """

    def leaf(x: Any) -> bool:
        return is_flax_variable(x) or (is_leaf is not None and is_leaf(x))

    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=leaf)
    return [key_path_str(p) for p, _ in flat]


class TreeMismatchError(ValueError):
    """Two trees that must agree (updates, params, state) do not; names the key path."""


def _describe(leaf: Any) -> str:
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    if shape is None:
        return type(leaf).__name__
    return f"{jnp.dtype(dtype).name}{list(shape)}"


def check_structure(
    reference: Any,
    other: Any,
    *,
    names: tuple[str, str] = ("reference", "other"),
    shapes: bool = True,
    dtypes: bool = False,
) -> None:
    """Raises :class:`TreeMismatchError` naming the first key path where two trees differ.

    Compares the tree structure (a key missing from one side, an extra key, a leaf in
    one tree where the other has a subtree), then, leaf by leaf, the shapes and
    optionally the dtypes. Runs on abstract values, so under ``jit`` it raises at
    trace time and costs nothing per step.

    Args:
        reference: the tree that defines what is expected (e.g. the parameters).
        other: the tree to check against it (e.g. the updates).
        names: how the two trees are called in the message.
        shapes: compare leaf shapes.
        dtypes: compare leaf dtypes.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"dense": {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}}
        >>> grads = {"dense": {"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}}
        >>> jopt.tree.check_structure(params, grads, names=("params", "updates"))
        Traceback (most recent call last):
        ...
        jopt.tree.TreeMismatchError: updates and params differ at 'dense/w': shape [3, 2] in
        updates, [2, 3] in params
    """
    ref_leaves, ref_def = jax.tree_util.tree_flatten(reference)
    other_leaves, other_def = jax.tree_util.tree_flatten(other)
    a, b = names
    ref_def_any: Any = ref_def
    if ref_def_any != other_def:
        ref_paths = paths(reference)
        other_paths = paths(other)
        if ref_paths == other_paths:
            raise TreeMismatchError(
                f"{b} and {a} have the same key paths but different container types: "
                f"{other_def} in {b}, {ref_def} in {a}"
            )
        other_set, ref_set = set(other_paths), set(ref_paths)
        for path in ref_paths:
            if path not in other_set:
                inside = [p for p in other_paths if p.startswith(path + _KEY_SEP)]
                if inside:
                    raise TreeMismatchError(
                        f"{b} has a subtree at '{path}' (e.g. '{inside[0]}') where {a} has a leaf"
                    )
                raise TreeMismatchError(f"{b} is missing '{path}', which {a} has")
        for path in other_paths:
            if path not in ref_set:
                inside = [p for p in ref_paths if p.startswith(path + _KEY_SEP)]
                if inside:
                    raise TreeMismatchError(
                        f"{b} has a leaf at '{path}' where {a} has a subtree (e.g. '{inside[0]}')"
                    )
                raise TreeMismatchError(f"{b} has '{path}', which {a} does not have")
        raise TreeMismatchError(f"{b} and {a} differ in structure: {other_def} vs {ref_def}")
    if not (shapes or dtypes):
        return
    for i, (x, y) in enumerate(zip(ref_leaves, other_leaves, strict=True)):
        x_shape, y_shape = np.shape(x), np.shape(y)
        bad_shape = shapes and x_shape != y_shape
        bad_dtype = dtypes and jnp.result_type(x) != jnp.result_type(y)
        if bad_shape or bad_dtype:
            path = paths(reference)[i]
            what = "shape" if bad_shape else "dtype"
            if bad_shape:
                got, want = list(y_shape), list(x_shape)
            else:
                got, want = jnp.result_type(y).name, jnp.result_type(x).name
            raise TreeMismatchError(
                f"{b} and {a} differ at '{path}': {what} {got} in {b}, {want} in {a}"
            )


def promote(*dtypes: Any) -> np.dtype:
    """The dtype that holds all of ``dtypes`` (jax's standard promotion, even in strict mode).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.promote(jnp.bfloat16, jnp.float32)
        dtype('float32')
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(*(jnp.dtype(d) for d in dtypes)))


def all_have_dtype(leaves: Sequence[Any], dtype: Any) -> bool:
    """Whether every leaf's dtype is ``dtype``: an array's (or tracer's) own, anything
    else's as ``jnp.result_type`` gives it. Cheap on thousands of leaves, which a
    step's trace checks before it takes a kernel.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.all_have_dtype([jnp.ones(2), jnp.zeros(3)], jnp.float32)
        True
        >>> jopt.tree.all_have_dtype([jnp.ones(2), jnp.arange(3)], jnp.float32)
        False
    """
    want = jnp.dtype(dtype)
    return all(
        (x.dtype if isinstance(x, jax.Array | np.ndarray) else jnp.result_type(x)) == want
        for x in leaves
    )


def compute_dtype(dtype: Any) -> np.dtype:
    """The dtype jopt does arithmetic in for values stored as ``dtype``: at least float32.

    Half precision (float16, bfloat16) computes in float32 and is cast back once, so
    finite inputs never produce an Inf or NaN from under- or overflow of an
    intermediate. float32, float64 and complex types compute as themselves.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.compute_dtype(jnp.bfloat16), jopt.tree.compute_dtype(jnp.float64)
        (dtype('float32'), dtype('float64'))
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """Casts one array, saturating finite values that a floating downcast would overflow.

    A float32 value of 1e5 cast to float16 would become Inf; here it becomes the
    largest finite float16. Genuine Infs and NaNs in ``x`` are kept, so bad inputs
    stay visible. Casts to a wider or equal type are plain ``astype``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.cast(jnp.array([1e5, -jnp.inf]), jnp.float16).tolist()
        [65504.0, -inf]
    """
    dtype = jnp.dtype(dtype)
    x = jnp.asarray(x)
    if x.dtype == dtype:
        return x
    if (
        jnp.issubdtype(dtype, jnp.floating)
        and jnp.issubdtype(x.dtype, jnp.floating)
        and jnp.finfo(dtype).max < jnp.finfo(x.dtype).max
    ):
        big = jnp.asarray(jnp.finfo(dtype).max, x.dtype)
        x = jnp.where(jnp.isfinite(x), jnp.clip(x, -big, big), x)
    return x.astype(dtype)


def cast_tree(tree: Any, dtype: Any | None) -> Any:
    """Casts every leaf with :func:`cast`; ``dtype=None`` leaves the tree unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.cast_tree({"w": jnp.ones(2)}, jnp.bfloat16)
        {'w': Array([1, 1], dtype=bfloat16)}
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: cast(x, dtype), tree)


def zeros_like(tree: Any, dtype: Any | None = None) -> Any:
    """A tree of zeros with the structure and shapes of ``tree`` (and its dtypes, or ``dtype``).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.zeros_like({"w": jnp.ones(2)})
        {'w': Array([0., 0.], dtype=float32)}
    """
    return jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), dtype or jnp.result_type(x)), tree)


def full_like(tree: Any, value: Any, dtype: Any | None = None) -> Any:
    """A tree filled with ``value`` (a scalar, possibly traced) with the shapes of ``tree``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.full_like({"w": jnp.ones(2)}, 0.1)
        {'w': Array([0.1, 0.1], dtype=float32)}
    """

    def fill(x: Any) -> jax.Array:
        leaf_dtype = dtype or jnp.result_type(x)
        return jnp.full(jnp.shape(x), jnp.asarray(value).astype(leaf_dtype), leaf_dtype)

    return jax.tree.map(fill, tree)


class SplitScalar:
    """A hyperparameter as ``hi + lo``: two floats of the stored dtype, for twice the digits.

    With float32 storage (jax's default), ``0.999`` rounds to ``0.99900001``, and
    ``1 - b2`` computed from it is 1.3e-5 off in relative terms (0.14% for
    ``b2=0.99999``), where optax and torch compute ``1 - b2`` in double precision.
    Keeping the rounding error in ``lo`` lets :func:`decay_pair` recover the exact
    ``1 - b2``. Everywhere else the value behaves as its ``hi`` part, an ordinary jax
    array (``jnp.asarray(x)`` and arithmetic use ``hi``), so user-written ``build``
    functions of :func:`jopt.with_hyperparams` can treat it as a number.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import jopt
        >>> hi = np.float32(0.999)
        >>> b2 = jopt.tree.SplitScalar(jnp.asarray(hi), jnp.asarray(np.float32(0.999 - float(hi))))
        >>> float(jopt.tree.decay_pair(b2, jnp.float32)[1]) == float(np.float32(1 - 0.999))
        True
        >>> float(1 - jnp.asarray(hi)) == float(np.float32(1 - 0.999))  # the plain float32 way
        False
    """

    __slots__ = ("hi", "lo")

    def __init__(self, hi: jax.Array, lo: jax.Array):
        self.hi = hi
        self.lo = lo

    def __jax_array__(self) -> jax.Array:
        return self.hi

    def __getitem__(self, index: Any) -> SplitScalar:
        return SplitScalar(self.hi[index], self.lo[index])

    def __len__(self) -> int:
        return len(self.hi)

    def __float__(self) -> float:
        return float(self.hi) + float(self.lo)

    def __repr__(self) -> str:
        return f"SplitScalar(hi={self.hi!r}, lo={self.lo!r})"

    @property
    def dtype(self) -> np.dtype:
        return self.hi.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.hi.shape

    @property
    def ndim(self) -> int:
        return self.hi.ndim

    def astype(self, dtype: Any) -> jax.Array:
        return self.hi.astype(dtype)

    def __neg__(self) -> jax.Array:
        return -self.hi

    def __add__(self, other: Any) -> jax.Array:
        return self.hi + other

    def __radd__(self, other: Any) -> jax.Array:
        return other + self.hi

    def __sub__(self, other: Any) -> jax.Array:
        return self.hi - other

    def __rsub__(self, other: Any) -> jax.Array:
        return other - self.hi

    def __mul__(self, other: Any) -> jax.Array:
        return self.hi * other

    def __rmul__(self, other: Any) -> jax.Array:
        return other * self.hi

    def __truediv__(self, other: Any) -> jax.Array:
        return self.hi / other

    def __rtruediv__(self, other: Any) -> jax.Array:
        return other / self.hi

    def __pow__(self, other: Any) -> jax.Array:
        return self.hi**other

    def __rpow__(self, other: Any) -> jax.Array:
        return other**self.hi


def is_traced(value: Any) -> bool:
    """Whether ``value`` (a number, an array or a :class:`SplitScalar`) is a jax tracer.

    Example:
        >>> import jax
        >>> import jopt
        >>> jopt.tree.is_traced(1.0), jax.jit(lambda x: jopt.tree.is_traced(x) * x)(1.0)
        (False, Array(1., dtype=float32, weak_type=True))
    """
    if isinstance(value, SplitScalar):
        value = value.hi
    return isinstance(value, jax.core.Tracer)


def scalar(value: Any, dtype: Any) -> jax.Array:
    """Casts a (possibly traced) scalar hyperparameter to the dtype an update computes in.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.scalar(0.1, jnp.bfloat16)
        Array(0.100098, dtype=bfloat16)
    """
    if isinstance(value, SplitScalar):
        hi = value.hi
        if jnp.finfo(dtype).bits > jnp.finfo(hi.dtype).bits:
            return hi.astype(dtype) + value.lo.astype(dtype)
        return hi.astype(dtype)
    return jnp.asarray(value).astype(dtype)


def decay_pair(decay: Any, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(decay, 1 - decay)`` as ``dtype`` scalars, ``1 - decay`` taken before rounding.

    ``1 - 0.999`` computed in float32 from a float32 0.999 is 1.3e-5 off in relative
    terms; computed from the Python float or the float64 hyperparameter first and
    rounded once, it is exact to the last bit, as optax and torch have it.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.decay_pair(0.999, jnp.float32)
        (Array(0.999, dtype=float32), Array(0.001, dtype=float32))
    """
    dtype = jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype
    if isinstance(decay, (int, float)):
        return jnp.asarray(decay, dtype), jnp.asarray(1 - decay, dtype)
    if isinstance(decay, SplitScalar):
        one = jnp.ones((), decay.hi.dtype)
        return scalar(decay, dtype), ((one - decay.hi) - decay.lo).astype(dtype)
    d = jnp.asarray(decay)
    if not jnp.issubdtype(d.dtype, jnp.floating):
        d = d.astype(dtype)
    return d.astype(dtype), (jnp.ones((), d.dtype) - d).astype(dtype)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves together: ``sqrt(sum_i sum(x_i ** 2))``.

    Squares are summed in at least float32 (so half-precision gradients do not
    overflow); the result is float32, or float64 when any leaf is float64.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})
        Array(5., dtype=float32)
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    dtype = promote(*(compute_dtype(jnp.result_type(x)) for x in leaves))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    total = sum(_sum_squares(x, dtype) for x in leaves)
    return jnp.sqrt(total)


def _sum_squares(x: jax.Array, dtype: Any) -> jax.Array:
    x = jnp.asarray(x)
    x = x.astype(compute_dtype(x.dtype))
    return jnp.sum(jnp.real(x * jnp.conj(x))).astype(dtype)


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of the ``order``-th power of the updates.

    Update rule: ``m <- decay * m + (1 - decay) * g ** order``, computed in
    ``compute_dtype`` and stored in the dtype of ``m``. For complex ``g`` and even
    ``order``, ``|g| ** order`` is used.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.update_moment(jnp.array([2.0]), jnp.array([1.0]), 0.75, order=2)
        Array([1.75], dtype=float32)
    """

    def ema(g: jax.Array, m: jax.Array) -> jax.Array:
        ct = compute_dtype(promote(g.dtype, m.dtype))
        g = g.astype(ct)
        if order == 1:
            power = g
        elif jnp.iscomplexobj(g) and order % 2 == 0:
            power = jnp.real(g * jnp.conj(g)) ** (order // 2)
        else:
            power = g**order
        d, one_minus_d = decay_pair(decay, power.dtype)
        new = one_minus_d * power + d * m.astype(power.dtype)
        return cast(new, m.dtype)

    return jax.tree.map(ema, updates, moments)


def bias_correction(moments: Any, decay: Any, count: jax.Array) -> Any:
    """Undoes the zero initialisation of an EMA: ``m / (1 - decay ** count)``.

    ``decay ** count`` is computed in the precision of the hyperparameter (float32 or
    float64), never in half precision, where it would round to 1 and divide by 0.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.bias_correction(jnp.array([0.1]), 0.9, jnp.asarray(1, jnp.int32))
        Array([1.], dtype=float32)
    """
    d = jnp.asarray(decay)
    if not jnp.issubdtype(d.dtype, jnp.floating):
        d = d.astype(jnp.float32)
    correction = 1 - d ** count.astype(d.dtype)

    def correct(m: jax.Array) -> jax.Array:
        ct = compute_dtype(m.dtype)
        return (m.astype(ct) / correction.astype(ct)).astype(m.dtype)

    return jax.tree.map(correct, moments)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 step counter, saturating instead of wrapping to negative.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.safe_increment(jnp.asarray(2**31 - 1, jnp.int32))
        Array(2147483647, dtype=int32)
    """
    limit = jnp.iinfo(count.dtype).max
    return jnp.where(count < limit, count + jnp.ones((), count.dtype), count)


def map_many(fn: Callable[..., tuple[Any, ...]], n: int, *trees: Any) -> tuple[Any, ...]:
    """Maps ``fn`` over the leaves of ``trees`` when it returns ``n`` values per leaf.

    Returns ``n`` trees with the structure of the first tree: the way one
    elementwise kernel produces the update and every new state moment together.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.tree.map_many(lambda x: (x + x, x * x), 2, {"a": jnp.ones(1) * 3})
        ({'a': Array([6.], dtype=float32)}, {'a': Array([9.], dtype=float32)})
    """
    treedef: Any = jax.tree.structure(trees[0])
    columns = [treedef.flatten_up_to(t) for t in trees]
    results = [fn(*leaves) for leaves in zip(*columns, strict=True)]
    if any(len(r) != n for r in results):
        raise ValueError(f"map_many: fn must return {n} values per leaf")
    return tuple(treedef.unflatten([r[i] for r in results]) for i in range(n))


def is_flax_variable(x: Any) -> bool:
    """Whether ``x`` is a flax ``nnx.Variable`` (checked without importing flax).

    flax's ``nnx.Optimizer`` hands the optimizer the model's variables at ``init`` and
    plain arrays at ``update``; jopt looks through the wrapper so both match.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt import tree
        >>> tree.is_flax_variable(jnp.zeros(2))
        False
    """
    variable = getattr(sys.modules.get("flax.nnx"), "Variable", None)
    return variable is not None and isinstance(x, variable)


def strip_flax_variables(tree: Any) -> Any:
    """``tree`` with every flax ``nnx.Variable`` replaced by the array it holds.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt import tree
        >>> tree.strip_flax_variables({"w": jnp.ones(2)})
        {'w': Array([1., 1.], dtype=float32)}
    """
    if "flax.nnx" not in sys.modules:
        return tree

    def value(x: Any) -> Any:
        if not is_flax_variable(x):
            return x
        return x.get_value() if hasattr(x, "get_value") else x.value

    return jax.tree.map(value, tree, is_leaf=is_flax_variable)
