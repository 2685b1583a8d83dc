"""lookahead against optax 0.2.8's, fast and slow weights step by step."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import optax
import pytest

import jopt
from tests.oracles import STEPS, TOLERANCE, max_relative_error, standard_promotion
from tests.problems import PROBLEMS
from tests.test_wrapping import unstack


def run_lookahead(tx, pair, problem, dtype, *, strict=True):
    """Trajectory of (fast, slow) pairs: gradients at the fast weights, one jitted scan."""
    grad = jax.grad(problem.loss)

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(grad(params.fast), state, params)
        params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
        return (params, state), params

    with contextlib.nullcontext() if strict else standard_promotion():
        params = pair.init_synced(problem.params(dtype))
        state = tx.init(params)
        _, out = jax.jit(lambda c: jax.lax.scan(step, c, length=STEPS))((params, state))
    return [{"fast": p.fast, "slow": p.slow} for p in unstack(out, STEPS)]


CASES = {
    "adam": (lambda: jopt.adam(0.002), lambda: optax.adam(0.002), False),
    "sgd-momentum-reset": (
        lambda: jopt.sgd(0.0002, momentum=0.9),
        lambda: optax.sgd(0.0002, momentum=0.9),
        True,
    ),
}


@pytest.mark.parametrize(
    ("case", "dtype"),
    [("adam", "float32"), ("adam", "float64"), ("sgd-momentum-reset", "float32")],
)
def test_matches_optax(case, dtype):
    ours_fast, theirs_fast, reset = CASES[case]
    problem = PROBLEMS[1]  # rosenbrock: the cheapest to compile
    with jax.enable_x64(dtype == "float64"):
        ours = run_lookahead(
            jopt.lookahead(ours_fast(), 5, 0.5, reset), jopt.LookaheadParams, problem, dtype
        )
        with standard_promotion():
            reference = optax.lookahead(theirs_fast(), 5, 0.5, reset)
        theirs = run_lookahead(reference, optax.LookaheadParams, problem, dtype, strict=False)
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{case}: {error:.3g} at {where}"
    assert max_relative_error([o["slow"] for o in ours], [o["fast"] for o in ours])[0] > 0


def test_state_and_params_have_optaxs_layout():
    assert jopt.LookaheadState._fields == optax.LookaheadState._fields
    assert jopt.LookaheadParams._fields == optax.LookaheadParams._fields
    params = jnp.ones(2)
    tx = jopt.lookahead(jopt.sgd(0.1), 2, 0.5)
    plain, paired = tx.init(params), tx.init(jopt.LookaheadParams.init_synced(params))
    assert jax.tree.structure(plain) == jax.tree.structure(paired)  # init takes either


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (dict(sync_period=0, slow_step_size=0.5), ValueError, "sync_period=0 must be >= 1"),
        (
            dict(sync_period=2.0, slow_step_size=0.5),
            TypeError,
            "sync_period must be an int, got float",
        ),
        (
            dict(sync_period=2, slow_step_size=1.5),
            ValueError,
            r"slow_step_size=1.5 must be in \[0, 1\]",
        ),
    ],
)
def test_bad_arguments_are_named(options, error, message):
    with pytest.raises(error, match="^" + message + "$"):
        jopt.lookahead(jopt.sgd(0.1), **options)


def test_update_needs_the_lookahead_params():
    tx = jopt.lookahead(jopt.sgd(0.1), 2, 0.5)
    with pytest.raises(ValueError, match=r"^lookahead needs the LookaheadParams"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
