"""Plumbing shared by the training wrappers: find a wrapper's state, choose between states.

A wrapper (``multi_steps``, ``apply_if_finite``, ``dynamic_loss_scale``, ...) keeps
the state of the transformation it wraps as a pytree child, so the wrapper's own
state may sit anywhere inside a user's optimizer state: at the top, inside a chain,
inside another wrapper. :func:`find_state` finds it by type, which is how readers
such as :func:`jopt.loss_scale` accept whatever state the user holds.

Wrappers decide per step whether the inner update happens. :func:`select` makes
that choice on device (``jnp.where`` leaf by leaf): no ``lax.cond`` whose predicate
some backends copy to the host, and the same program under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import OptState

__all__ = ["find_state", "select"]

T = TypeVar("T")


def find_state(state: OptState, kind: type[T], reader: str, wrapper: str) -> T:
    """The one state of type ``kind`` inside ``state`` (at any depth).

    Args:
        state: an optimizer state, possibly nested (chains, wrappers, partitions).
        kind: the state class to look for.
        reader: the name of the calling function, for error messages.
        wrapper: the name of the transformation that makes ``kind``, for messages.

    Raises:
        ValueError: if there is no such state, or more than one (then the message
            lists their key paths; pass the one you mean).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.wrapping import find_state
        >>> tx = jopt.chain(jopt.identity(), jopt.apply_if_finite(jopt.sgd(0.1), 3))
        >>> state = tx.init(jnp.zeros(2))
        >>> find_state(state, jopt.ApplyIfFiniteState, "demo", "apply_if_finite").total_notfinite
        Array(0, dtype=int32)
    """
    is_kind = lambda node: isinstance(node, kind)
    found = [
        (path, node)
        for path, node in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_kind)[0]
        if is_kind(node)
    ]
    if not found:
        raise ValueError(
            f"{reader}: the state holds no {kind.__name__}; pass the state of an "
            f"optimizer built with {wrapper}"
        )
    if len(found) > 1:
        where = ", ".join(repr(jtree.key_path_str(path)) for path, _ in found)
        raise ValueError(
            f"{reader}: the state holds {len(found)} {kind.__name__}s (at {where}); "
            "pass the one you mean"
        )
    return found[0][1]


def select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """``on_true`` where the scalar ``pred`` holds, else ``on_false``, leaf by leaf.

    Both trees must have the same structure (static nodes included); each leaf keeps
    the dtype of ``on_false``'s leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.wrapping import select
        >>> select(jnp.asarray(False), {"a": jnp.ones(2)}, {"a": jnp.zeros(2)})
        {'a': Array([0., 0.], dtype=float32)}
    """

    def pick(a: Any, b: Any) -> jax.Array:
        b = jnp.asarray(b)
        return jnp.where(pred, jnp.asarray(a).astype(b.dtype), b)

    return jax.tree.map(pick, on_true, on_false)
