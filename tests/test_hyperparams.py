"""Hyperparameters in the state: read, set, schedules, fixed values, validation, no recompiles."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jopt

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}


def _floats(values):
    return {k: np.round(np.asarray(v, np.float64), 6).tolist() for k, v in values.items()}


def test_reads_every_hyperparameter_by_its_door_name():
    assert _floats(jopt.hyperparams(jopt.adamw(1e-3).init(PARAMS))) == {
        "learning_rate": 0.001,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 0.0,
        "eps_root": 0.0,
        "weight_decay": 0.0001,
    }
    assert _floats(jopt.hyperparams(jopt.torch.Adam(lr=0.01, weight_decay=0.1).init(PARAMS))) == {
        "lr": 0.01,
        "betas": [0.9, 0.999],
        "eps": 0.0,
        "weight_decay": 0.1,
    }


def test_set_changes_the_update():
    tx = jopt.sgd(0.1)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = jopt.set_hyperparams(state, learning_rate=0.5)
    updates, state = tx.update(grads, state, PARAMS)
    np.testing.assert_allclose(updates["w"], -0.5)
    assert float(jopt.hyperparams(state)["learning_rate"]) == 0.5


def test_set_under_jit_does_not_recompile():
    tx = jopt.adam(1e-3)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    params, state = step(PARAMS, tx.init(PARAMS))
    for lr in (1e-2, 3e-4, 0.1):
        state = jopt.set_hyperparams(state, learning_rate=lr, b1=0.5)
        params, state = step(params, state)
    assert len(traces) == 1
    assert np.isclose(float(jopt.hyperparams(state)["learning_rate"]), 0.1)


def test_set_inside_jit_with_traced_values():
    tx = jopt.torch.SGD(lr=0.1, momentum=0.9)

    @jax.jit
    def with_lr(state, lr):
        return jopt.set_hyperparams(state, lr=lr)

    state = with_lr(tx.init(PARAMS), jnp.float32(0.25))
    assert float(jopt.hyperparams(state)["lr"]) == 0.25


def test_scheduled_value_is_the_one_the_next_step_uses_like_torch():
    """After k steps, hyperparams() shows what torch's param_groups show after k steps."""
    schedule = jopt.torch.lr_scheduler.StepLR(0.1, step_size=3, gamma=0.5)
    tx = jopt.torch.SGD(lr=schedule)
    state = tx.init(PARAMS)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    for _ in range(10):
        ours = float(jopt.hyperparams(state)["lr"])
        assert np.isclose(ours, optimizer.param_groups[0]["lr"]), (ours, scheduler.get_last_lr())
        _, state = tx.update(grads, state, PARAMS)
        param.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(
    ("tx", "values", "error", "message"),
    [
        (
            jopt.sgd(0.1),
            {"learning_rate": -1.0},
            ValueError,
            "sgd: learning_rate=-1.0 must be >= 0",
        ),
        (jopt.adam(0.1), {"b1": 1.0}, ValueError, "adam: b1=1.0 must be in [0, 1)"),
        (
            jopt.torch.Adam(),
            {"betas": (0.9, 1.5)},
            ValueError,
            "torch.Adam: betas[1]=1.5 must be in [0, 1) (got betas=(0.9, 1.5))",
        ),
        (
            jopt.torch.Adam(),
            {"betas": 0.9},
            ValueError,
            "torch.Adam: betas must have shape [2], got []",
        ),
        (
            jopt.torch.Adam(),
            {"weight_decay": 0.1},
            ValueError,
            "torch.Adam: weight_decay is fixed at 0.0: it shaped the program at construction",
        ),
        (
            jopt.adam(jopt.cosine_decay_schedule(0.1, 100)),
            {"learning_rate": 0.1},
            ValueError,
            "adam: learning_rate follows a schedule",
        ),
        (
            jopt.adam(0.1),
            {"lr": 0.1},
            KeyError,
            "unknown hyperparameter(s) ['lr']; this state has ['b1', 'b2', 'eps', 'eps_root', "
            "'learning_rate']",
        ),
    ],
)
def test_set_refuses_bad_values_with_a_message(tx, values, error, message):
    state = tx.init(PARAMS)
    with pytest.raises(error, match=re.escape(message)):
        jopt.set_hyperparams(state, values)


def test_names_that_clash_in_a_chain_are_qualified_by_position():
    tx = jopt.chain(jopt.adam(1e-3), jopt.sgd(0.1, momentum=0.9))
    state = tx.init(PARAMS)
    names = set(jopt.hyperparams(state))
    expected = {"0/learning_rate", "1/learning_rate", "b1", "b2", "eps", "eps_root", "momentum"}
    assert names == expected
    one = jopt.set_hyperparams(state, {"1/learning_rate": 0.5})
    assert _floats(jopt.hyperparams(one))["0/learning_rate"] == 0.001
    assert _floats(jopt.hyperparams(one))["1/learning_rate"] == 0.5
    both = jopt.set_hyperparams(state, learning_rate=0.2)
    assert {v for k, v in _floats(jopt.hyperparams(both)).items() if "learning_rate" in k} == {0.2}


def test_split_storage_keeps_one_minus_b2_exact_in_float32():
    """b2 = 0.99999 is 0.9999900 in float32; 1 - b2 is kept exact through the lo part."""
    tx = jopt.adam(1.0, b1=0.0, b2=0.99999, eps=0.0)
    state = tx.init(jnp.zeros(1))
    assert state.values.dtype == jnp.float32
    _, state = tx.update(jnp.array([2.0]), state)
    nu = jax.tree.leaves(state.inner_state.inner_state[0].nu)[0]
    assert float(nu[0]) == float(np.float32(4.0 * (1 - 0.99999)))
    state = jopt.set_hyperparams(state, b2=0.99999)  # set from the host keeps the lo part too
    _, state = tx.update(jnp.array([2.0]), state)
    expected = np.float32(np.float32(1 - 0.99999) * 4 + np.float32(0.99999) * nu[0])
    assert float(jax.tree.leaves(state.inner_state.inner_state[0].nu)[0][0]) == float(expected)


def test_nested_with_hyperparams_is_found():
    outer = jopt.with_hyperparams(
        lambda scale: jopt.chain(jopt.adam(0.1), jopt.scale(scale)), owner="outer", scale=2.0
    )
    state = outer.init(PARAMS)
    assert set(jopt.hyperparams(state)) == {"scale", "learning_rate", "b1", "b2", "eps", "eps_root"}
    state = jopt.set_hyperparams(state, learning_rate=0.5, scale=3.0)
    assert _floats(jopt.hyperparams(state))["learning_rate"] == 0.5
    assert _floats(jopt.hyperparams(state))["scale"] == 3.0


def test_a_state_from_another_optimizer_is_refused():
    with pytest.raises(TypeError, match=r"adam\.update got a state that adam\.init did not make"):
        jopt.adam(0.1).update(PARAMS, jopt.sgd(0.1).init(PARAMS), PARAMS)
