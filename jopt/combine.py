"""Combinators: transformations built from other transformations."""

from __future__ import annotations

import inspect
from typing import Any

from jopt.base import GradientTransformation, OptState, Params, Updates

__all__ = ["chain"]


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


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations in sequence; the state is the tuple of their states.

    Update rule: ``u <- t_n(... t_2(t_1(u)))``, each ``t_i`` with its own state.
    Members may be optax transformations; extra keyword arguments reach every member
    that accepts them.

    Args:
        *transforms: the transformations, applied first to last.

    Returns:
        A transformation whose state is a tuple with one state per member.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.chain(jopt.scale(2.0), jopt.scale_by_learning_rate(0.1))
        >>> tx.update(jnp.array([1.0]), tx.init(None))[0]
        Array([-0.2], dtype=float32)
    """
    for i, tx in enumerate(transforms):
        if not (hasattr(tx, "init") and hasattr(tx, "update")):
            raise TypeError(
                f"chain: argument {i} is a {type(tx).__name__}, not a gradient transformation"
            )
    takes_extra = [accepts_extra_args(tx) for tx in transforms]

    def init(params: Params) -> tuple[OptState, ...]:
        return tuple(tx.init(params) for tx in transforms)

    def update(
        updates: Updates, state: tuple[OptState, ...], params: Params | None = None, **extra: Any
    ) -> tuple[Updates, tuple[OptState, ...]]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = len(state) if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state of {got}: "
                "pass the state that this chain's init returned"
            )
        new_state = []
        for tx, s, extra_ok in zip(transforms, state, takes_extra, strict=True):
            updates, s = call_update(tx, updates, s, params, extra, extra_ok)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)
