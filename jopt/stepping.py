"""One optimizer step, update and apply together: :func:`step`.

``updates, state = tx.update(grads, state, params)`` followed by
``params = apply_updates(params, updates)`` is how optax spells a step, and jopt
supports it everywhere. :func:`step` does both in one call,
``params, state = jopt.step(tx, grads, state, params)``, like torch's
``optimizer.step()``. The numbers are the same (to an ulp where a kernel runs: XLA
places its fused multiply-adds itself); what changes is that a transformation
that knows how to apply itself can do so in one pass that writes the parameters and
its state in place (:mod:`jopt.kernels`), instead of producing an update that a second
pass adds.

How a transformation takes part (the protocol, for authors of transformations):

- :func:`with_step` attaches a *step function*
  ``(grads, state, params, grad_scale=None, **extra) -> (params, state)`` to a
  transformation. ``grad_scale``, when given, is a scalar that multiplies the gradients
  first (a folded :func:`jopt.clip_by_global_norm`).
- :func:`with_scale` marks a transformation whose update is the incoming updates
  times one scalar, and gives the function that computes that scalar
  ``(updates, state, params) -> (factor, state)``.
- The combinators pass steps through: :func:`jopt.with_hyperparams` and
  :func:`jopt.fuse` step their inner transformation; :func:`jopt.chain` runs its
  members' updates and steps its last member, folding a leading scale (a global-norm
  clip) into that step, so that the clipped gradients are never materialised.
- :func:`with_packed_step` attaches a second step function for transformations that
  :func:`jopt.fuse` wraps: it gets the gradient and parameter leaves as they are and
  the layout of fuse's packed state buffers, and may read each leaf where it lies
  instead of from a packed copy (a kernel call per 64 leaves, see
  :func:`jopt.kernels.step_many`). It returns ``None`` to decline, and fuse then
  packs the leaves and calls the ordinary step.
- Anything without a step function steps as ``update`` then ``apply_updates``.

Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(0.1))
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> params, state = jopt.step(tx, {"w": jnp.full(3, 5.0)}, state, params)
    >>> params["w"]
    Array([0.89999, 0.89999, 0.89999], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax

from jopt.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    apply_updates,
    call_update,
)

__all__ = [
    "PackedStepFn",
    "ScaleFn",
    "StepFn",
    "packed_step_of",
    "scale_grads",
    "scale_of",
    "step",
    "step_of",
    "step_scaled",
    "with_packed_step",
    "with_scale",
    "with_step",
]

_STEP = "__jopt_step__"
_SCALE = "__jopt_scale__"
_PACKED_STEP = "__jopt_packed_step__"


class StepFn(Protocol):
    """A step function: ``(grads, state, params, grad_scale=None, **extra) -> (params, state)``.

    Example: see :func:`with_step`, whose ``sgd_step`` is one.

        >>> import jopt
        >>> jopt.stepping.step_of(jopt.adam(0.1)) is not None
        True
    """

    def __call__(
        self,
        grads: Updates,
        state: OptState,
        params: Params,
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[Params, OptState]: ...


class PackedStepFn(Protocol):
    """A step over :func:`jopt.fuse`'s packed state that takes the leaves as they are:
    ``(layout, grad_leaves, state, param_leaves, grad_scale=None, **extra)`` returns
    ``(new_param_leaves, state)``, or ``None`` to decline.

    ``layout`` is the :class:`jopt.fused.Layout` (leaf ``i`` lives in buffer
    ``layout.slots[i][0]`` at element ``layout.slots[i][1]``); ``state`` is the
    inner transformation's state over the packed buffers.

    Example:
        >>> import jopt
        >>> jopt.stepping.packed_step_of(jopt.adam(0.1)) is None  # fuse is inside adam
        True
    """

    def __call__(
        self,
        layout: Any,
        grad_leaves: list[Any],
        state: OptState,
        param_leaves: list[Any],
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[list[Any], OptState] | None: ...


ScaleFn = Callable[[Updates, OptState, "Params | None"], tuple[jax.Array, OptState]]


def _tagged(tx: GradientTransformation, name: str, value: Any) -> GradientTransformation:
    # The tag lives on a fresh wrapper of ``update``: the transformation stays a plain
    # (init, update) pair that optax and flax accept, and tagging never mutates a
    # function somebody else owns.
    # functools.wraps also copies the wrapped function's __dict__: earlier tags stay.
    @functools.wraps(tx.update)
    def update(updates: Updates, state: OptState, params: Params | None = None, **extra: Any):
        return tx.update(updates, state, params, **extra)

    setattr(update, name, value)
    return GradientTransformation(tx.init, update)


def with_step(tx: GradientTransformation, step_fn: StepFn) -> GradientTransformation:
    """``tx`` with a step function that applies it to the parameters (see the module).

    The step function must give the same parameters and state as ``tx.update``
    followed by :func:`jopt.apply_updates` (to rounding).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> sgd = jopt.scale(-0.1)
        >>> def sgd_step(grads, state, params, grad_scale=None, **extra):
        ...     g = grads if grad_scale is None else grads * grad_scale
        ...     return params - 0.1 * g, state
        >>> tx = jopt.stepping.with_step(sgd, sgd_step)
        >>> jopt.step(tx, jnp.ones(2), tx.init(None), jnp.zeros(2))[0]
        Array([-0.1, -0.1], dtype=float32)
    """
    return _tagged(tx, _STEP, step_fn)


def with_packed_step(tx: GradientTransformation, step_fn: PackedStepFn) -> GradientTransformation:
    """``tx`` with a step for :func:`jopt.fuse` that reads unpacked leaves (see the module).

    It must give the same parameters and state as fuse's packed step would (to
    rounding), or return ``None``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> sgd = jopt.scale(-0.1)
        >>> def sgd_packed_step(layout, grads, state, params, grad_scale=None, **extra):
        ...     s = 1.0 if grad_scale is None else grad_scale
        ...     return [p - 0.1 * s * g for p, g in zip(params, grads)], state
        >>> tx = jopt.fuse(jopt.stepping.with_packed_step(sgd, sgd_packed_step))
        >>> params = {"a": jnp.zeros(2), "b": jnp.ones(1)}
        >>> jopt.step(tx, {"a": jnp.ones(2), "b": jnp.ones(1)}, tx.init(params), params)[0]
        {'a': Array([-0.1, -0.1], dtype=float32), 'b': Array([0.9], dtype=float32)}
    """
    return _tagged(tx, _PACKED_STEP, step_fn)


def packed_step_of(tx: GradientTransformation) -> PackedStepFn | None:
    """The step attached to ``tx`` by :func:`with_packed_step`, or ``None``.

    Example:
        >>> import jopt
        >>> jopt.stepping.packed_step_of(jopt.scale(2.0)) is None
        True
    """
    return getattr(tx.update, _PACKED_STEP, None)


def with_scale(tx: GradientTransformation, scale_fn: ScaleFn) -> GradientTransformation:
    """Marks ``tx`` as ``updates * scale_fn(updates, state, params)[0]``, for folding.

    Example:
        >>> import jopt
        >>> jopt.stepping.scale_of(jopt.clip_by_global_norm(1.0)) is not None
        True
    """
    return _tagged(tx, _SCALE, scale_fn)


def step_of(tx: GradientTransformation) -> StepFn | None:
    """The step function attached to ``tx``, or ``None``.

    Example:
        >>> import jopt
        >>> jopt.stepping.step_of(jopt.scale(2.0)) is None
        True
    """
    return getattr(tx.update, _STEP, None)


def scale_of(tx: GradientTransformation) -> ScaleFn | None:
    """The scale function attached to ``tx`` by :func:`with_scale`, or ``None``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> scale = jopt.stepping.scale_of(jopt.clip_by_global_norm(1.0))
        >>> float(scale({"w": jnp.array([3.0, 4.0])}, None, None)[0])  # 1 / ||(3, 4)||
        0.2
    """
    return getattr(tx.update, _SCALE, None)


def scale_grads(grads: Updates, factor: jax.Array) -> Updates:
    """``grads * factor`` leaf by leaf, rounded as :func:`jopt.scale` rounds.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.stepping.scale_grads({"w": jnp.array([2.0, 4.0])}, jnp.float32(0.5))
        {'w': Array([1., 2.], dtype=float32)}
    """
    from jopt.transforms.scaling import _scale_tree  # transforms import stepping's users

    return _scale_tree(grads, factor)


def step_scaled(
    tx: GradientTransformation,
    grads: Updates,
    state: OptState,
    params: Params,
    grad_scale: jax.Array | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[Params, OptState]:
    """:func:`step` with the gradients first multiplied by ``grad_scale`` (if given).

    Combinators call it to step their members; ``extra`` is the dict of extra keyword
    arguments for ``update``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.sgd(1.0)
        >>> jopt.stepping.step_scaled(tx, jnp.ones(2), tx.init(None), jnp.zeros(2), 0.5)[0]
        Array([-0.5, -0.5], dtype=float32)
    """
    extra = extra or {}
    step_fn = step_of(tx)
    if step_fn is not None:
        return step_fn(grads, state, params, grad_scale, **extra)
    if grad_scale is not None:
        grads = scale_grads(grads, grad_scale)
    updates, state = call_update(tx, grads, state, params, extra)
    return apply_updates(params, updates), state


def step(
    tx: GradientTransformation,
    grads: Updates,
    state: OptState,
    params: Params,
    **extra: Any,
) -> tuple[Params, OptState]:
    """One optimizer step: ``tx.update`` and :func:`jopt.apply_updates` in one call.

    Update rule: ``u, s <- tx.update(g, s, p);  p <- p + u``, returned as ``(p, s)``.
    The result equals that pair of calls (to rounding: a fused kernel may round
    differently from XLA's loop in the last bit). :func:`jopt.adam`, :func:`jopt.adamw`,
    :func:`jopt.amsgrad`, :func:`jopt.rmsprop`, :func:`jopt.adagrad`,
    :func:`jopt.adadelta`, :func:`jopt.sgd` and :func:`jopt.torch.SGD` with momentum (or
    Nesterov), :func:`jopt.torch.RMSprop`, :func:`jopt.torch.Adagrad`,
    :func:`jopt.torch.Adadelta`, :func:`jopt.torch.Adam` and :func:`jopt.torch.AdamW`
    (their plain forms; also after :func:`jopt.clip_by_global_norm` in a chain) run
    fused in-place kernels on CPU float32 parameters (:mod:`jopt.kernels`: one call per
    64 leaves, each leaf read where it lies, no packing); under ``jit`` with ``params``
    and ``state`` donated, the step then reads and writes each parameter and state
    element once. Any transformation, jopt's or optax's, works.

    The kernel pays where the optimizer step dominates; in a whole training step on a
    2-core CPU it has not been shown to beat ``update`` + ``apply_updates`` (see the
    README's Benchmarks). Returning ``params`` and ``state`` in the order the step
    takes them lets jax give each output its own donated input buffer.

    Args:
        tx: the optimizer.
        grads: the gradients, with the structure of ``params``.
        state: ``tx``'s state.
        params: the parameters.
        **extra: extra arguments for ``tx.update`` (e.g. ``value=loss``).

    Returns:
        ``(new_params, new_state)``.

    References:
        torch ``Optimizer.step``; optax ``apply_updates``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.adam(0.1)
        >>> w = jnp.zeros(2)
        >>> state = tx.init(w)
        >>> grad = jax.grad(lambda w: jnp.sum((w - 3.0) ** 2))
        >>> w, state = jax.jit(jopt.step, static_argnums=0)(tx, grad(w), state, w)
        >>> w
        Array([0.09999934, 0.09999934], dtype=float32)
    """
    return step_scaled(tx, grads, state, params, None, extra)
