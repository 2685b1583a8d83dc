"""Weight decay: ``u <- u + wd * p``, coupled or decoupled by where it sits in a chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.base import EmptyState, GradientTransformation, Params, Updates
from jopt.hyperparams import NONNEGATIVE, check_hyperparam

__all__ = ["add_decayed_weights"]

Mask = Any  # a pytree of Python bools with the structure of the params, or a function of them


def resolve_mask(mask: Mask | Callable[[Params], Mask], params: Params) -> list[bool]:
    """Turns a mask (tree of bools, or a function of the params) into one bool per leaf."""
    tree = mask(params) if callable(mask) else mask
    jtree.check_structure(params, tree, names=("params", "mask"), shapes=False)
    flags = []
    for path, flag in zip(jtree.paths(tree), jax.tree.leaves(tree), strict=True):
        if not isinstance(flag, (bool, jnp.bool_)) and not (
            hasattr(flag, "dtype") and flag.dtype == jnp.bool_ and jnp.ndim(flag) == 0
        ):
            raise TypeError(f"mask leaf at '{path}' must be a bool, got {flag!r}")
        flags.append(bool(flag))
    return flags


def add_decayed_weights(
    weight_decay: float | jax.Array = 0.0,
    mask: Mask | Callable[[Params], Mask] | None = None,
) -> GradientTransformation:
    """Adds ``weight_decay * params`` to the updates.

    Update rule: ``u <- u + wd * p`` (for the leaves the mask selects).

    Where it sits in a chain decides which weight decay it is:

    - before the adaptive scaling (torch's ``SGD``/``Adam`` ``weight_decay``): coupled,
      an L2 penalty added to the gradient;
    - after it, just before :func:`scale_by_learning_rate` (``adamw``): decoupled,
      ``p <- p - lr * (direction + wd * p)``, which is torch's ``AdamW`` step
      ``p <- p * (1 - lr * wd) - lr * direction``.

    Args:
        weight_decay: the coefficient, >= 0.
        mask: a tree of bools with the structure of the params (or a function of the
            params returning one); ``False`` leaves are not decayed.

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx = jopt.add_decayed_weights(0.1, mask={"w": True, "b": False})
        >>> tx.update({"w": jnp.zeros(1), "b": jnp.zeros(1)}, tx.init(params), params)[0]
        {'b': Array([0.], dtype=float32), 'w': Array([0.1], dtype=float32)}
    """
    check_hyperparam("weight_decay", weight_decay, NONNEGATIVE)

    def init(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: EmptyState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, EmptyState]:
        del extra
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params: call update(updates, state, params)"
            )
        jtree.check_structure(params, updates, names=("params", "updates"))
        flags = None if mask is None else resolve_mask(mask, params)
        treedef = jax.tree.structure(updates)
        leaves_u = jax.tree.leaves(updates)
        leaves_p = treedef.flatten_up_to(params)
        out = []
        for i, (u, p) in enumerate(zip(leaves_u, leaves_p, strict=True)):
            if flags is not None and not flags[i]:
                out.append(u)
                continue
            ct = jtree.compute_dtype(jtree.promote(u.dtype, p.dtype))
            new = u.astype(ct) + jtree.scalar(weight_decay, ct) * p.astype(ct)
            out.append(jtree.cast(new, u.dtype))
        return jax.tree.unflatten(treedef, out), state

    return GradientTransformation(init, update)
