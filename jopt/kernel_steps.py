"""Steps that run jopt's fused kernels for both doors' optimizers (:func:`jopt.step`).

:func:`with_kernel_step` gives an elementwise transformation (a chain such as
``scale_by_adam`` then ``scale_by_learning_rate``), wrapped in :func:`jopt.fuse`, a
packed step (:func:`jopt.stepping.with_packed_step`) that applies it with
:func:`jopt.kernels.step_many`: fuse hands over the leaves where they lie and the
layout of its packed state buffers, so no leaf is copied into a packed buffer.

What is specific to an optimizer is a *plan*: from the transformation's state (and the
folded clip scale) it gives the kernel, its coefficient vector, the state trees the
kernel updates, and how to rebuild the state from the updated trees. Float32 leaves,
with state in a dtype the kernel keeps (float32; bfloat16 for momentum and Adam's
moments), take the kernel (on the CPU; XLA code elsewhere); any other tree steps as
``update`` then ``apply_updates``.

Example:
    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.sgd(0.1, momentum=0.9)
    >>> params = {"w": jnp.ones(3)}
    >>> params, state = jopt.step(tx, {"w": jnp.ones(3)}, tx.init(params), params)
    >>> params["w"]
    Array([0.9, 0.9, 0.9], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt import kernels, stepping
from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState
from jopt.kernels import rules

__all__ = [
    "Plan",
    "PlanFn",
    "adagrad_plan",
    "adam_plan",
    "keeps",
    "momentum_plan",
    "rmsprop_plan",
    "with_kernel_step",
]


class Plan(NamedTuple):
    """How one step of an optimizer maps onto a kernel.

    ``kernel``: the :class:`jopt.kernels.rules.StepKernel`; ``coefficients``: its
    vector; ``trees``: the state trees (or dicts of fused buffers) it updates, in the
    kernel's order; ``rebuild``: the new state from the updated trees.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.kernel_steps import Plan
        >>> from jopt.kernels import rules
        >>> c = rules.MOMENTUM.pack(grad_scale=1.0, d=0.9, c=1.0, neg_lr=-0.1)
        >>> plan = Plan(rules.MOMENTUM, c, [{"w": jnp.zeros(2)}], lambda trees: trees[0])
        >>> plan.kernel.states
        ('trace',)
    """

    kernel: rules.StepKernel
    coefficients: jax.Array
    trees: list[Any]
    rebuild: Callable[[list[Any]], OptState]


PlanFn = Callable[[OptState, "jax.Array | None"], Plan]


def keeps(kernel: rules.StepKernel, *dtypes: Any) -> bool:
    """Whether ``kernel`` keeps its states in ``dtypes`` (one per state; None is the
    parameters' dtype, float32 wherever the kernel runs): an optimizer whose state
    dtypes it keeps gets a kernel step.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.kernel_steps import keeps
        >>> from jopt.kernels import rules
        >>> keeps(rules.ADAM, None, jnp.bfloat16), keeps(rules.ADAM, jnp.float16, None)
        (True, False)
    """
    return kernel.target(*(jnp.float32 if d is None else d for d in dtypes)) is not None


def with_kernel_step(tx: GradientTransformation, plan: PlanFn) -> GradientTransformation:
    """``tx`` with a packed step that runs ``plan``'s kernel, for :func:`jopt.fuse`.

    ``tx`` must be wrapped in :func:`jopt.fuse` (every stateful optimizer is): fuse
    hands the step its layout and the leaves; leaves that are not float32, or state
    the kernel does not keep, are declined, and fuse steps them as ``update`` then
    ``apply_updates``.

    Example:
        >>> import jopt
        >>> jopt.stepping.step_of(jopt.sgd(0.1, momentum=0.9)) is not None
        True
    """

    def packed_step(
        layout: Any,
        grad_leaves: list[Any],
        state: OptState,
        param_leaves: list[Any],
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[list[Any], OptState] | None:
        del extra
        p = plan(state, grad_scale)
        keys = [key for key, _, _ in layout.buffers]
        index = {key: j for j, key in enumerate(keys)}
        states = [[tree[key] for key in keys] for tree in p.trees]
        leaves = [*param_leaves, *grad_leaves]
        if p.kernel.target_for(states) is None or not jtree.all_have_dtype(leaves, jnp.float32):
            return None
        slots = [(index[key], offset) for key, offset in layout.slots]
        new_params, new_states = kernels.step_many(
            p.kernel, param_leaves, grad_leaves, states, p.coefficients, slots=slots
        )
        trees = [dict(zip(keys, s, strict=True)) for s in new_states]
        return new_params, p.rebuild(trees)

    return stepping.with_packed_step(tx, packed_step)


def _locate(state: OptState, kind: type, who: str) -> tuple[Any, Callable[[Any], OptState]]:
    """The ``kind`` state in a chain's ``state`` (or ``state`` itself), and a function
    that puts a new one in its place (the torch door's chains may start with stateless
    steps: maximize, weight decay)."""
    if isinstance(state, kind):
        return state, lambda new: new
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        at = next((i for i, inner in enumerate(state) if isinstance(inner, kind)), None)
        if at is not None:
            return state[at], lambda new: (*state[:at], new, *state[at + 1 :])
    found = type(state).__name__
    raise TypeError(f"{who} step got a {found} that holds no {kind.__name__}")


def _gradient_in(kernel: rules.StepKernel, l2: Any | None) -> rules.StepKernel:
    """``kernel``, or its variant after torch's coupled weight decay when ``l2`` is set."""
    if l2 is None:
        return kernel
    for coupled in rules.KERNELS:
        if coupled.name == f"{kernel.name}_l2":
            return coupled
    raise ValueError(f"the {kernel.name} kernel has no variant with coupled weight decay")


def _gradient_coefficients(
    grad_scale: jax.Array | None, l2: Any | None, maximize: bool
) -> dict[str, Any]:
    """``grad_scale`` (negated for torch's maximize, which negates the gradient
    first: ``g (-s)`` is ``-(g s)`` exactly) and the coupled weight decay ``l2``."""
    scale: Any = 1.0 if grad_scale is None else grad_scale
    out = {"grad_scale": -scale if maximize else scale}
    if l2 is not None:
        out["l2"] = l2
    return out


def momentum_plan(
    learning_rate: Any,
    momentum: Any,
    dampening: Any | None = None,
    nesterov: bool = False,
    *,
    l2: Any | None = None,
    maximize: bool = False,
) -> PlanFn:
    """SGD with heavy-ball or Nesterov momentum: ``chain(trace(momentum, nesterov,
    dampening=...), scale_by_learning_rate)``; ``dampening`` (torch's) scales the
    gradient by ``1 - dampening`` from the second step on, ``None`` never. The torch
    door's ``maximize`` and coupled weight decay ``l2`` (``add_decayed_weights``) may
    come first in the chain.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.kernel_steps import momentum_plan
        >>> state = jopt.trace(0.9).init(jnp.zeros(2)), ()
        >>> momentum_plan(0.1, 0.9)(state, None).kernel.states
        ('trace',)
    """
    from jopt.transforms.momentum import TraceState

    kernel = _gradient_in(rules.MOMENTUM_NESTEROV if nesterov else rules.MOMENTUM, l2)

    def plan(state: OptState, grad_scale: jax.Array | None) -> Plan:
        s, put = _locate(state, TraceState, "momentum")
        d, _ = jtree.decay_pair(momentum, jnp.float32)
        c: Any = 1.0
        if dampening is not None:
            _, keep = jtree.decay_pair(dampening, jnp.float32)
            c = jnp.where(s.count == 0, jnp.float32(1), keep)
        coefs = kernel.pack(
            **_gradient_coefficients(grad_scale, l2, maximize), d=d, c=c, neg_lr=-learning_rate
        )

        def rebuild(trees: list[Any]) -> OptState:
            return put(TraceState(jtree.safe_increment(s.count), trees[0]))

        return Plan(kernel, coefs, [s.trace], rebuild)

    return plan


def rmsprop_plan(
    learning_rate: Any,
    decay: Any,
    eps: Any,
    eps_in_sqrt: bool,
    *,
    momentum: Any | None = None,
    nesterov: bool = False,
    centered: bool = False,
    l2: Any | None = None,
    maximize: bool = False,
) -> PlanFn:
    """RMSprop without bias correction: ``chain(scale_by_rms, scale_by_learning_rate)``;
    with ``momentum``, optax's ``chain(scale_by_rms, scale_by_learning_rate,
    trace(momentum, nesterov))`` (eps inside the root) or torch's ``chain(scale_by_rms,
    trace(momentum), scale_by_learning_rate)`` (eps outside). ``centered``:
    ``scale_by_stddev`` in place of ``scale_by_rms``. The torch door's ``maximize`` and
    coupled weight decay ``l2`` may come first (eps outside the root only).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.kernel_steps import rmsprop_plan
        >>> state = jopt.scale_by_rms().init(jnp.zeros(2)), ()
        >>> rmsprop_plan(0.1, 0.9, 1e-8, True)(state, None).kernel.name
        'rmsprop'
        >>> state = (*state, jopt.trace(0.9).init(jnp.zeros(2)))
        >>> rmsprop_plan(0.1, 0.9, 1e-8, True, momentum=0.9)(state, None).kernel.states
        ('nu', 'trace')
        >>> state = jopt.scale_by_stddev().init(jnp.zeros(2)), ()
        >>> rmsprop_plan(0.1, 0.9, 1e-8, True, centered=True)(state, None).kernel.name
        'rmsprop_centered'
    """
    from jopt.transforms.adaptive import ScaleByRmsState, ScaleByStddevState
    from jopt.transforms.momentum import TraceState

    kernel = _rmsprop_kernel(eps_in_sqrt, momentum is not None, nesterov, centered)
    kernel = _gradient_in(kernel, l2)
    kind: type = ScaleByStddevState if centered else ScaleByRmsState

    def plan(state: OptState, grad_scale: jax.Array | None) -> Plan:
        s, put = _locate(state, kind, "rmsprop")
        d, c = jtree.decay_pair(decay, jnp.float32)
        values = dict(d=d, c=c, eps=eps, neg_lr=-learning_rate)
        trees = [s.mu, s.nu] if centered else [s.nu]
        if momentum is not None:
            values["momentum"], _ = jtree.decay_pair(momentum, jnp.float32)
            trees.append(_locate(state, TraceState, "rmsprop")[0].trace)
        coefs = kernel.pack(**_gradient_coefficients(grad_scale, l2, maximize), **values)

        def rebuild(new: list[Any]) -> OptState:
            moments = new if momentum is None else new[:-1]
            out = put(kind(jtree.safe_increment(s.count), *moments))
            if momentum is None:
                return out
            t, put_trace = _locate(out, TraceState, "rmsprop")
            return put_trace(TraceState(jtree.safe_increment(t.count), new[-1]))

        return Plan(kernel, coefs, trees, rebuild)

    return plan


def _rmsprop_kernel(
    eps_in_sqrt: bool, momentum: bool, nesterov: bool, centered: bool
) -> rules.StepKernel:
    """The RMSprop rule for where eps sits, momentum (optax's with eps inside the
    root, torch's outside) and centering."""
    if not momentum:
        if centered:
            return rules.RMSPROP_CENTERED if eps_in_sqrt else rules.RMSPROP_CENTERED_EPS_OUTSIDE
        return rules.RMSPROP if eps_in_sqrt else rules.RMSPROP_EPS_OUTSIDE
    if eps_in_sqrt:
        if centered:
            return (
                rules.RMSPROP_CENTERED_MOMENTUM_NESTEROV
                if nesterov
                else rules.RMSPROP_CENTERED_MOMENTUM
            )
        return rules.RMSPROP_MOMENTUM_NESTEROV if nesterov else rules.RMSPROP_MOMENTUM
    if nesterov:
        raise ValueError("no RMSprop kernel has eps outside the root and Nesterov momentum")
    return rules.TORCH_RMSPROP_CENTERED_MOMENTUM if centered else rules.TORCH_RMSPROP_MOMENTUM


def adagrad_plan(
    learning_rate: Any,
    eps: Any,
    eps_in_sqrt: bool = True,
    *,
    lr_factor: Callable[[jax.Array], jax.Array] | None = None,
    l2: Any | None = None,
    maximize: bool = False,
) -> PlanFn:
    """Adagrad: ``chain(scale_by_rss, scale_by_learning_rate)``, eps inside the root
    (optax's) or outside it (``eps_in_sqrt=False``, torch's, which may come after the
    torch door's ``maximize`` and coupled weight decay ``l2``). ``lr_factor``: a
    ``scale_by_schedule(lr_factor)`` after the learning rate (torch's ``lr_decay``,
    ``count -> 1 / (1 + count lr_decay)``); the kernel steps by their product, as torch
    does (``clr = lr / (1 + (t - 1) lr_decay)``), and the schedule's count advances.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.kernel_steps import adagrad_plan
        >>> state = jopt.scale_by_rss().init(jnp.zeros(2)), ()
        >>> adagrad_plan(0.1, 1e-7)(state, None).kernel.states
        ('sum_of_squares',)
    """
    from jopt.transforms.adaptive import ScaleByRssState
    from jopt.transforms.scaling import ScaleByScheduleState

    kernel = _gradient_in(rules.ADAGRAD if eps_in_sqrt else rules.ADAGRAD_EPS_OUTSIDE, l2)

    def plan(state: OptState, grad_scale: jax.Array | None) -> Plan:
        s, put = _locate(state, ScaleByRssState, "adagrad")
        lr = learning_rate
        if lr_factor is not None:
            counted, _ = _locate(state, ScaleByScheduleState, "adagrad")
            lr = jtree.scalar(learning_rate, jnp.float32) * lr_factor(counted.count)
        c = kernel.pack(**_gradient_coefficients(grad_scale, l2, maximize), eps=eps, neg_lr=-lr)

        def rebuild(trees: list[Any]) -> OptState:
            out = put(ScaleByRssState(trees[0]))
            if lr_factor is None:
                return out
            counted, put_counted = _locate(out, ScaleByScheduleState, "adagrad")
            return put_counted(ScaleByScheduleState(jtree.safe_increment(counted.count)))

        return Plan(kernel, c, [s.sum_of_squares], rebuild)

    return plan


def adadelta_plan(
    learning_rate: Any,
    rho: Any,
    eps: Any,
    *,
    l2: Any | None = None,
    maximize: bool = False,
) -> PlanFn:
    """Adadelta: ``chain(scale_by_adadelta, scale_by_learning_rate)``, after weight decay
    added to the gradient (``l2``: ``add_decayed_weights``, in both doors) and the torch
    door's ``maximize``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.kernel_steps import adadelta_plan
        >>> state = jopt.scale_by_adadelta().init(jnp.zeros(2)), ()
        >>> adadelta_plan(1.0, 0.9, 1e-6)(state, None).kernel.states
        ('e_g', 'e_x')
    """
    from jopt.transforms.adaptive import ScaleByAdaDeltaState

    kernel = _gradient_in(rules.ADADELTA, l2)

    def plan(state: OptState, grad_scale: jax.Array | None) -> Plan:
        s, put = _locate(state, ScaleByAdaDeltaState, "adadelta")
        d, c = jtree.decay_pair(rho, jnp.float32)
        coefs = kernel.pack(
            **_gradient_coefficients(grad_scale, l2, maximize),
            d=d,
            c=c,
            eps=eps,
            neg_lr=-learning_rate,
        )
        return Plan(kernel, coefs, [s.e_g, s.e_x], lambda trees: put(ScaleByAdaDeltaState(*trees)))

    return plan


def adam_plan(
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    learning_rate: Any,
    weight_decay: Any | None,
    *,
    precise_bias_correction: bool = False,
    l2: Any | None = None,
    maximize: bool = False,
    nesterov: bool = False,
    amsgrad: bool = False,
    max_before_bias_correction: bool = False,
) -> PlanFn:
    """Adam (``weight_decay=None``) or AdamW:
    ``chain(scale_by_adam, [add_decayed_weights], scale_by_learning_rate)``, with
    ``scale_by_adam``'s ``precise_bias_correction`` (the torch door's) and ``nesterov``
    (NAdam, NAdamW); Adam may come after the torch door's ``maximize`` and coupled
    weight decay ``l2``. ``amsgrad``: ``scale_by_amsgrad`` instead of ``scale_by_adam``,
    with its ``max_before_bias_correction`` (torch's form, any weight decay) or without
    (optax's, :func:`jopt.amsgrad`: no weight decay).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.kernel_steps import adam_plan
        >>> state = jopt.scale_by_adam().init(jnp.zeros(2)), ()
        >>> adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, 0.01)(state, None).kernel.name
        'adamw'
    """
    from jopt.transforms.adaptive import ScaleByAdamState, ScaleByAmsgradState, _correction

    if weight_decay is not None and l2 is not None:
        raise ValueError("adam_plan: weight_decay (decoupled) and l2 (coupled) exclude each other")
    if nesterov and amsgrad:
        raise ValueError("adam_plan: no kernel has both nesterov and amsgrad")
    optax_amsgrad = amsgrad and not max_before_bias_correction
    if optax_amsgrad and (weight_decay is not None or l2 is not None or precise_bias_correction):
        raise ValueError("adam_plan: optax's AMSGrad kernel has no weight decay or torch options")
    kind: type = ScaleByAmsgradState if amsgrad else ScaleByAdamState
    if nesterov:
        kernel = rules.NADAM if weight_decay is None else rules.NADAMW
    elif optax_amsgrad:
        kernel = rules.AMSGRAD
    elif amsgrad:
        kernel = rules.AMSGRAD_RAW if weight_decay is None else rules.AMSGRADW_RAW
    else:
        kernel = rules.ADAM if weight_decay is None else rules.ADAMW
    kernel = _gradient_in(kernel, l2)

    def plan(state: OptState, grad_scale: jax.Array | None) -> Plan:
        s, put = _locate(state, kind, "adam")
        count = jtree.safe_increment(s.count)
        c = kernels.AdamCoefficients.of(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            count=count,
            learning_rate=learning_rate,
            weight_decay=0.0 if weight_decay is None else weight_decay,
            precise_bias_correction=precise_bias_correction,
        )
        # the gradient's coefficients (grad_scale with maximize's sign, l2) replace its 1.0
        values = {**c._asdict(), **_gradient_coefficients(grad_scale, l2, maximize)}
        if nesterov:  # 1 - b1^(t+1), as scale_by_adam computes it
            next_count = jtree.safe_increment(count)
            values["bc1_next"] = _correction(b1, next_count, jnp.float32, precise_bias_correction)

        def rebuild(trees: list[Any]) -> OptState:
            return put(kind(count, *trees))

        trees = [s.mu, s.nu, s.nu_max] if amsgrad else [s.mu, s.nu]
        return Plan(kernel, kernel.pack(**values), trees, rebuild)

    return plan
