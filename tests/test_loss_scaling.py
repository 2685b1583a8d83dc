"""Dynamic loss scaling: half-precision training, accumulation, validation.

Parity with the real ``torch.amp.GradScaler`` is in ``tests/torch/test_amp.py``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jopt
from jopt.torch.amp import GradScaler


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dtype):
        self.hidden = nnx.Linear(8, 32, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.out = nnx.Linear(32, 1, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


@pytest.mark.parametrize("compute", ["bfloat16", "float16"])
def test_half_precision_compute_with_float32_master_weights_trains(compute):
    """Forward and backward in half precision, parameters and Adam in float32."""
    graphdef, params = nnx.split(MLP(nnx.Rngs(0), jnp.dtype(compute)), nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(64, 1)) + np.asarray(x[:, :1])), jnp.float32)

    def loss(params):
        prediction = nnx.merge(graphdef, params)(x.astype(compute))
        return jnp.mean((prediction.astype(jnp.float32) - y) ** 2)

    tx = jopt.dynamic_loss_scale(jopt.adam(0.01), growth_interval=10)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jopt.scale_loss(loss(p), state))(params)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, loss(params)

    losses = []
    for _ in range(60):
        params, state, value = step(params, state)
        losses.append(float(value))
    assert all(np.isfinite(losses))
    assert jax.tree.all(jax.tree.map(lambda p: bool(jnp.all(jnp.isfinite(p))), params))
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    skipped = int(jopt.skipped_steps(state))
    if compute == "bfloat16":  # float32's range: the growing scale never overflows
        assert skipped == 0
    else:  # the scale grows every 10 steps until float16 overflows, then backs off
        assert 1 <= skipped < 10


def test_inside_multi_steps_checks_and_unscales_once_per_window():
    """torch's accumulation recipe: scale(loss).backward() k times, then step + update once."""
    tx = jopt.multi_steps(jopt.dynamic_loss_scale(jopt.sgd(1.0), init_scale=8.0), 2)
    state = tx.init(jnp.zeros(1))
    scale = lambda: float(jopt.loss_scale(state))
    seen = []
    for g in [1.0, 3.0, 1.0, np.inf, 5.0, 7.0]:
        updates, state = tx.update(jnp.array([g]) * scale(), state)
        seen.append((float(updates[0]), scale(), int(jopt.skipped_steps(state))))
    assert seen == [
        (0.0, 8.0, 0),
        (-2.0, 8.0, 0),  # mean of 1 and 3, unscaled
        (0.0, 8.0, 0),
        (0.0, 4.0, 1),  # the Inf poisons its window: dropped, backed off once
        (0.0, 4.0, 1),
        (-6.0, 4.0, 1),
    ]


def test_scale_loss_computes_in_float32_and_maps_over_trees():
    state = jopt.dynamic_loss_scale(jopt.sgd(0.1)).init(jnp.zeros(1))
    scaled = jopt.scale_loss({"a": jnp.asarray(2.0, jnp.float16), "b": jnp.ones(2)}, state)
    assert scaled["a"].dtype == jnp.float32 and float(scaled["a"]) == 2.0**17
    np.testing.assert_array_equal(scaled["b"], [2.0**16, 2.0**16])
    grad = jax.grad(lambda w: jopt.scale_loss(jnp.sum(w**2), state))(jnp.ones(1))
    assert float(grad[0]) == 2.0**17


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(init_scale=-1.0), "init_scale=-1.0 must be > 0"),
        (dict(init_scale=1e39), "init_scale=1e+39 must be <= 3.40282e+38 (a float32 scale)"),
        (dict(growth_factor=1.0), "growth_factor=1.0 must be > 1"),
        (dict(backoff_factor=1.0), "backoff_factor=1.0 must be in (0, 1)"),
        (dict(backoff_factor=0.0), "backoff_factor=0.0 must be in (0, 1)"),
        (dict(growth_interval=0), "growth_interval=0 must be >= 1"),
    ],
)
def test_bad_arguments_are_named(options, message):
    pattern = "^" + re.escape(message) + "$"
    with pytest.raises(ValueError, match=pattern):
        jopt.dynamic_loss_scale(jopt.sgd(0.1), **options)
    with pytest.raises(ValueError, match=pattern):
        GradScaler(**options)
