"""multi_steps: optax 0.2.8's MultiSteps trajectory, and k micro-batches = one big batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jopt
from tests.oracles import TOLERANCE, max_relative_error, standard_promotion
from tests.problems import PROBLEMS
from tests.test_wrapping import poison, run_steps

BAD = {4: np.nan, 5: np.inf, 30: np.nan, 61: -np.inf}


def _k_schedule(step):
    """1 micro-step for the first 5 updates, then 4 (a growing batch)."""
    return jnp.where(step < 5, 1, 4)


# (jopt inner, optax inner, every_k_schedule, use_grad_mean, skip non-finite micro-steps)
CASES = {
    "adam-k3-mean-skip": (lambda: jopt.adam(0.002), lambda: optax.adam(0.002), 3, True, True),
    "sgd-momentum-schedule-sum": (
        lambda: jopt.sgd(0.0002, momentum=0.9),
        lambda: optax.sgd(0.0002, momentum=0.9),
        _k_schedule,
        False,
        False,
    ),
}


@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        ("adam-k3-mean-skip", "float32"),
        ("adam-k3-mean-skip", "float64"),
        ("sgd-momentum-schedule-sum", "float32"),
    ],
)
def test_matches_optax_multisteps(case, dtype):
    ours_inner, theirs_inner, k, mean, skip = CASES[case]
    problem = PROBLEMS[1]  # rosenbrock: the cheapest to compile
    corrupt = poison(BAD) if skip else (lambda g, t: g)
    gradients = lambda params, state, t: corrupt(jax.grad(problem.loss)(params), t)
    read = lambda state: (state.mini_step, state.gradient_step, state.skip_state)
    with jax.enable_x64(dtype == "float64"):
        tx = jopt.multi_steps(ours_inner(), k, mean, jopt.skip_not_finite if skip else None)
        ours, our_state = run_steps(tx, problem, dtype, gradients=gradients, read=read)
        with standard_promotion():
            reference = optax.MultiSteps(
                theirs_inner(),
                k,
                mean,
                optax.skip_not_finite if skip else None,
                accumulator_dtype=jnp.dtype(dtype),
            ).gradient_transformation()
        theirs, _ = run_steps(
            reference, problem, dtype, gradients=gradients, read=read, strict=False
        )
    error, where = max_relative_error([p for p, _ in ours], [p for p, _ in theirs])
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{case}: {error:.3g} at {where}"
    for step, ((_, a), (_, b)) in enumerate(zip(ours, theirs, strict=True)):
        same = jax.tree.all(jax.tree.map(np.array_equal, a, b))
        assert same, f"counters differ at step {step}: {a} vs {b}"
    if skip:
        assert int(our_state.gradient_step) == (100 - len(BAD)) // 3


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(6, 16, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.gelu(self.hidden(x)))


@pytest.mark.parametrize(
    "make", [lambda: jopt.adam(0.01), lambda: jopt.torch.SGD(lr=0.1, momentum=0.9)]
)
def test_k_micro_batches_equal_one_step_on_the_whole_batch(make):
    """A flax MLP: 4 micro-batches of 8 accumulated = 1 batch of 32 (float32 round-off).

    The loss is a mean over examples, so the mean of the micro-batch gradients is the
    whole-batch gradient up to float32 round-off; the tolerance is relative 1e-5 of
    each parameter's scale over three updates.
    """
    k, micro = 4, 8
    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, k * micro, 6)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(3, k * micro, 3)), jnp.float32)

    def loss(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    def stepper(tx):
        @jax.jit
        def step(params, state, x, y):
            updates, state = tx.update(jax.grad(loss)(params, x, y), state, params)
            return jopt.apply_updates(params, updates), state

        return step

    big_tx, small_tx = make(), jopt.multi_steps(make(), every_k_schedule=k)
    big_step, small_step = stepper(big_tx), stepper(small_tx)
    big, big_state = params, big_tx.init(params)
    small, small_state = params, small_tx.init(params)
    big_run, small_run = [], []
    for outer in range(3):
        big, big_state = big_step(big, big_state, x[outer], y[outer])
        for i in range(k):
            before = small
            chunk = slice(i * micro, (i + 1) * micro)
            small, small_state = small_step(small, small_state, x[outer, chunk], y[outer, chunk])
            if i < k - 1:
                assert jax.tree.all(jax.tree.map(np.array_equal, small, before))
                assert not bool(jopt.has_updated(small_state))
        assert bool(jopt.has_updated(small_state))
        big_run.append(big)
        small_run.append(small)
    error, where = max_relative_error(small_run, big_run)
    assert error <= 1e-5, f"{error:.3g} at {where}"
    assert max_relative_error(big_run[1:], big_run[:-1])[0] > 1e-3  # training moved


def test_has_updated_is_false_on_a_skipped_call_after_an_update():
    tx = jopt.multi_steps(jopt.sgd(1.0), 2, should_skip_update_fn=jopt.skip_not_finite)
    state = tx.init(jnp.zeros(1))
    flags = []
    for g in [1.0, 3.0, np.nan, 5.0, 7.0]:
        updates, state = tx.update(jnp.array([g]), state)
        flags.append((bool(jopt.has_updated(state)), float(updates[0])))
    assert flags == [(False, 0.0), (True, -2.0), (False, 0.0), (False, 0.0), (True, -6.0)]
    assert int(state.skip_state["num_not_finite"]) == 0


def test_accumulator_dtype():
    params = {"h": jnp.zeros(2, jnp.bfloat16), "f": jnp.zeros(2)}
    state = jopt.multi_steps(jopt.sgd(0.1), 2).init(params)
    assert {k: v.dtype for k, v in state.acc_grads.items()} == {"f": "float32", "h": "float32"}
    state = jopt.multi_steps(jopt.sgd(0.1), 2, accumulator_dtype=jnp.bfloat16).init(params)
    assert state.acc_grads["f"].dtype == jnp.bfloat16
    with jax.enable_x64(True):
        state = jopt.multi_steps(jopt.sgd(0.1), 2).init(jnp.zeros(2, jnp.float64))
        assert state.acc_grads.dtype == jnp.float64
    # bfloat16 gradients come back as bfloat16 updates
    tx = jopt.multi_steps(jopt.sgd(0.5), 1)
    updates, _ = tx.update(params, tx.init(params))
    assert updates["h"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("every_k_schedule", "error", "message"),
    [
        (0, ValueError, "every_k_schedule=0 must be >= 1"),
        (-3, ValueError, "every_k_schedule=-3 must be >= 1"),
        (lambda step: 0, ValueError, "every_k_schedule(0)=0 must be >= 1"),
        (2.0, TypeError, "every_k_schedule must be an int or a function of the step, got float"),
    ],
)
def test_bad_every_k_schedule_is_named(every_k_schedule, error, message):
    with pytest.raises(error, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        jopt.multi_steps(jopt.sgd(0.1), every_k_schedule)


def test_should_skip_update_fn_must_return_a_boolean_scalar():
    tx = jopt.multi_steps(jopt.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (0.0, ()))
    with pytest.raises(ValueError, match=r"^should_skip_update_fn must return a boolean scalar"):
        tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))
