"""What every training wrapper promises: jit without recompiling, vmap, and hyperparameters
of the wrapped optimizer that ``jopt.hyperparams`` finds and ``set_hyperparams`` changes.

Also the driver the wrapper tests share: ``run_steps``, a jitted ``scan`` over a problem
whose gradients may be corrupted by step or computed from the state (scaled losses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt.torch.amp import GradScaler
from jopt.torch.swa_utils import AveragedModel, get_ema_multi_avg_fn
from jopt.wrapping import find_state
from tests.oracles import STEPS, max_relative_error, standard_promotion
from tests.problems import PROBLEMS, Problem


def run_steps(
    tx: Any,
    problem: Problem,
    dtype: Any,
    steps: int = STEPS,
    *,
    gradients: Callable[[Any, Any, jax.Array], Any] | None = None,
    read: Callable[[Any], Any] | None = None,
    strict: bool = True,
) -> tuple[list, Any]:
    """Trajectory of ``tx`` on ``problem`` (one entry per step) and the final state.

    ``gradients(params, state, t)`` replaces ``jax.grad(problem.loss)(params)``; with
    ``read``, each entry is ``(params, read(state))``. The loop is one jitted scan.
    """
    grad = jax.grad(problem.loss)
    gradients = gradients or (lambda params, state, t: grad(params))

    def step(carry: Any, t: jax.Array) -> tuple[Any, Any]:
        params, state = carry
        updates, state = tx.update(gradients(params, state, t), state, params)
        params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
        return (params, state), (params if read is None else (params, read(state)))

    context = contextlib.nullcontext() if strict else standard_promotion()
    with context:
        params = problem.params(dtype)
        state = tx.init(params)
        ts = jnp.arange(steps, dtype=jnp.int32)
        (_, final), outs = jax.jit(lambda c: jax.lax.scan(step, c, ts))((params, state))
    return unstack(outs, steps), final


def unstack(stacked: Any, steps: int) -> list:
    """A tree of arrays with a leading step axis, as a list of per-step numpy trees."""
    leaves, treedef = jax.tree.flatten(stacked)
    return [jax.tree.unflatten(treedef, [np.asarray(x[i]) for x in leaves]) for i in range(steps)]


def poison(bad: dict[int, float]) -> Callable[[Any, jax.Array], Any]:
    """``corrupt(grads, t)``: the first element of the first leaf is ``bad[t]`` at those steps."""
    steps = jnp.asarray(list(bad), jnp.int32)
    values = np.asarray(list(bad.values()), np.float64)

    def corrupt(grads: Any, t: jax.Array) -> Any:
        leaves, treedef = jax.tree.flatten(grads)
        first = leaves[0]
        hit = t == steps
        value = jnp.asarray(values, first.dtype)[jnp.argmax(hit)]
        corner = (0,) * first.ndim
        leaves[0] = jnp.where(jnp.any(hit), first.at[corner].set(value), first)
        return jax.tree.unflatten(treedef, leaves)

    return corrupt


# name -> wrapper around an inner optimizer; lookahead needs LookaheadParams (see below).
WRAPPERS: dict[str, Callable[[Any], Any]] = {
    "multi_steps": lambda inner: jopt.multi_steps(inner, every_k_schedule=2),
    "apply_if_finite": lambda inner: jopt.apply_if_finite(inner, max_consecutive_errors=3),
    "dynamic_loss_scale": lambda inner: jopt.dynamic_loss_scale(inner, init_scale=1.0),
    "GradScaler": lambda inner: GradScaler("cpu", init_scale=1.0).wrap(inner),
    "ema_params": lambda inner: jopt.ema_params(inner, decay=0.9),
    "AveragedModel": lambda inner: AveragedModel(inner, multi_avg_fn=get_ema_multi_avg_fn(0.9)),
    "lookahead": lambda inner: jopt.lookahead(inner, sync_period=3, slow_step_size=0.5),
    "nested": lambda inner: jopt.multi_steps(
        jopt.dynamic_loss_scale(jopt.apply_if_finite(inner, 2), init_scale=1.0), 2
    ),
}
INNERS = {
    "adam": (lambda lr: jopt.adam(lr), "learning_rate"),
    "torch.SGD": (lambda lr: jopt.torch.SGD(lr=lr, momentum=0.9), "lr"),
}
CASES = [(name, "adam") for name in WRAPPERS] + [("nested", "torch.SGD")]


@pytest.mark.parametrize(("name", "inner"), CASES)
def test_inner_hyperparams_are_found_and_set_without_recompiling(name, inner):
    build, lr_name = INNERS[inner]
    tx = WRAPPERS[name](build(0.1))
    params = PROBLEMS[0].params("float32")
    grad = jax.grad(PROBLEMS[0].loss)
    if name == "lookahead":
        params = jopt.LookaheadParams.init_synced(params)
        grad = lambda p, g=grad: g(p.fast)
    traces = []

    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        traces.append(None)
        updates, state = tx.update(grad(params), state, params)
        return jopt.apply_updates(params, updates), state

    def run(state: Any, steps: int = 4) -> Any:
        p = params
        for _ in range(steps):
            p, state = step(p, state)
        return p, state

    state = tx.init(params)
    assert np.isclose(float(jopt.hyperparams(state)[lr_name]), 0.1)
    moved, state = run(state)
    assert max_relative_error([moved], [params])[0] > 1e-3

    frozen = jopt.set_hyperparams(state, {lr_name: 0.0})  # mid-run, on the state step returned
    assert float(jopt.hyperparams(frozen)[lr_name]) == 0.0
    still, frozen = run(frozen)
    assert jax.tree.all(jax.tree.map(np.array_equal, still, params)), "lr=0 still moved"
    assert float(jopt.hyperparams(frozen)[lr_name]) == 0.0
    assert len(traces) == 1, "the step recompiled"


@pytest.mark.parametrize(
    "name", ["multi_steps", "apply_if_finite", "dynamic_loss_scale", "ema_params", "AveragedModel"]
)
def test_vmap_over_independent_runs(name):
    """Each run of a batch decides for itself (no Python branching on traced values)."""
    tx = WRAPPERS[name](jopt.sgd(0.1))
    params = jnp.ones((2, 3))
    grads = jnp.array([[1.0, 2.0, 3.0], [1.0, jnp.nan, 3.0]])
    state = jax.vmap(tx.init)(params)
    updates, state = jax.jit(jax.vmap(tx.update))(grads, state, params)
    one_updates, one_state = jax.jit(tx.update)(grads[0], tx.init(params[0]), params[0])
    np.testing.assert_array_equal(updates[0], one_updates)
    for path, (a, b) in zip(
        jopt.tree.paths(one_state),
        zip(jax.tree.leaves(state), jax.tree.leaves(one_state), strict=True),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a)[0], b, err_msg=f"at {path}")


def test_find_state_names_what_is_missing_and_what_is_ambiguous():
    state = jopt.sgd(0.1).init(jnp.zeros(1))
    with pytest.raises(ValueError, match=r"^loss_scale: the state holds no DynamicLossScaleState"):
        jopt.loss_scale(state)
    tx = jopt.chain(jopt.dynamic_loss_scale(jopt.sgd(0.1)), jopt.dynamic_loss_scale(jopt.sgd(0.1)))
    state = tx.init(jnp.zeros(1))
    message = "scale_loss: the state holds 2 DynamicLossScaleStates (at '0', '1'); pass the one"
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        jopt.scale_loss(jnp.ones(()), state)
    assert find_state(state[1], jopt.DynamicLossScaleState, "t", "w") is state[1]
