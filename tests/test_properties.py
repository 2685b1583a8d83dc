"""Invariants every optimizer of both doors keeps, and interop with optax and flax.

One table of optimizers, crossed with the properties: jit without recompiles, vmap,
dtypes kept (and finite) in half precision, extra arguments ignored, a stable state
structure, construction-time validation, and mixing with optax and flax.
"""

from __future__ import annotations

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.oracles import standard_promotion

OPTIMIZERS = {
    "sgd": lambda: jopt.sgd(0.01),
    "sgd-momentum": lambda: jopt.sgd(0.01, momentum=0.9, nesterov=True),
    "adam": lambda: jopt.adam(1e-3),
    "adamw": lambda: jopt.adamw(1e-3, weight_decay=0.01),
    "rmsprop": lambda: jopt.rmsprop(1e-3, centered=True, momentum=0.9),
    "adagrad": lambda: jopt.adagrad(0.01),
    "adadelta": lambda: jopt.adadelta(weight_decay=0.01),
    "torch.SGD": lambda: jopt.torch.SGD(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-4),
    "torch.Adam": lambda: jopt.torch.Adam(amsgrad=True, weight_decay=1e-4),
    "torch.AdamW": lambda: jopt.torch.AdamW(maximize=True),
    "torch.RMSprop": lambda: jopt.torch.RMSprop(momentum=0.9, centered=True),
    "torch.Adagrad": lambda: jopt.torch.Adagrad(lr_decay=0.01),
    "torch.Adadelta": lambda: jopt.torch.Adadelta(weight_decay=1e-4),
    "scheduled": lambda: jopt.adam(jopt.warmup_cosine_decay_schedule(0.0, 1e-3, 5, 50)),
}
NAMES = list(OPTIMIZERS)


def make_params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return {
        "dense": [{"w": jnp.asarray(rng.normal(size=(4, 3)), dtype), "b": jnp.zeros(3, dtype)}],
        "scale": jnp.ones((), dtype),
        "big": jnp.asarray(rng.normal(size=(300, 300)), dtype),  # a leaf of its own when fused
    }


def loss(params):
    leaves = jax.tree.leaves(params)
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32) - 0.5)) for x in leaves)


def train_step(tx):
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("name", NAMES)
def test_jit_compiles_once_and_descends(name):
    tx = OPTIMIZERS[name]()
    traces = []

    def counted(params, state):
        traces.append(1)
        return train_step(tx)(params, state)

    step = jax.jit(counted, donate_argnums=(0, 1))
    params = make_params()
    start = float(loss(params))
    state = tx.init(params)
    for _ in range(5):
        params, state = step(params, state)
    assert len(traces) == 1
    final = float(loss(params))
    if name == "torch.AdamW":  # maximize=True climbs
        assert final > start
    else:
        assert final < start


@pytest.mark.parametrize("name", NAMES)
def test_state_structure_is_stable_and_extra_args_are_ignored(name):
    tx = OPTIMIZERS[name]()
    params = make_params()
    state = tx.init(params)
    grads = jax.grad(loss)(params)
    updates, new_state = tx.update(grads, state, params, value=jnp.float32(1.0), unused="ok")
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert old.shape == new.shape and old.dtype == new.dtype
    assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_a_batch_of_problems(name):
    tx = OPTIMIZERS[name]()
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), make_params())
    states = jax.vmap(tx.init)(batch)
    new_params, _ = jax.vmap(train_step(tx))(batch, states)
    for i in range(2):
        one = jax.tree.map(lambda x, i=i: x[i], batch)
        expected, _ = train_step(tx)(one, tx.init(one))
        for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_keeps_dtypes_and_stays_finite(name, dtype):
    tx = OPTIMIZERS[name]()
    params = make_params(dtype)
    state = tx.init(params)
    step = jax.jit(train_step(tx))
    for _ in range(20):
        params, state = step(params, state)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(leaf)))
    grads = jax.grad(loss)(params)
    updates, _ = tx.update(grads, state, params)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))


def test_float16_adam_stays_finite_where_optax_overflows():
    """optax's adam on float16 params: the second moment underflows and eps rounds to 0."""
    params = {"w": jnp.full((8,), 1.0, jnp.float16)}
    tiny = lambda p: jnp.sum(p["w"].astype(jnp.float32)) * 1e-4  # gradients of 1e-4

    def run(tx, promotion):
        state = tx.init(params)
        p = params
        for _ in range(3):
            with promotion():
                updates, state = tx.update(jax.grad(tiny)(p), state, p)
                p = optax.apply_updates(p, updates)
        return p["w"]

    assert bool(jnp.all(jnp.isfinite(run(jopt.adam(1e-3), contextlib.nullcontext))))
    assert not bool(jnp.all(jnp.isfinite(run(optax.adam(1e-3), standard_promotion))))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: jopt.sgd(-0.1), "sgd: learning_rate=-0.1 must be >= 0"),
        (lambda: jopt.sgd(0.1, nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda: jopt.adam(1e-3, b1=1.0), "adam: b1=1.0 must be in [0, 1)"),
        (lambda: jopt.adam(1e-3, b2=-0.1), "adam: b2=-0.1 must be in [0, 1)"),
        (lambda: jopt.adam(1e-3, eps=-1e-8), "adam: eps=-1e-08 must be >= 0"),
        (lambda: jopt.adamw(1e-3, weight_decay=-1.0), "adamw: weight_decay=-1.0 must be >= 0"),
        (lambda: jopt.rmsprop(1e-3, decay=1.5), "rmsprop: decay=1.5 must be in [0, 1]"),
        (lambda: jopt.rmsprop(1e-3, nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda: jopt.adagrad(1e-3, initial_accumulator_value=-1.0), "must be >= 0"),
        (lambda: jopt.adadelta(rho=2.0), "adadelta: rho=2.0 must be in [0, 1]"),
        (lambda: jopt.torch.SGD(lr=-1.0), "torch.SGD: lr=-1.0 must be >= 0"),
        (lambda: jopt.torch.SGD(momentum=-0.5), "torch.SGD: momentum=-0.5 must be >= 0"),
        (
            lambda: jopt.torch.SGD(nesterov=True),
            "nesterov=True requires momentum > 0, got momentum=0.0",
        ),
        (
            lambda: jopt.torch.SGD(momentum=0.9, dampening=0.1, nesterov=True),
            "nesterov=True requires dampening=0, got dampening=0.1",
        ),
        (
            lambda: jopt.torch.Adam(betas=(0.9, 1.0)),
            "torch.Adam: betas[1]=1.0 must be in [0, 1) (got betas=(0.9, 1.0))",
        ),
        (lambda: jopt.torch.Adam(betas=(0.9,)), "betas=(0.9,) must be a pair (beta1, beta2)"),
        (lambda: jopt.torch.AdamW(weight_decay=-0.1), "torch.AdamW: weight_decay=-0.1 must be"),
        (lambda: jopt.torch.RMSprop(alpha=1.5), "torch.RMSprop: alpha=1.5 must be in [0, 1]"),
        (lambda: jopt.torch.Adagrad(lr_decay=-1.0), "torch.Adagrad: lr_decay=-1.0 must be >= 0"),
        (lambda: jopt.torch.Adadelta(eps=-1.0), "torch.Adadelta: eps=-1.0 must be >= 0"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_mixes_with_optax_in_either_chain():
    params = make_params()
    grads = jax.grad(loss)(params)
    with standard_promotion():
        reference = optax.chain(optax.clip(1.0), optax.adam(1e-3))
        theirs, _ = reference.update(grads, reference.init(params), params)
        ours_in_optax = optax.chain(optax.clip(1.0), jopt.adam(1e-3))
        a, _ = ours_in_optax.update(grads, ours_in_optax.init(params), params)
        optax_in_ours = jopt.chain(optax.clip(1.0), jopt.adam(1e-3))
        b, _ = optax_in_ours.update(grads, optax_in_ours.init(params), params)
        after = optax.chain(jopt.adam(1e-3), optax.clip(1e-4))
        c, _ = after.update(grads, after.init(params), params)
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(theirs), strict=True)
    for x, y, z in leaves:
        np.testing.assert_allclose(x, z, rtol=1e-6)
        np.testing.assert_allclose(y, z, rtol=1e-6)
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(c)) <= 1e-4
