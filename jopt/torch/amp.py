"""The torch door to dynamic loss scaling: ``torch.amp.GradScaler``'s names and defaults.

torch's ``GradScaler`` is a stateful object beside the optimizer; in jopt the scale
and its counters live in the optimizer state (see :func:`jopt.dynamic_loss_scale`),
so :class:`GradScaler` is an immutable configuration that wraps an optimizer and
reads that state. The torch cycle maps onto it as follows::

    # torch                                     # jopt
    scaler = torch.amp.GradScaler("cuda")       scaler = jopt.torch.amp.GradScaler("cuda")
    opt = torch.optim.AdamW(model.parameters()) tx = scaler.wrap(jopt.torch.AdamW())
                                                state = tx.init(params)
    opt.zero_grad()                             # (nothing: gradients are fresh values)
    loss = loss_fn(model(x), y)                 def scaled(params):
    scaler.scale(loss).backward()                   loss = loss_fn(model(params, x), y)
                                                    return scaler.scale(loss, state), loss
                                                grads, loss = jax.grad(scaled, has_aux=True)(params)
    scaler.unscale_(opt); clip_grad_norm_(...)  # clip inside wrap: wrap(chain(clip, opt))
    scaler.step(opt)                            updates, state = tx.update(grads, state, params)
    scaler.update()                             params = jopt.apply_updates(params, updates)
    scaler.get_scale()                          scaler.get_scale(state)

``step`` and ``update`` are one call, inside ``jit``, with no host sync. For gradient
accumulation (torch: several ``scale(loss).backward()`` before one ``step``), put the
scaler inside :func:`jopt.multi_steps`: ``jopt.multi_steps(scaler.wrap(opt), k)``
accumulates scaled gradients and checks, unscales and steps once per ``k``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jopt.base import GradientTransformation, OptState
from jopt.loss_scaling import _check_scaler_args, dynamic_loss_scale, loss_scale, scale_loss

__all__ = ["GradScaler"]


@dataclasses.dataclass(frozen=True)
class GradScaler:
    """torch.amp.GradScaler: dynamic loss scaling with torch's arguments and defaults.

    Update rule: that of :func:`jopt.dynamic_loss_scale` (torch's
    ``_amp_update_scale_``): a step whose scaled gradients hold an Inf or a NaN is
    skipped and the scale multiplied by ``backoff_factor``; after ``growth_interval``
    consecutive finite steps it is multiplied by ``growth_factor``.

    Differences from torch: the scaler holds no state (it lives in the optimizer
    state: ``scale``, ``get_scale`` take it); the ``set_*`` methods are replaced by
    building a new scaler; ``step`` + ``update`` are the wrapped optimizer's
    ``update``; ``get_scale`` returns a device scalar instead of syncing to a Python
    float; bad arguments raise ``ValueError`` (torch asserts only two of them).

    Args:
        device: accepted for porting and ignored (jax places arrays).
        init_scale: the initial scale, > 0.
        growth_factor: multiplies the scale after ``growth_interval`` finite steps, > 1.
        backoff_factor: multiplies the scale after a non-finite step, in (0, 1).
        growth_interval: consecutive finite steps before the scale grows, >= 1.
        enabled: ``False`` makes :meth:`wrap` return the optimizer unchanged and
            :meth:`scale` the identity, as torch's disabled scaler.

    References:
        ``torch.amp.GradScaler``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import jopt
        >>> scaler = jopt.torch.amp.GradScaler("cpu", init_scale=256.0)
        >>> tx = scaler.wrap(jopt.torch.SGD(lr=0.1))
        >>> w = jnp.ones(2)
        >>> state = tx.init(w)
        >>> grads = jax.grad(lambda w: scaler.scale(jnp.sum(w**2), state))(w)
        >>> grads  # scaled
        Array([512., 512.], dtype=float32)
        >>> updates, state = tx.update(grads, state, w)
        >>> jopt.apply_updates(w, updates), scaler.get_scale(state)
        (Array([0.8, 0.8], dtype=float32), Array(256., dtype=float32))
    """

    device: str = "cuda"
    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.enabled:
            _check_scaler_args(
                self.init_scale, self.growth_factor, self.backoff_factor, self.growth_interval
            )

    def wrap(self, optimizer: GradientTransformation) -> GradientTransformation:
        """The optimizer, taking gradients of the scaled loss (``scaler.step`` + ``update``)."""
        if not self.enabled:
            return optimizer
        return dynamic_loss_scale(
            optimizer,
            init_scale=self.init_scale,
            growth_factor=self.growth_factor,
            backoff_factor=self.backoff_factor,
            growth_interval=self.growth_interval,
        )

    def scale(self, outputs: Any, state: OptState) -> Any:
        """``outputs`` (a loss, or a pytree of them) times the current scale in ``state``."""
        if not self.enabled:
            return outputs
        return scale_loss(outputs, state)

    def get_scale(self, state: OptState) -> jax.Array:
        """The scale the next step uses (1.0 when disabled), as a float32 device scalar."""
        if not self.enabled:
            return jnp.ones((), jnp.float32)
        return loss_scale(state)

    def get_growth_factor(self) -> float:
        """The growth factor."""
        return self.growth_factor

    def get_backoff_factor(self) -> float:
        """The backoff factor."""
        return self.backoff_factor

    def get_growth_interval(self) -> int:
        """The growth interval."""
        return self.growth_interval

    def is_enabled(self) -> bool:
        """Whether scaling is on."""
        return self.enabled
