"""Fused in-place optimizer kernels, used by :func:`jopt.step`.

An optimizer step followed by ``apply_updates`` is one elementwise pass over the
parameters, gradients and state. XLA compiles it into one loop per leaf, but on a CPU
that loop reaches about 60% of the memory bandwidth an in-place update can use
(measured with ``python -m benchmarks.step``: Adam on 16M float32 parameters, 2-core
EPYC), and a model of many small leaves costs one loop (and one compiled kernel) per
leaf, or a copy into a packed buffer and a slice back out of it. The kernels here do
the same arithmetic, in the same order and rounding, in one vectorised C++ call over
*all* the leaves where they lie, spread over XLA's thread pool, writing the parameters
and the state in place (the outputs alias the donated inputs).

- :func:`step_many`: one optimizer step, applied, for the update rules of
  :mod:`jopt.kernels.rules` (heavy-ball and Nesterov momentum, RMSprop, centered or not,
  with or without momentum, Adagrad, Adadelta, Adam, AdamW, NAdam, NAdamW, AMSGrad, each
  in optax's and torch's forms where they differ, torch's after its coupled weight
  decay); :func:`adam_step_many` / :func:`adam_step` spell it for Adam.
- :func:`sum_of_squares` / :func:`global_norm`: the norm a global-norm clip needs.

:func:`jopt.step` uses them where they apply (today: the plain forms of :func:`jopt.sgd`
with momentum (heavy-ball or Nesterov), :func:`jopt.rmsprop` (its momentum and centering
too), :func:`jopt.adagrad`, :func:`jopt.adadelta`, :func:`jopt.adam`, :func:`jopt.adamw`
(NAdam(W) too) and :func:`jopt.amsgrad`, and of :func:`jopt.torch.SGD` with momentum,
:func:`jopt.torch.RMSprop`, :func:`jopt.torch.Adagrad`, :func:`jopt.torch.Adadelta`,
:func:`jopt.torch.Adam` and :func:`jopt.torch.AdamW`, ``weight_decay``, ``maximize``,
``momentum``, ``centered``, ``amsgrad`` and ``lr_decay`` included, on float32
parameters, on the CPU, optionally behind :func:`jopt.clip_by_global_norm`; momentum and
Adam's moments may be kept in bfloat16; see :mod:`jopt.kernel_steps`); on other devices
and dtypes the same step runs as XLA code (the kernels' "twins"). Plain SGD has none:
XLA's loop for ``p - lr g`` is at the memory-bandwidth floor from a few million elements
up, and a two-thread kernel for it measured 0.86x XLA's time on one 1M array but
1.0-1.16x on 4M-16M arrays, 1000 leaves and a GPT-like tree (2-core EPYC).
The kernels are compiled on first use (see :mod:`jopt.kernels._build`); :func:`status`
says whether they are in use.

Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> p, g = jnp.ones(3), jnp.full(3, 0.5)
    >>> m = v = jnp.zeros(3)
    >>> coefs = jopt.kernels.AdamCoefficients.of(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0,
    ...                                          count=jnp.int32(1), learning_rate=0.1)
    >>> new_p, new_m, new_v = jopt.kernels.adam_step(p, g, m, v, coefs)
    >>> new_p
    Array([0.9, 0.9, 0.9], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import tree as jtree
from jopt.kernels import rules
from jopt.kernels._build import load, status
from jopt.kernels._primitive import kernel_primitive
from jopt.transforms.adaptive import _correction

__all__ = [
    "MAX_LEAVES_PER_CALL",
    "MIN_KERNEL_SIZE",
    "AdamCoefficients",
    "Slots",
    "adam_step",
    "adam_step_many",
    "available",
    "global_norm",
    "rules",
    "status",
    "step_many",
    "sum_of_squares",
]

MIN_KERNEL_SIZE = 1 << 12
"""A call over fewer elements in all runs the XLA twin.

A threshold chosen, not measured: below a few thousand elements a step costs
microseconds either way, and the twin leaves XLA free to fuse the update with its
neighbours, which a custom call does not.
"""

MAX_LEAVES_PER_CALL = 64
"""A kernel call takes the leaves of at most this many (or of one state buffer).

XLA's compile time grows with the product of a call's in-place (aliased) outputs and
its operands: one call over 1000 leaves compiled in 5.7 s on a 2-core CPU, 16 calls
of 63 leaves in 0.8 s (XLA's instruction fusion checks every in-place pair).
"""

Slots = tuple[tuple[int, int], ...]
"""Where each leaf's state lives: ``(state buffer index, element offset)`` per leaf."""


def available() -> bool:
    """Whether the CPU kernels are built and registered (building them if needed).

    Example:
        >>> import jopt
        >>> isinstance(jopt.kernels.available(), bool)
        True
    """
    return load()


class AdamCoefficients(NamedTuple):
    """The scalars of one Adam(W) step, in the dtype the update computes in.

    ``d1, c1``: ``b1`` and ``1 - b1`` (the latter rounded once from the exact value);
    ``bc1, bc2``: the bias corrections ``1 - b^t``; ``neg_lr``: ``-learning_rate``;
    ``grad_scale``: a factor applied to the gradient first (a global-norm clip).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> c = jopt.kernels.AdamCoefficients.of(
        ...     b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, count=jnp.int32(2), learning_rate=0.1)
        >>> round(float(c.bc1), 6), round(float(c.neg_lr), 6)  # 1 - 0.9**2, -lr
        (0.19, -0.1)
    """

    grad_scale: jax.Array
    d1: jax.Array
    c1: jax.Array
    d2: jax.Array
    c2: jax.Array
    bc1: jax.Array
    bc2: jax.Array
    eps_root: jax.Array
    eps: jax.Array
    weight_decay: jax.Array
    neg_lr: jax.Array

    @classmethod
    def of(
        cls,
        *,
        b1: Any,
        b2: Any,
        eps: Any,
        eps_root: Any,
        count: jax.Array,
        learning_rate: Any,
        weight_decay: Any = 0.0,
        grad_scale: Any = 1.0,
        dtype: Any = jnp.float32,
        precise_bias_correction: bool = False,
    ) -> AdamCoefficients:
        """The coefficients exactly as :func:`jopt.scale_by_adam`,
        :func:`jopt.add_decayed_weights` and :func:`jopt.scale_by_learning_rate` compute
        them at step ``count`` (counted from 1). Hyperparameters may be traced or
        :class:`jopt.tree.SplitScalar`; ``precise_bias_correction`` is
        :func:`jopt.scale_by_adam`'s (torch's full-precision ``1 - b^t``)."""
        d1, c1 = jtree.decay_pair(b1, dtype)
        d2, c2 = jtree.decay_pair(b2, dtype)
        return cls(
            grad_scale=jnp.asarray(grad_scale).astype(dtype),
            d1=d1,
            c1=c1,
            d2=d2,
            c2=c2,
            bc1=_correction(b1, count, dtype, precise_bias_correction),
            bc2=_correction(b2, count, dtype, precise_bias_correction),
            eps_root=jtree.scalar(eps_root, dtype),
            eps=jtree.scalar(eps, dtype),
            weight_decay=jtree.scalar(weight_decay, dtype),
            neg_lr=jtree.scalar(-learning_rate, dtype),
        )


# -- steps ---------------------------------------------------------------------------


def _members(slots: Slots, num_buffers: int) -> list[list[int]]:
    """The leaves of each state buffer, in offset order."""
    members: list[list[int]] = [[] for _ in range(num_buffers)]
    for i, (j, _) in enumerate(slots):
        members[j].append(i)
    return [sorted(ids, key=lambda i: slots[i][1]) for ids in members]


_after_all_bind = kernel_primitive(
    "jopt_after_all",
    twin=lambda *grads: [jnp.zeros((), jnp.float32)],
    out_avals=lambda *avals: [jax.core.ShapedArray((), jnp.float32)],
    target=lambda: "jopt_after_all",
)


def _after_all(grads: list[jax.Array]) -> jax.Array:
    """A float32 zero that XLA computes after every gradient (a kernel that reads none).

    Each kernel call overwrites its parameters in place. In a training step the
    backward pass also reads them (``delta @ W.T`` for the layer below), and XLA
    copies every parameter whose readers it cannot prove to run first. Adding this
    zero to the coefficients of every call makes each one wait for all the gradients,
    hence for every such read, and the copies go (the benchmarks' 16M MLP: 8 copies of
    8-16 MiB per step without it). A custom call over all the gradients compiles to
    one operation; slicing an element out of each compiled to one kernel per leaf.
    """
    return _after_all_bind(*grads)[0]


def _calls(slots: Slots, num_buffers: int) -> list[tuple[list[int], list[int]]]:
    """``(leaves, state buffers)`` of each kernel call: whole state buffers, in order,
    at most :data:`MAX_LEAVES_PER_CALL` leaves per call unless one buffer holds more."""
    groups: list[tuple[list[int], list[int]]] = []
    count = MAX_LEAVES_PER_CALL
    for j, ids in enumerate(_members(slots, num_buffers)):
        if count + len(ids) > MAX_LEAVES_PER_CALL:
            groups.append(([], []))
            count = 0
        groups[-1][1].append(j)
        count += len(ids)
    for leaves, buffers in groups:
        members = set(buffers)
        leaves.extend(i for i, (j, _) in enumerate(slots) if j in members)
    return groups


def _twin(
    kernel: rules.StepKernel,
    params: list[jax.Array],
    grads: list[jax.Array],
    states: list[list[jax.Array]],
    coefficients: jax.Array,
    slots: Slots,
) -> tuple[list[jax.Array], list[list[jax.Array]]]:
    """:func:`step_many` as XLA code: each state buffer's leaves packed into one
    buffer, stepped by the kernel's reference, and sliced back out (jopt.fuse's
    program)."""
    new_params: list[Any] = list(params)
    new_states = [list(s) for s in states]
    for j, ids in enumerate(_members(slots, len(states[0]))):
        if not ids:
            continue
        buffers = tuple(s[j] for s in states)
        if len(ids) == 1 and params[ids[0]].shape == buffers[0].shape:
            (i,) = ids
            new_params[i], out = kernel.reference(params[i], grads[i], buffers, coefficients)
        else:
            p = jnp.concatenate([jnp.ravel(params[i]) for i in ids])
            g = jnp.concatenate([jnp.ravel(grads[i]) for i in ids])
            flat = tuple(jnp.ravel(b) for b in buffers)
            flat_p, out = kernel.reference(p, g, flat, coefficients)
            out = tuple(x.reshape(b.shape) for x, b in zip(out, buffers, strict=True))
            at = 0
            for i in ids:
                size = params[i].size
                piece = jax.lax.slice_in_dim(flat_p, at, at + size).reshape(params[i].shape)
                new_params[i] = piece.astype(params[i].dtype)
                at += size
        for s, x in zip(new_states, out, strict=True):
            s[j] = x
    return new_params, new_states


def _twin_flat(
    *operands: jax.Array, kernel: rules.StepKernel, n: int, k: int, slots: Slots, target: str
) -> list[jax.Array]:
    """:func:`_twin` over the kernel's operands: coefficients, p, g, then each state."""
    del target
    coefs, p, g = operands[0], list(operands[1 : 1 + n]), list(operands[1 + n : 1 + 2 * n])
    rest = operands[1 + 2 * n :]
    states = [list(rest[s * k : (s + 1) * k]) for s in range(len(kernel.states))]
    new_p, new_states = _twin(kernel, p, g, states, coefs, slots)
    return [*new_p, *(x for s in new_states for x in s)]


@functools.cache
def _bind(kernel: rules.StepKernel) -> Any:
    num_states = len(kernel.states)
    return kernel_primitive(
        f"jopt_{kernel.name}_step",
        twin=functools.partial(_twin_flat, kernel=kernel),
        out_avals=lambda coefs, *avals, n, k, **_: [*avals[:n], *avals[2 * n :]],
        target=lambda target, **_: target,
        # p[i] -> output i; state s, buffer j -> output n + s k + j
        aliases=lambda num_operands, n, k, **_: {
            **{1 + i: i for i in range(n)},
            **{1 + 2 * n + j: n + j for j in range(num_states * k)},
        },
        attributes=lambda slots, **_: {
            "owner": np.array([j for j, _ in slots], np.int64),
            "offset": np.array([at for _, at in slots], np.int64),
        },
    )


def _fused(
    kernel: rules.StepKernel,
    params: list[jax.Array],
    grads: list[jax.Array],
    states: list[list[jax.Array]],
    coefficients: jax.Array,
    slots: Slots,
) -> tuple[list[jax.Array], list[list[jax.Array]]]:
    target = kernel.target_for(states)
    calls = _calls(slots, len(states[0]))
    if len(calls) > 1:
        coefficients = coefficients.at[0].add(_after_all(grads))  # grad_scale + 0
    new_p, new_states = list(params), [list(s) for s in states]
    for leaves, buffers in calls:
        local = {j: at for at, j in enumerate(buffers)}
        n, k = len(leaves), len(buffers)
        out = _bind(kernel)(
            coefficients,
            *(params[i] for i in leaves),
            *(grads[i] for i in leaves),
            *(s[j] for s in states for j in buffers),
            n=n,
            k=k,
            slots=tuple((local[slots[i][0]], slots[i][1]) for i in leaves),
            target=target,
        )
        for i, x in zip(leaves, out[:n], strict=True):
            new_p[i] = x
        for s, new in enumerate(new_states):
            for at, j in enumerate(buffers):
                new[j] = out[n + s * k + at]
    return new_p, new_states


def _check_slots(
    params: Sequence[jax.Array], states: Sequence[Sequence[jax.Array]], slots: Slots
) -> None:
    if len(slots) != len(params):
        raise ValueError(f"slots has {len(slots)} entries for {len(params)} leaves")
    buffers = states[0]
    for s, other in enumerate(states[1:], 1):
        for j, (a, b) in enumerate(zip(buffers, other, strict=True)):
            if a.shape != b.shape:
                raise ValueError(
                    f"state buffer {j}: state 0 has shape {a.shape}, state {s} {b.shape}"
                )
    for j, ids in enumerate(_members(slots, len(buffers))):
        at = 0
        for i in ids:
            if slots[i][1] != at:
                raise ValueError(
                    f"leaf {i} starts at element {slots[i][1]} of state buffer {j}, "
                    f"expected {at}: the leaves of a buffer must tile it in order"
                )
            at += int(np.size(params[i]))
        if at != int(np.size(buffers[j])):
            raise ValueError(
                f"state buffer {j} holds {int(np.size(buffers[j]))} elements, its leaves {at}"
            )


def step_many(
    kernel: rules.StepKernel,
    params: Sequence[jax.Array],
    grads: Sequence[jax.Array],
    states: Sequence[Sequence[jax.Array]],
    coefficients: jax.Array,
    *,
    slots: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[jax.Array], list[list[jax.Array]]]:
    """One optimizer step on many leaves, applied: new ``(params, states)``.

    ``kernel`` is one of :mod:`jopt.kernels.rules` (its docstring gives the update);
    ``coefficients`` its coefficient vector (``kernel.pack(...)``). ``params[i]`` and
    ``grads[i]`` are the leaves; ``states[s][j]`` is buffer ``j`` of the kernel's
    state ``s`` (e.g. Adam's ``mu`` and ``nu``); ``slots[i] = (j, offset)`` says that
    leaf ``i``'s state is the elements ``offset ...`` of the raveled buffers ``j``
    (the leaves of a buffer must tile it, in order). ``slots=None`` means one state
    buffer per leaf, of the leaf's shape. This is the layout :func:`jopt.fuse` gives
    an optimizer's state.

    On the CPU, with float32 leaves, each state's buffers in one of the dtypes the
    kernel keeps (``kernel.storage``: float32, and bfloat16 for momentum and Adam's
    moments) and at least :data:`MIN_KERNEL_SIZE` elements in all, fused kernel calls
    (one per :data:`MAX_LEAVES_PER_CALL` leaves) update every leaf where it lies, in
    place when the caller donates ``params`` and ``states``. Every call waits for all
    the gradients, so it runs after the whole backward pass, and XLA need not copy the
    parameters that the backward pass reads. Anything else runs the same arithmetic as
    XLA code (``kernel.reference``, to an ulp: XLA places its own fused multiply-adds).
    Derivatives (``jax.grad`` through a step, for meta-learning) and ``jax.vmap`` work:
    they use the XLA twin (under ``vmap`` the twin runs).

    Example: SGD with momentum on two leaves whose momentum shares one buffer.

        >>> import jax.numpy as jnp
        >>> from jopt import kernels
        >>> c = kernels.rules.MOMENTUM.pack(grad_scale=1.0, d=0.5, c=1.0, neg_lr=-0.1)
        >>> params, grads = [jnp.ones(2), jnp.ones((1, 3))], [jnp.ones(2), -jnp.ones((1, 3))]
        >>> trace = [jnp.ones(5)]
        >>> new_params, (new_trace,) = kernels.step_many(
        ...     kernels.rules.MOMENTUM, params, grads, [trace], c, slots=[(0, 0), (0, 2)])
        >>> new_params[1]
        Array([[1.05, 1.05, 1.05]], dtype=float32)
        >>> new_trace[0]
        Array([ 1.5,  1.5, -0.5, -0.5, -0.5], dtype=float32)
    """
    params, grads = [jnp.asarray(x) for x in params], [jnp.asarray(x) for x in grads]
    states = [[jnp.asarray(x) for x in s] for s in states]
    if len(states) != len(kernel.states):
        raise ValueError(
            f"the {kernel.name} kernel keeps {len(kernel.states)} state arrays "
            f"{list(kernel.states)}, got {len(states)}"
        )
    if len(grads) != len(params):
        raise ValueError(f"{len(params)} params and {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"leaf {i}: params have shape {p.shape}, grads {g.shape}")
    if slots is None:
        for s, buffers in enumerate(states):
            if len(buffers) != len(params) or any(
                b.shape != p.shape for b, p in zip(buffers, params, strict=True)
            ):
                raise ValueError(
                    f"slots=None needs one {kernel.states[s]} buffer per leaf, of its shape"
                )
        slots = tuple((i, 0) for i in range(len(params)))
    else:
        slots = tuple((int(j), int(at)) for j, at in slots)
        _check_slots(params, states, slots)
    # Empty leaves and buffers stay as they are (the kernel gets no zero-size buffers).
    keep = [i for i, p in enumerate(params) if p.size]
    keep_buffers = [j for j, b in enumerate(states[0]) if b.size]
    renumber = {j: new for new, j in enumerate(keep_buffers)}
    live_slots = tuple((renumber[slots[i][0]], slots[i][1]) for i in keep)
    live_p, live_g = [params[i] for i in keep], [grads[i] for i in keep]
    live_states = [[s[j] for j in keep_buffers] for s in states]
    use_kernel = (
        sum(p.size for p in live_p) >= MIN_KERNEL_SIZE
        and all(x.dtype == jnp.float32 for x in (*live_p, *live_g))
        and kernel.target_for(live_states) is not None
        and available()
    )
    out_p, out_states = list(params), [list(s) for s in states]
    if not keep:
        return out_p, out_states
    coefficients = jnp.asarray(coefficients, jnp.float32)
    if use_kernel:
        new_p, new_states = _fused(kernel, live_p, live_g, live_states, coefficients, live_slots)
    else:
        new_p, new_states = _twin(kernel, live_p, live_g, live_states, coefficients, live_slots)
    for i, x in zip(keep, new_p, strict=True):
        out_p[i] = x
    for out, new in zip(out_states, new_states, strict=True):
        for j, x in zip(keep_buffers, new, strict=True):
            out[j] = x
    return out_p, out_states


def adam_step_many(
    params: Sequence[jax.Array],
    grads: Sequence[jax.Array],
    mu: Sequence[jax.Array],
    nu: Sequence[jax.Array],
    coefficients: AdamCoefficients,
    *,
    slots: Sequence[tuple[int, int]] | None = None,
    decoupled_decay: bool = False,
) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array]]:
    """One Adam(W) step on many leaves at once, applied: new ``(params, mu, nu)`` lists.

    Update rule, for every element (``c`` the coefficients)::

        g <- g * grad_scale
        m <- c1 g + d1 m,   v <- c2 g^2 + d2 v
        u <- (m / bc1) / (sqrt(v / bc2 + eps_root) + eps)  [+ weight_decay * p]
        p <- p + neg_lr * u

    which is :func:`jopt.adamw` (``decoupled_decay=True``) or :func:`jopt.adam`
    followed by :func:`jopt.apply_updates` (to an ulp). :func:`step_many` with
    :data:`jopt.kernels.rules.ADAM` (or ``ADAMW``): see there for ``slots``, where the
    kernel runs, derivatives and ``vmap``.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.

    Example: two leaves whose moments share one buffer.

        >>> import jax.numpy as jnp
        >>> import jopt
        >>> c = jopt.kernels.AdamCoefficients.of(
        ...     b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, count=jnp.int32(1), learning_rate=0.5)
        >>> params, grads = [jnp.ones(2), jnp.ones((1, 3))], [jnp.ones(2), -jnp.ones((1, 3))]
        >>> m = v = [jnp.zeros(5)]
        >>> new_params, new_m, new_v = jopt.kernels.adam_step_many(
        ...     params, grads, m, v, c, slots=[(0, 0), (0, 2)])
        >>> new_params[1]
        Array([[1.5, 1.5, 1.5]], dtype=float32)
        >>> new_m[0]
        Array([ 0.1,  0.1, -0.1, -0.1, -0.1], dtype=float32)
    """
    if len(nu) != len(mu):
        raise ValueError(f"{len(mu)} mu and {len(nu)} nu buffers")
    kernel = rules.ADAMW if decoupled_decay else rules.ADAM
    coefs = kernel.pack(**{k: jnp.asarray(x) for k, x in coefficients._asdict().items()})
    new_p, (new_m, new_v) = step_many(kernel, params, grads, [mu, nu], coefs, slots=slots)
    return new_p, new_m, new_v


def adam_step(
    p: jax.Array,
    g: jax.Array,
    m: jax.Array,
    v: jax.Array,
    coefficients: AdamCoefficients,
    *,
    decoupled_decay: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Adam(W) step on one buffer, applied to the parameters: ``(p, m, v)`` new.

    :func:`adam_step_many` for a single leaf (see there for the update rule, where the
    kernel runs, and derivatives).

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.

    Example: AdamW's decay alone (a zero gradient) shrinks ``p`` by ``lr * wd``.

        >>> import jax.numpy as jnp
        >>> import jopt
        >>> c = jopt.kernels.AdamCoefficients.of(
        ...     b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, count=jnp.int32(1),
        ...     learning_rate=0.5, weight_decay=0.1)
        >>> z = jnp.zeros(2)
        >>> jopt.kernels.adam_step(jnp.ones(2), z, z, z, c, decoupled_decay=True)[0]
        Array([0.95, 0.95], dtype=float32)
    """
    (p,), (m,), (v,) = adam_step_many(
        [p], [g], [m], [v], coefficients, decoupled_decay=decoupled_decay
    )
    return p, m, v


# -- global norm ----------------------------------------------------------------------


def _sum_squares_twin(*leaves: jax.Array) -> list[jax.Array]:
    return [sum((jnp.sum(x * x) for x in leaves), jnp.zeros((), jnp.float32))]


_sum_squares_bind = kernel_primitive(
    "jopt_sum_squares",
    twin=_sum_squares_twin,
    out_avals=lambda *avals: [jax.core.ShapedArray((), jnp.float32)],
    target=lambda: "jopt_sum_squares_f32",
)


def sum_of_squares(leaves: Sequence[jax.Array]) -> jax.Array:
    """``sum_i sum(x_i ** 2)`` over float32 leaves, as a float32 scalar.

    On the CPU, with at least :data:`MIN_KERNEL_SIZE` elements in all, one kernel call
    reads every leaf where it lies (XLA would compile a reduction per leaf: 9 s for
    1000 leaves on a 2-core CPU). Each block of 64K elements is summed in float32
    lanes, the blocks in float64, in a fixed order: the result is deterministic and
    at least as accurate as XLA's float32 reduction (not bit-equal to it). Other
    devices, dtypes and small inputs use :func:`jopt.tree.global_norm`'s XLA code.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.kernels.sum_of_squares([jnp.array([3.0]), jnp.array([[4.0]])])
        Array(25., dtype=float32)
    """
    leaves = [jnp.asarray(x) for x in leaves]
    if not all(x.dtype == jnp.float32 for x in leaves):
        raise TypeError(
            "sum_of_squares takes float32 leaves, got "
            + ", ".join(sorted({str(x.dtype) for x in leaves}))
        )
    leaves = [x for x in leaves if x.size]
    if sum(x.size for x in leaves) < MIN_KERNEL_SIZE or not available():
        return _sum_squares_twin(*leaves)[0]
    return _sum_squares_bind(*leaves)[0]


def global_norm(tree: Any) -> jax.Array:
    """:func:`jopt.global_norm` (``sqrt(sum_i sum(x_i ** 2))``), through
    :func:`sum_of_squares` when every leaf is float32.

    Used by :func:`jopt.step` to fold a global-norm clip into an optimizer's step.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> jopt.kernels.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})
        Array(5., dtype=float32)
    """
    leaves = jax.tree.leaves(tree)
    if not leaves or not jtree.all_have_dtype(leaves, jnp.float32):
        return jtree.global_norm(tree)
    return jnp.sqrt(sum_of_squares(leaves))
