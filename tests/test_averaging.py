"""ema_params: optax's ema applied to the parameters (torch's AveragedModel: tests/torch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.oracles import TOLERANCE, max_relative_error, run_jax, standard_promotion
from tests.problems import PROBLEMS
from tests.test_wrapping import run_steps, unstack


@pytest.mark.parametrize(
    ("debias", "dtype"), [(True, "float32"), (False, "float32"), (True, "float64")]
)
def test_ema_params_is_optax_ema_of_the_parameter_sequence(debias, dtype):
    problem = PROBLEMS[1]  # rosenbrock: the cheapest to compile
    with jax.enable_x64(dtype == "float64"):
        tx = jopt.ema_params(jopt.adam(0.002), decay=0.95, debias=debias)
        run, _ = run_steps(tx, problem, dtype, read=jopt.averaged_params)
        params = [p for p, _ in run]
        ema = optax.ema(0.95, debias=debias)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)

        def body(state, p):
            out, state = ema.update(p, state)
            return state, out

        with standard_promotion():
            _, outs = jax.lax.scan(body, ema.init(params[0]), stacked)
        theirs = unstack(outs, len(params))
        if debias and dtype == "float32":  # the wrapper leaves the optimizer's updates alone
            plain = run_jax(jopt.adam(0.002), problem, dtype)
            assert max_relative_error(params, plain)[0] == 0.0
    error, where = max_relative_error([a for _, a in run], theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{error:.3g} at {where}"


def test_ema_params_keeps_the_average_in_the_accumulator_dtype():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = jopt.ema_params(jopt.sgd(0.1), 0.999, accumulator_dtype=jnp.float32)
    state = tx.init(params)
    seen = []
    for _ in range(3):
        updates, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
        params = jopt.apply_updates(params, updates)
        seen.append(float(params["w"][0]))
    assert state.average["w"].dtype == jnp.float32
    assert params["w"].dtype == jnp.bfloat16
    weights = 0.999 ** np.arange(2, -1, -1)  # the debiased EMA of the bfloat16 sequence
    expected = float(np.sum(weights * np.asarray(seen)) / np.sum(weights))
    # 1 - 0.999**3 loses ~5 digits in float32 (as in optax): relative 1e-4
    np.testing.assert_allclose(jopt.averaged_params(state)["w"], expected, rtol=1e-4)


def test_bad_decay_is_named():
    with pytest.raises(ValueError, match=r"^decay=1.5 must be in \[0, 1\]$"):
        jopt.ema_params(jopt.sgd(0.1), decay=1.5)


def test_averaging_needs_params():
    tx = jopt.ema_params(jopt.sgd(0.1), 0.9)
    with pytest.raises(ValueError, match=r"^ema_params needs params: call update\(updates, state"):
        tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))
