"""The torch door to loss scaling: the real torch.amp.GradScaler driven with the same gradients.

The gradients are those of a linear loss ``sum(p * g)`` with ``g`` the problem's gradient
at the current parameters, so both libraries differentiate the scaled loss themselves
(torch: ``scaler.scale(loss).backward()``, jopt: ``jax.grad`` of ``scaler.scale``) and
get bit-identical scaled gradients. The scale starts near float32's limit, so it both
grows and overflows on its own, and NaNs and Infs are injected on top.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jopt
from jopt.torch.amp import GradScaler
from tests.oracles import STEPS, TOLERANCE, max_relative_error
from tests.problems import PROBLEMS
from tests.test_wrapping import poison, run_steps

BAD = {7: np.nan, 8: np.inf, 50: -np.inf}
CASES = {
    "Adam": (dict(lr=0.002), dict(init_scale=2.0**118, growth_interval=4)),
    "SGD": (
        dict(lr=0.0005, momentum=0.9),
        dict(init_scale=2.0**118, growth_factor=1.5, backoff_factor=0.25, growth_interval=3),
    ),
}


def _linear_loss(params, grads):
    return sum(
        jnp.sum(p * g) for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads), strict=True)
    )


def _run_torch(problem, name, options, scaler_options, dtype):
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    leaves, treedef = jax.tree.flatten(problem.params(dtype))
    tensors = [torch.tensor(np.asarray(x), dtype=torch_dtype, requires_grad=True) for x in leaves]
    optimizer = getattr(torch.optim, name)(tensors, **options)
    scaler = torch.amp.GradScaler("cpu", **scaler_options)
    corrupt = poison(BAD)
    gradient = jax.jit(lambda params, t: corrupt(jax.grad(problem.loss)(params), t))
    trajectory, scales, skipped = [], [], 0
    for t in range(STEPS):
        current = jax.tree.unflatten(treedef, [jnp.asarray(x.detach().numpy()) for x in tensors])
        grads = jax.tree.leaves(gradient(current, jnp.asarray(t, jnp.int32)))
        optimizer.zero_grad()
        loss = sum(
            (x * torch.tensor(np.asarray(g))).sum() for x, g in zip(tensors, grads, strict=True)
        )
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < before  # torch backs off exactly when it skips
        scales.append(scaler.get_scale())
        trajectory.append(
            (
                jax.tree.unflatten(treedef, [x.detach().numpy().copy() for x in tensors]),
                (scales[-1], skipped),
            )
        )
    if name == "Adam":  # torch's own count of the steps it took
        assert int(optimizer.state[tensors[0]]["step"]) == STEPS - skipped
    return trajectory


@pytest.mark.parametrize(
    ("name", "dtype"), [("Adam", "float32"), ("SGD", "float32"), ("Adam", "float64")]
)
def test_matches_torch_grad_scaler(name, dtype):
    options, scaler_options = CASES[name]
    problem = PROBLEMS[1]  # rosenbrock: the cheapest to compile
    corrupt = poison(BAD)
    scaler = GradScaler("cpu", **scaler_options)

    def gradients(params, state, t):
        # the barrier keeps XLA from folding the scale into the gradient's constants
        # ((200 * d) * S becoming d * (200 * S), which overflows where torch does not)
        grads = jax.lax.optimization_barrier(corrupt(jax.grad(problem.loss)(params), t))
        return jax.grad(lambda p: scaler.scale(_linear_loss(p, grads), state))(params)

    read = lambda state: (scaler.get_scale(state), jopt.skipped_steps(state))
    with jax.enable_x64(dtype == "float64"):
        tx = scaler.wrap(getattr(jopt.torch, name)(**options))
        ours, state = run_steps(tx, problem, dtype, gradients=gradients, read=read)
        theirs = _run_torch(problem, name, options, scaler_options, dtype)
    our_scales = [float(s) for _, (s, _) in ours]
    their_scales = [s for _, (s, _) in theirs]
    assert our_scales == their_scales
    assert [int(n) for _, (_, n) in ours] == [n for _, (_, n) in theirs]
    error, where = max_relative_error([p for p, _ in ours], [p for p, _ in theirs])
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}: {error:.3g} at {where}"
    # the run exercised every branch: growth, injected NaN/Inf and (float32) natural overflow
    overflows = int(state.skipped_steps) - len(BAD)
    assert overflows > 0 if dtype == "float32" else overflows == 0
    assert max(our_scales) > scaler_options["init_scale"]
    assert int(state.inner_state.count) == STEPS - int(state.skipped_steps)


def test_grad_scaler_signature_and_getters_are_torchs():
    ours = inspect.signature(GradScaler).parameters
    theirs = inspect.signature(torch.amp.GradScaler.__init__).parameters
    assert [a for a in theirs if a != "self"] == list(ours)
    for arg, parameter in ours.items():
        assert parameter.default == theirs[arg].default, arg
    scaler, reference = GradScaler("cpu"), torch.amp.GradScaler("cpu")
    for getter in ["get_growth_factor", "get_backoff_factor", "get_growth_interval", "is_enabled"]:
        assert getattr(scaler, getter)() == getattr(reference, getter)(), getter


def test_disabled_grad_scaler_is_the_plain_optimizer():
    scaler = GradScaler(enabled=False, growth_factor=0.5)  # not validated, as in torch
    optimizer = jopt.torch.SGD(lr=0.1)
    assert scaler.wrap(optimizer) is optimizer
    state = optimizer.init(jnp.zeros(1))
    assert float(scaler.scale(jnp.asarray(3.0), state)) == 3.0
    assert float(scaler.get_scale(state)) == 1.0
