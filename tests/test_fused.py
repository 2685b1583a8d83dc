"""jopt.fuse: packed buffers give exactly the unfused numbers, for every optimizer of both doors."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
import jopt.fused
import jopt.optimizers
import jopt.torch.optim
from jopt.fused import FusedState, make_layout

# name -> constructor; every optimizer of both doors, with the options that change its recipe
OPTIMIZERS = {
    "sgd": lambda: jopt.sgd(0.05),
    "sgd_momentum": lambda: jopt.sgd(0.05, momentum=0.9),
    "sgd_nesterov": lambda: jopt.sgd(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: jopt.adam(0.01),
    "adam_nesterov_eps_root": lambda: jopt.adam(0.01, eps_root=1e-8, nesterov=True),
    "adam_bf16_moments": lambda: jopt.adam(0.01, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16),
    "adamw": lambda: jopt.adamw(0.01, weight_decay=0.1),
    "adamw_mask": lambda: jopt.adamw(
        0.01, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "rmsprop": lambda: jopt.rmsprop(0.01),
    "rmsprop_centered_momentum": lambda: jopt.rmsprop(0.01, centered=True, momentum=0.9),
    "adagrad": lambda: jopt.adagrad(0.05),
    "adadelta": lambda: jopt.adadelta(weight_decay=0.01),
    "torch.SGD": lambda: jopt.torch.SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "torch.SGD_nesterov": lambda: jopt.torch.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "torch.Adam": lambda: jopt.torch.Adam(lr=0.01, weight_decay=0.01),
    "torch.Adam_amsgrad": lambda: jopt.torch.Adam(lr=0.01, amsgrad=True, maximize=True),
    "torch.AdamW": lambda: jopt.torch.AdamW(lr=0.01),
    "torch.RMSprop": lambda: jopt.torch.RMSprop(lr=0.01, momentum=0.9, centered=True),
    "torch.Adagrad": lambda: jopt.torch.Adagrad(lr=0.05, lr_decay=0.01, weight_decay=0.01),
    "torch.Adadelta": lambda: jopt.torch.Adadelta(weight_decay=0.01),
}


def params_tree() -> Any:
    """Nested dicts and lists; float32 and bfloat16; leaves from scalars to 600 elements."""
    rng = np.random.default_rng(0)

    def arr(shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "embed": arr((20, 30)),
        "layers": [
            {"w": arr((8, 8)), "b": arr((8,)), "scale": arr(())},
            {"w": arr((8, 8), jnp.bfloat16), "b": arr((8,), jnp.bfloat16)},
        ],
        "head": {"kernel": arr((30, 20)), "bias": arr((20,), jnp.bfloat16)},
    }


def grads_like(params: Any, step: int, dtype: Any = None) -> Any:
    def one(i: int, p: jax.Array) -> jax.Array:
        value = jnp.sin(jnp.arange(p.size, dtype=jnp.float32) * (0.3 + i) + step).reshape(p.shape)
        return value.astype(dtype or p.dtype)

    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [one(i, p) for i, p in enumerate(leaves)])


def _unfused(inner: jopt.GradientTransformation, **kwargs: Any) -> jopt.GradientTransformation:
    del kwargs
    return inner


def build(name: str, monkeypatch: pytest.MonkeyPatch, mode: str) -> jopt.GradientTransformation:
    """The optimizer with its fuse() replaced: unfused, all packed, or packed below 100."""
    if mode == "unfused":
        fuse = _unfused
    else:
        size = None if mode == "all_packed" else 100

        def fuse(inner: jopt.GradientTransformation, **kwargs: Any) -> Any:
            return jopt.fused.fuse(inner, max_leaf_size=size)

    with monkeypatch.context() as m:
        m.setattr(jopt.optimizers, "fuse", fuse)
        m.setattr(jopt.torch.optim, "fuse", fuse)
        return OPTIMIZERS[name]()


def trajectory(tx: jopt.GradientTransformation, grad_dtype: Any = None, steps: int = 4):
    params = params_tree()
    state = tx.init(params)

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state, updates

    out = []
    for i in range(steps):
        params, state, updates = step(params, state, grads_like(params, i, grad_dtype))
        out.append((params, updates))
    return out, state


def assert_trees_identical(a: Any, b: Any, what: str) -> None:
    for path, x, y in zip(jopt.tree.paths(a), jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype, f"{what}: dtype at {path}: {x.dtype} vs {y.dtype}"
        np.testing.assert_array_equal(
            np.asarray(x, np.float32), np.asarray(y, np.float32), err_msg=f"{what} at {path}"
        )


@pytest.mark.parametrize("mode", ["all_packed", "small_packed"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_is_bitwise_unfused(name: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = trajectory(build(name, monkeypatch, "unfused"))
    got, _ = trajectory(build(name, monkeypatch, mode))
    for i, ((p1, u1), (p2, u2)) in enumerate(zip(expected, got, strict=True)):
        assert_trees_identical(u1, u2, f"{name} {mode} updates, step {i}")
        assert_trees_identical(p1, p2, f"{name} {mode} params, step {i}")


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "torch.RMSprop", "adamw_mask"])
def test_bfloat16_grads_of_float32_params(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates keep the gradients' dtype and match unfused, rounding for rounding."""
    expected, _ = trajectory(build(name, monkeypatch, "unfused"), grad_dtype=jnp.bfloat16)
    got, _ = trajectory(build(name, monkeypatch, "all_packed"), grad_dtype=jnp.bfloat16)
    for (p1, u1), (p2, u2) in zip(expected, got, strict=True):
        assert {x.dtype for x in jax.tree.leaves(u2)} == {jnp.dtype(jnp.bfloat16)}
        assert_trees_identical(u1, u2, f"{name} bf16 grads, updates")
        assert_trees_identical(p1, p2, f"{name} bf16 grads, params")


def test_packed_and_own_buffers_by_max_leaf_size() -> None:
    params = params_tree()
    layout = make_layout(params, max_leaf_size=100)
    buffers = {key: (shape, dtype.name) for key, shape, dtype in layout.buffers}
    # float32 leaves below 100 elements: layers/0 (64 + 8 + 1); bfloat16: layers/1 and head/bias
    assert buffers == {
        "<packed float32>": ((73,), "float32"),
        "<packed bfloat16>": ((92,), "bfloat16"),
        "embed": ((20, 30), "float32"),
        "head/kernel": ((30, 20), "float32"),
    }
    everything = make_layout(params, max_leaf_size=None)
    assert {key for key, _, _ in everything.buffers} == {"<packed float32>", "<packed bfloat16>"}
    nothing = make_layout(params, max_leaf_size=0)
    assert not nothing.packed and len(nothing.buffers) == len(jax.tree.leaves(params))


def test_adam_state_is_exactly_twice_the_params() -> None:
    params = params_tree()
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    for tx, factor in [
        (jopt.adam(1e-3), 2.0),
        (jopt.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16), None),
    ]:
        state = tx.init(params)
        moments = state.inner_state.inner_state[0]
        state_bytes = sum(x.nbytes for x in jax.tree.leaves((moments.mu, moments.nu)))
        if factor is not None:
            assert state_bytes == factor * param_bytes
        else:  # two bytes per parameter for each moment
            assert state_bytes == 4 * sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda g: {**g, "head": {"kernel": g["head"]["kernel"]}}, "'head/bias'"),
        (
            lambda g: {**g, "layers": [g["layers"][0], {**g["layers"][1], "w": jnp.zeros((8, 9))}]},
            "'layers/1/w': shape [8, 9] in updates, [8, 8] in params",
        ),
    ],
)
def test_mismatch_names_the_key_path(bad: Any, message: str) -> None:
    params = params_tree()
    tx = jopt.adam(1e-3)
    state = tx.init(params)
    with pytest.raises(
        jopt.TreeMismatchError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        tx.update(bad(grads_like(params, 0)), state, params)


def test_state_from_another_transformation_is_refused() -> None:
    tx = jopt.fuse(jopt.scale_by_adam())
    with pytest.raises(TypeError, match="FusedState"):
        tx.update({"a": jnp.ones(2)}, jopt.EmptyState())


def test_vmap_over_independent_problems() -> None:
    tx = jopt.fuse(jopt.chain(jopt.scale_by_adam(), jopt.scale(-0.1)))
    batch = {"a": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones((3, 2, 2))}
    grads = jax.tree.map(lambda x: jnp.cos(x) + 0.5, batch)
    states = jax.vmap(tx.init)(batch)
    updates, _ = jax.vmap(tx.update)(grads, states, batch)
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], batch)
        expected, _ = tx.update(jax.tree.map(lambda x, i=i: x[i], grads), tx.init(one), one)
        assert_trees_identical(expected, jax.tree.map(lambda x, i=i: x[i], updates), f"vmap {i}")


def test_jitted_step_does_not_recompile() -> None:
    tx = jopt.adamw(1e-3, weight_decay=1e-2)
    params = params_tree()
    state = tx.init(params)
    traces = []

    def step(params: Any, state: Any, grads: Any) -> Any:
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 1))
    for i in range(4):
        params, state = jitted(params, state, grads_like(params, i))
    state = jopt.set_hyperparams(state, learning_rate=1e-4)
    params, state = jitted(params, state, grads_like(params, 5))
    assert len(traces) == 1
    assert jitted._cache_size() == 1


def test_layouts_compare_by_value_and_hash_once() -> None:
    a, b = make_layout(params_tree()), make_layout(params_tree())
    assert a is not b and a == b and hash(a) == hash(b)
    assert a != make_layout(params_tree(), max_leaf_size=0)
    state = jopt.fuse(jopt.scale_by_adam()).init(params_tree())
    assert isinstance(state, FusedState) and state.layout == a
