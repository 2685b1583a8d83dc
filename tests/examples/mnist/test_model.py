"""Tests for jopt.examples.mnist.model: the MLP, its pure form, the loss."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jopt.examples.mnist import model as mlp

RNG = np.random.default_rng(0)


def test_default_mlp_is_784_128_128_10_relu():
    apply, params = mlp.init()
    model = apply.module(params)
    assert isinstance(model, mlp.MLP)
    shapes = [(layer.kernel.shape, layer.bias.shape) for layer in model.layers]
    assert shapes == [((784, 128), (128,)), ((128, 128), (128,)), ((128, 10), (10,))]
    x = jnp.asarray(RNG.normal(size=(4, 784)), jnp.float32)
    by_hand = x
    for i, layer in enumerate(model.layers):
        by_hand = by_hand @ layer.kernel[...] + layer.bias[...][None, :]
        if i < 2:
            by_hand = jnp.maximum(by_hand, 0.0)
    np.testing.assert_allclose(model(x), by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", [(), (32,), (64, 32, 16)])
def test_hidden_sizes_are_configurable(hidden):
    apply, params = mlp.init(hidden, 0)
    widths = [params["layers"][i]["kernel"].shape for i in range(len(hidden) + 1)]
    sizes = (784, *hidden, 10)
    assert widths == list(itertools.pairwise(sizes))
    assert apply(params, jnp.zeros((3, 28, 28), jnp.uint8)).shape == (3, 10)


@pytest.mark.parametrize("hidden", [(0,), (128, 0), (-3,)])
def test_a_hidden_layer_without_units_is_an_error(hidden):
    with pytest.raises(ValueError, match=r"hidden=.*every hidden layer needs at least 1 unit"):
        mlp.MLP(hidden, rngs=nnx.Rngs(0))


def test_functional_apply_equals_the_module_and_round_trips():
    model = mlp.init((16,), 3)[0].module(mlp.init((16,), 3)[1])
    apply, params = mlp.functional(model)
    x = jnp.asarray(RNG.normal(size=(5, 784)), jnp.float32)
    np.testing.assert_array_equal(apply(params, x), model(x))
    doubled = jax.tree.map(lambda p: 2 * p, params)
    rebuilt = apply.module(doubled)
    np.testing.assert_array_equal(rebuilt.layers[0].kernel[...], 2 * model.layers[0].kernel[...])
    assert jax.jit(apply)(params, x).shape == (5, 10)


def test_uint8_images_are_normalized_before_the_model():
    apply, params = mlp.init((8,), 0)
    images = jnp.asarray(RNG.integers(0, 256, (6, 28, 28)), jnp.uint8)
    normalized = (images.reshape(6, 784).astype(jnp.float32) / 255.0 - mlp.MEAN) / mlp.STD
    np.testing.assert_allclose(apply(params, images), apply(params, normalized), rtol=1e-6)


def test_init_is_deterministic_per_seed():
    _, a = mlp.init((8,), 1)
    _, b = mlp.init((8,), 1)
    _, c = mlp.init((8,), 2)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a["layers"][0]["kernel"], c["layers"][0]["kernel"])


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 7)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(7), labels].mean()
    got = mlp.cross_entropy(jnp.asarray(logits), jnp.asarray(labels, jnp.int32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_zero_weights_drop_padding_examples():
    logits = jnp.asarray(RNG.normal(size=(6, 10)), jnp.float32)
    labels = jnp.array([1, 2, 3, 4, 0, 0], jnp.int32)
    weights = jnp.array([1, 1, 1, 1, 0, 0], jnp.float32)
    np.testing.assert_allclose(
        mlp.cross_entropy(logits, labels, weights),
        mlp.cross_entropy(logits[:4], labels[:4]),
        rtol=1e-6,
    )


def test_bf16_computes_in_bfloat16_and_keeps_float32_master_weights():
    apply, params = mlp.init((32,), 0, dtype=jnp.bfloat16)
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    x = jnp.ones((2, 784), jnp.float32)
    assert apply(params, x).dtype == jnp.bfloat16

    def loss(p):
        return mlp.cross_entropy(apply(p, x), jnp.array([3, 4], jnp.int32))

    grads = jax.jit(jax.grad(loss))(params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
