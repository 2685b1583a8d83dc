"""jopt optimizers inside flax's nnx.Optimizer."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jopt
from tests.oracles import standard_promotion


def test_plugs_into_flax_nnx_optimizer():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x):
            return self.linear(x)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
    y = x @ jnp.asarray([[1.0], [-2.0], [0.5]], jnp.float32) + 0.3
    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, jopt.adamw(0.05), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def mse(model):
            return jnp.mean((model(x) - y) ** 2)

        value, grads = nnx.value_and_grad(mse)(model)
        optimizer.update(model, grads)
        return value

    with standard_promotion():  # flax's own internals are not strict-promotion clean
        first = float(step(model, optimizer))
        for _ in range(200):
            last = float(step(model, optimizer))
    assert last < 0.01 * first
    assert "learning_rate" in jopt.hyperparams(nnx.as_pure(optimizer.opt_state))
