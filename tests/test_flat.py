"""jopt.flat: parameters as fused buffers, views inside the step, gradients as buffers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
import jopt.flat
from jopt.flat import FlatParams
from tests.oracles import standard_promotion
from tests.test_fused import assert_trees_identical, grads_like, params_tree


def loss(params: Any, x: jax.Array) -> jax.Array:
    """A small model over the mixed-dtype tree of tests.test_fused (all leaves used)."""
    h = jnp.tanh(x @ params["embed"].astype(jnp.float32))  # (n, 30)
    h = h @ params["head"]["kernel"] + params["head"]["bias"].astype(jnp.float32)[None, :]
    for layer in params["layers"]:
        w, b = layer["w"].astype(jnp.float32), layer["b"].astype(jnp.float32)
        h8 = jnp.tanh(h[:, :8] @ w + b[None, :])
        h = h + jnp.pad(h8, ((0, 0), (0, 12)))
        if "scale" in layer:
            h = h * layer["scale"]
    return jnp.mean(h**2)


X = jnp.asarray(np.random.default_rng(1).normal(size=(5, 20)), jnp.float32)


@pytest.mark.parametrize("max_leaf_size", [None, 100, 0])
def test_flatten_and_views_round_trip(max_leaf_size: int | None) -> None:
    params = params_tree()
    flat = jopt.flat.flatten(params, max_leaf_size=max_leaf_size)
    assert isinstance(flat, FlatParams)
    assert len(jax.tree.leaves(flat)) == len(flat.layout.buffers)
    assert_trees_identical(params, flat.tree(), "views")
    assert_trees_identical(params, jax.jit(jopt.flat.unflatten)(flat), "views under jit")
    assert_trees_identical(flat, jax.tree.map(lambda x: x, flat), "tree.map keeps FlatParams")


def test_packing_is_per_dtype() -> None:
    flat = jopt.flat.flatten(params_tree(), max_leaf_size=None)
    assert {k: (b.shape, b.dtype.name) for k, b in flat.buffers.items()} == {
        "<packed float32>": ((1273,), "float32"),
        "<packed bfloat16>": ((92,), "bfloat16"),
    }
    assert "8 leaves" in repr(flat)


@pytest.mark.parametrize("max_leaf_size", [None, 100])
def test_gradient_is_the_packed_tree_gradient(max_leaf_size: int | None) -> None:
    params = params_tree()
    flat = jopt.flat.flatten(params, max_leaf_size=max_leaf_size)
    expected = jax.grad(loss)(params, X)
    got = jax.jit(jax.grad(jopt.flat.on_tree(loss)))(flat, X)
    assert isinstance(got, FlatParams) and got.layout == flat.layout
    # the same math; XLA may fuse the model differently around the views (last-bit changes)
    want = jopt.flat.flatten(expected, max_leaf_size=max_leaf_size)
    for key in want.buffers:
        np.testing.assert_allclose(
            np.asarray(got.buffers[key], np.float32),
            np.asarray(want.buffers[key], np.float32),
            rtol=1e-5,
            atol=1e-7,
            err_msg=key,
        )


def test_integer_leaves_have_no_gradient() -> None:
    flat = jopt.flat.flatten({"w": jnp.ones(3), "steps": jnp.arange(2)})
    grads = jax.grad(lambda f: jnp.sum(f.tree()["w"] * 2.0), allow_int=True)(flat)
    assert grads.buffers["<packed int32>"].dtype == jax.dtypes.float0
    np.testing.assert_array_equal(grads.buffers["<packed float32>"], [2.0, 2.0, 2.0])


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: jopt.adam(1e-2),
        lambda: jopt.torch.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda: jopt.rmsprop(1e-2, centered=True),
    ],
)
def test_elementwise_optimizers_match_the_tree_bit_for_bit(make_tx: Any) -> None:
    """Same gradients in, same numbers out: the optimizer sees the same buffers either way."""
    tx = make_tx()
    params = params_tree()
    flat = jopt.flat.flatten(params)
    tree_state, flat_state = tx.init(params), tx.init(flat)

    @jax.jit
    def tree_step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    @jax.jit
    def flat_step(flat: FlatParams, state: Any, grads: FlatParams) -> Any:
        updates, state = tx.update(grads, state, flat)
        return jopt.apply_updates(flat, updates), state

    for i in range(4):
        grads = grads_like(params, i)
        params, tree_state = tree_step(params, tree_state, grads)
        flat, flat_state = flat_step(flat, flat_state, jopt.flat.flatten(grads))
        assert_trees_identical(params, flat.tree(), f"step {i}")


def test_training_loop_with_donation_and_optax() -> None:
    """A donated jitted step: the loss falls, nothing recompiles, optax works on buffers."""
    tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(1e-2, weight_decay=1e-3))
    flat = jopt.flat.flatten(params_tree())
    traces = []

    def step(flat: FlatParams, state: Any, x: jax.Array) -> Any:
        traces.append(1)
        value, grads = jax.value_and_grad(jopt.flat.on_tree(loss))(flat, x)
        updates, state = tx.update(grads, state, flat)
        return jopt.apply_updates(flat, updates), state, value

    jitted = jax.jit(step, donate_argnums=(0, 1))
    state = tx.init(flat)
    losses = []
    for _ in range(20):
        flat, state, value = jitted(flat, state, X)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]
    assert len(traces) == 1
    with standard_promotion():
        otx = optax.adam(1e-2)
        ostate = otx.init(flat)
        grads = jax.grad(jopt.flat.on_tree(loss))(flat, X)
        updates, ostate = otx.update(grads, ostate, flat)
    assert isinstance(optax.apply_updates(flat, updates), FlatParams)


def test_flax_model() -> None:
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs: Any):
            self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(6)])

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers:
                x = jnp.tanh(layer(x))
            return x

    model = MLP(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    flat = jopt.flat.flatten(params)
    assert len(flat.buffers) == 1  # 12 leaves in one buffer
    x = jnp.ones((3, 4))
    y = jnp.zeros((3, 4))

    def model_loss(params: Any) -> jax.Array:
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    tx = jopt.adam(1e-2)
    state = tx.init(flat)

    @jax.jit
    def step(flat: FlatParams, state: Any) -> Any:
        value, grads = jax.value_and_grad(jopt.flat.on_tree(model_loss))(flat)
        updates, state = tx.update(grads, state, flat)
        return jopt.apply_updates(flat, updates), state, value

    with standard_promotion():  # flax's layers promote internally
        first = None
        for _ in range(10):
            flat, state, value = step(flat, state)
            first = float(value) if first is None else first
        assert float(value) < first
        trained = nnx.merge(graphdef, flat.tree())
        assert trained(x).shape == (3, 4)


def test_flatten_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_leaf_size=-1"):
        jopt.flat.flatten({"a": jnp.ones(2)}, max_leaf_size=-1)
    with pytest.raises(TypeError, match="FlatParams"):
        jopt.flat.unflatten({"a": jnp.ones(2)})
