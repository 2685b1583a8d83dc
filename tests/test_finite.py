"""apply_if_finite against optax 0.2.8's, with NaNs and Infs injected into real gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.oracles import TOLERANCE, max_relative_error, standard_promotion
from tests.problems import PROBLEMS
from tests.test_wrapping import poison, run_steps

# step -> injected value: runs of at most 2 in a row, so max_consecutive_errors=2 never gives up
BAD = {3: np.nan, 10: np.inf, 11: -np.inf, 40: np.nan, 41: np.inf, 77: np.nan}


def _counters(state):
    return (int(state.notfinite_count), bool(state.last_finite), int(state.total_notfinite))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_optax(dtype):
    problem = PROBLEMS[1]  # rosenbrock: the cheapest to compile
    corrupt = poison(BAD)
    gradients = lambda params, state, t: corrupt(jax.grad(problem.loss)(params), t)
    with jax.enable_x64(dtype == "float64"):
        ours, our_state = run_steps(
            jopt.apply_if_finite(jopt.adam(0.002), 2), problem, dtype, gradients=gradients
        )
        with standard_promotion():
            reference = optax.apply_if_finite(optax.adam(0.002), 2)
        theirs, their_state = run_steps(
            reference, problem, dtype, gradients=gradients, strict=False
        )
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{error:.3g} at {where}"
    assert _counters(our_state) == _counters(their_state) == (0, True, len(BAD))
    assert int(our_state.inner_state.count) == 100 - len(BAD)  # adam stepped only when finite


def test_a_dropped_step_leaves_params_and_inner_state_untouched():
    tx = jopt.apply_if_finite(jopt.adam(0.1), max_consecutive_errors=5)
    params = {"w": jnp.ones(3)}
    _, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    updates, after = jax.jit(tx.update)({"w": jnp.array([1.0, -jnp.inf, 0.0])}, state, params)
    np.testing.assert_array_equal(updates["w"], np.zeros(3))
    for a, b in zip(
        jax.tree.leaves(after.inner_state), jax.tree.leaves(state.inner_state), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert _counters(after) == (1, False, 1)


@pytest.mark.parametrize("max_errors", [0, 2])
def test_gives_up_after_max_consecutive_errors_as_optax_does(max_errors):
    grads = [jnp.array([1.0, jnp.nan])] * (max_errors + 1) + [jnp.array([1.0, 2.0])]
    outs = []
    for tx in (
        jopt.apply_if_finite(jopt.sgd(0.1), max_errors),
        optax.apply_if_finite(optax.sgd(0.1), max_errors),
    ):
        with standard_promotion():
            state = tx.init(jnp.zeros(2))
            run = []
            for g in grads:
                updates, state = tx.update(g, state)
                run.append((np.asarray(updates).tolist(), _counters(state)))
        outs.append(run)
    ours, theirs = outs
    assert str(ours) == str(theirs)  # NaN-aware equality
    assert np.isnan(ours[max_errors][0][1]), "the (max + 1)-th bad step is applied"
    assert ours[-1][1] == (0, True, max_errors + 1)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "max_consecutive_errors=-1 must be >= 0"),
        (1.5, TypeError, "max_consecutive_errors must be an int, got float"),
    ],
)
def test_bad_max_consecutive_errors_is_named(value, error, message):
    with pytest.raises(error, match="^" + message + "$"):
        jopt.apply_if_finite(jopt.sgd(0.1), value)


def test_all_finite():
    assert bool(jopt.all_finite({}))
    assert bool(jopt.all_finite({"a": jnp.ones(2), "b": jnp.arange(3)}))
    assert not bool(jopt.all_finite([jnp.ones(2), jnp.array([-jnp.inf])]))
    assert not bool(jax.jit(jopt.all_finite)(jnp.array([1.0, jnp.nan], jnp.bfloat16)))
