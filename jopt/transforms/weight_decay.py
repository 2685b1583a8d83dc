"""Weight decay: ``u <- u + wd * p``, coupled or decoupled by where it sits in a chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jopt import tree as jtree
from jopt.base import GradientTransformation, Params, Updates, stateless
from jopt.hyperparams import NONNEGATIVE, check_hyperparam

__all__ = ["add_decayed_weights"]

Mask = Any  # a pytree of bools with the structure (or a prefix) of the params, or a function


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
        mask: a tree of bools with the structure of the params, or a prefix of it (or a
            function of the params returning one); ``False`` leaves are not decayed. With
            a mask this is :func:`jopt.masked` around the decay, as in optax.

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

    def decay(updates: Updates, params: Params | None) -> Updates:
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params: call update(updates, state, params)"
            )
        jtree.check_structure(params, updates, names=("params", "updates"))

        def leaf(u: jax.Array, p: jax.Array) -> jax.Array:
            ct = jtree.compute_dtype(jtree.promote(u.dtype, p.dtype))
            new = u.astype(ct) + jtree.scalar(weight_decay, ct) * p.astype(ct)
            return jtree.cast(new, u.dtype)

        return jax.tree.map(leaf, updates, params)

    tx = stateless(decay)
    if mask is None:
        return tx
    from jopt.combine import masked  # combine builds on base only; import here to stay acyclic

    return masked(tx, mask)
