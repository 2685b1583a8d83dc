"""The gradient transformation and the types every part of jopt builds on.

A gradient transformation is a pair of pure functions::

    init(params)                                  -> state
    update(updates, state, params=None, **extra)  -> (updates, new_state)

``updates`` enter as gradients and leave as the deltas to add to the parameters
with :func:`apply_updates`. The pair is a ``NamedTuple`` with the same two fields
as optax's, so jopt and optax transformations mix in either library's ``chain``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Params = Any
"""A pytree of arrays: the parameters being optimized."""
Updates = Any
"""A pytree of arrays with the structure of the parameters: gradients or deltas."""
OptState = Any
"""A pytree of arrays (and static metadata) carried between steps."""
Schedule = Callable[[jax.Array], jax.Array]
"""A function from the step count (an int32 scalar) to a scalar value."""
ScalarOrSchedule = float | jax.Array | Schedule
"""A hyperparameter given either as a constant or as a :data:`Schedule`."""


class TransformInitFn(Protocol):
    """Builds the initial state from the parameters."""

    def __call__(self, params: Params) -> OptState:
        """Returns the state for ``params`` (used for shapes and dtypes)."""


class TransformUpdateFn(Protocol):
    """Turns incoming updates into outgoing updates and a new state."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, OptState]:
        """Returns ``(new_updates, new_state)``; unused ``extra`` arguments are ignored."""


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair: the unit every jopt optimizer is made of.

    ``init(params) -> state`` and ``update(updates, state, params=None, **extra) ->
    (updates, state)``. Every jopt transformation accepts and ignores extra keyword
    arguments it does not use, so one call site can feed, say, the current loss to a
    chain whose members need it.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.GradientTransformation(
        ...     init=lambda params: (),
        ...     update=lambda updates, state, params=None, **extra: (updates, state),
        ... )
        >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
        Array([1., 1.], dtype=float32)
    """

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


def stateless(fn: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transformation without state from a function ``fn(updates, params) -> updates``.

    Update rule: ``u <- fn(u, p)``; the state is :class:`EmptyState`, and extra keyword
    arguments to ``update`` are ignored.

    Args:
        fn: maps the updates (and the params, ``None`` when not passed) to new updates.

    References:
        optax ``stateless``.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))
        >>> tx.update(jnp.array([0.3, -2.0]), tx.init(None))[0]
        Array([ 1., -1.], dtype=float32)
    """

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmptyState]:
        del extra
        return fn(updates, params), state

    return GradientTransformation(init, update)


def identity() -> GradientTransformation:
    """Passes updates through unchanged; keeps no state.

    Update rule: ``u <- u``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.identity()
        >>> tx.update({"w": jnp.array([1.0, -2.0])}, tx.init(None))[0]
        {'w': Array([ 1., -2.], dtype=float32)}
    """
    return stateless(lambda updates, params: updates)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Adds updates to parameters, keeping each parameter's dtype.

    Update rule: ``p <- p + u``, computed in at least float32 and rounded once to the
    dtype of ``p`` (so a bfloat16 parameter with a float32 update stays bfloat16 and
    is rounded only once). ``None`` leaves (e.g. frozen parts of a model) are kept.

    Args:
        params: the current parameters.
        updates: a tree with the structure of ``params``, as returned by ``update``.

    Returns:
        The new parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"w": jnp.array([1.0, 2.0], dtype=jnp.bfloat16)}
        >>> jopt.apply_updates(params, {"w": jnp.array([0.5, -1.0])})
        {'w': Array([1.5, 1], dtype=bfloat16)}
    """
    from jopt import tree as _tree  # tree imports base; keep the import graph acyclic

    _tree.check_structure(params, updates, names=("params", "updates"))

    def add(p: jax.Array, u: jax.Array) -> jax.Array:
        p = jnp.asarray(p)
        u = jnp.asarray(u)
        if p.dtype == u.dtype and _tree.compute_dtype(p.dtype) == p.dtype:
            return p + u
        dtype = _tree.compute_dtype(_tree.promote(p.dtype, u.dtype))
        return (p.astype(dtype) + u.astype(dtype)).astype(p.dtype)

    return jax.tree.map(add, params, updates)


def accepts_extra_args(tx: GradientTransformation) -> bool:
    """Whether ``tx.update`` takes ``**extra`` (jopt's do; plain optax ones may not)."""
    try:
        signature = inspect.signature(tx.update)
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def call_update(
    tx: GradientTransformation,
    updates: Updates,
    state: OptState,
    params: Params | None,
    extra: dict[str, Any],
    takes_extra: bool | None = None,
) -> tuple[Updates, OptState]:
    """Calls ``tx.update``, passing ``extra`` only if it accepts extra arguments."""
    if takes_extra is None:
        takes_extra = accepts_extra_args(tx)
    if takes_extra:
        return tx.update(updates, state, params, **extra)
    return tx.update(updates, state, params)
