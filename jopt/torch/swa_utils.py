"""The torch door to weight averaging: ``torch.optim.swa_utils``'s EMA and SWA.

torch averages a copy of the model beside the optimizer::

    ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    ...; optimizer.step(); ema_model.update_parameters(model)

In jopt the average lives in the optimizer state, updated after every step from the
parameters that step produces; :func:`jopt.averaged_params` reads it::

    tx = AveragedModel(jopt.torch.SGD(lr=0.1), multi_avg_fn=get_ema_multi_avg_fn(0.999))
    state = tx.init(params)
    ...; updates, state = tx.update(grads, state, params)  # step + update_parameters
    ema_params = jopt.averaged_params(state)

The averaging functions are pure: they return the new average instead of writing
into it. The arithmetic is torch's (``lerp`` for the multi-tensor functions, with
its two formulas for small and large weights), so averages match torch's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jopt import tree as jtree
from jopt.averaging import AverageSpec, averaging
from jopt.base import GradientTransformation, Params
from jopt.hyperparams import UNIT, check_hyperparam

__all__ = [
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
]

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``(averaged_param, current_param, num_averaged) -> new averaged_param``, per leaf."""
MultiAvgFn = Callable[[list, list, jax.Array], Sequence[jax.Array]]
"""``(averaged_params, current_params, num_averaged) -> new averaged_params``, leaf lists."""


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``lerp``: ``start + w (end - start)`` for ``|w| < 0.5``, else from ``end``."""
    ct = jtree.compute_dtype(start.dtype)
    a, b = start.astype(ct), end.astype(ct)
    w = jnp.asarray(weight).astype(ct)
    near_start = a + w * (b - a)
    near_end = b - (b - a) * (jnp.ones((), ct) - w)
    return jtree.cast(jnp.where(jnp.abs(w) < 0.5, near_start, near_end), start.dtype)


def _swa_weight(num_averaged: jax.Array) -> jax.Array:
    """``1 / (n + 1)`` in float32, as torch divides a step-count tensor."""
    return jnp.ones((), jnp.float32) / (num_averaged + 1).astype(jnp.float32)


def _check_decay(decay: float) -> None:
    check_hyperparam("decay", decay, UNIT)


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """torch's EMA over all parameters: ``W_ema <- lerp(W_ema, W, 1 - decay)``.

    Update rule: ``e_1 = p_1`` (the copy :class:`AveragedModel` makes), then
    ``e_t = decay * e_{t-1} + (1 - decay) * p_t`` computed as torch's ``lerp``.

    Args:
        decay: the EMA decay, in [0, 1].

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.torch.swa_utils import get_ema_multi_avg_fn
        >>> get_ema_multi_avg_fn(0.75)([jnp.zeros(1)], [jnp.ones(1)], jnp.asarray(1))
        [Array([0.25], dtype=float32)]
    """
    _check_decay(decay)

    def ema_update(averaged: list, current: list, num_averaged: jax.Array) -> list:
        del num_averaged
        return [_lerp(a, c, 1 - decay) for a, c in zip(averaged, current, strict=True)]

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """torch's SWA over all parameters: the equal-weight mean of every set averaged.

    Update rule: ``a_{n+1} = lerp(a_n, p, 1 / (n + 1))``, i.e. ``a_n = mean(p_1..p_n)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.torch.swa_utils import get_swa_multi_avg_fn
        >>> get_swa_multi_avg_fn()([jnp.ones(1)], [jnp.full(1, 4.0)], jnp.asarray(2))
        [Array([2.], dtype=float32)]
    """

    def swa_update(averaged: list, current: list, num_averaged: jax.Array) -> list:
        weight = _swa_weight(num_averaged)
        return [_lerp(a, c, weight) for a, c in zip(averaged, current, strict=True)]

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """torch's per-parameter EMA: ``decay * e + (1 - decay) * p``.

    Args:
        decay: the EMA decay, in [0, 1].

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.torch.swa_utils import get_ema_avg_fn
        >>> get_ema_avg_fn(0.75)(jnp.zeros(1), jnp.ones(1), jnp.asarray(1))
        Array([0.25], dtype=float32)
    """
    _check_decay(decay)

    def ema_update(averaged: jax.Array, current: jax.Array, num_averaged: jax.Array):
        del num_averaged
        ct = jtree.compute_dtype(averaged.dtype)
        d, one_minus_d = jtree.decay_pair(decay, ct)
        new = d * averaged.astype(ct) + one_minus_d * current.astype(ct)
        return jtree.cast(new, averaged.dtype)

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    """torch's per-parameter SWA: ``a + (p - a) / (n + 1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.torch.swa_utils import get_swa_avg_fn
        >>> get_swa_avg_fn()(jnp.ones(1), jnp.full(1, 4.0), jnp.asarray(2))
        Array([2.], dtype=float32)
    """

    def swa_update(averaged: jax.Array, current: jax.Array, num_averaged: jax.Array):
        ct = jtree.compute_dtype(averaged.dtype)
        a = averaged.astype(ct)
        new = a + (current.astype(ct) - a) / (num_averaged + 1).astype(ct)
        return jtree.cast(new, averaged.dtype)

    return swa_update


def AveragedModel(
    optimizer: GradientTransformation,
    device: Any = None,
    avg_fn: AvgFn | None = None,
    multi_avg_fn: MultiAvgFn | None = None,
    use_buffers: bool = False,
) -> GradientTransformation:
    """torch.optim.swa_utils.AveragedModel: the optimizer, plus an average of its params.

    torch's first argument is the model; here it is the optimizer whose parameters
    are averaged (``init`` takes the params, as for every jopt optimizer). After
    every step, with ``p`` the parameters the step produces and ``n`` the number
    averaged so far (torch's ``update_parameters(model)``)::

        n = 0:   a <- p                                (the first update copies)
        n > 0:   a <- multi_avg_fn(a, p, n)   or   avg_fn(a_i, p_i, n) per leaf
                 (default: the SWA mean, torch's per-parameter formula)

    Before any update the average is the initial params (torch's deep copy). Read
    it with :func:`jopt.averaged_params`.

    Args:
        optimizer: the optimizer whose parameters are averaged.
        device: accepted for porting and ignored (jax places arrays).
        avg_fn: a per-leaf averaging function, e.g. :func:`get_ema_avg_fn`.
        multi_avg_fn: an all-leaves averaging function, e.g. :func:`get_ema_multi_avg_fn`
            or :func:`get_swa_multi_avg_fn`; it returns the new list.
        use_buffers: accepted for porting and ignored: every leaf of the tree the
            optimizer updates is averaged, and state that is not in that tree (batch
            statistics) is not seen, whatever the flag.

    Returns:
        A transformation whose state is a :class:`jopt.AveragedParamsState`.

    References:
        Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
        Generalization", UAI 2018; ``torch.optim.swa_utils.AveragedModel``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.torch.swa_utils import AveragedModel, get_swa_multi_avg_fn
        >>> tx = AveragedModel(jopt.torch.SGD(lr=1.0), multi_avg_fn=get_swa_multi_avg_fn())
        >>> w = jnp.zeros(1)
        >>> state = tx.init(w)
        >>> for _ in range(3):
        ...     updates, state = tx.update(-jnp.ones(1), state, w)  # w: 1, 2, 3
        ...     w = jopt.apply_updates(w, updates)
        >>> jopt.averaged_params(state)
        Array([2.], dtype=float32)
    """
    del device, use_buffers
    if avg_fn is not None and multi_avg_fn is not None:
        raise ValueError("AveragedModel: pass avg_fn or multi_avg_fn, not both")
    if multi_avg_fn is not None:
        multi = multi_avg_fn

        def step(average: Params, current: Params, count: jax.Array) -> Params:
            leaves, treedef = jax.tree.flatten(average)
            new = multi(leaves, jax.tree.leaves(current), count)  # same structure: checked
            if len(new) != len(leaves):
                raise ValueError(
                    f"AveragedModel: multi_avg_fn returned {len(new)} arrays for "
                    f"{len(leaves)} parameters"
                )
            return jax.tree.unflatten(treedef, list(new))

    else:
        one = avg_fn or get_swa_avg_fn()

        def step(average: Params, current: Params, count: jax.Array) -> Params:
            return jax.tree.map(lambda a, c: one(a, c, count), average, current)

    return averaging(optimizer, step, AverageSpec("AveragedModel"), copy_first=True)
