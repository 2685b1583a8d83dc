"""The torch door to clipping: ``clip_grad_norm`` and ``clip_grad_value`` against torch 2.13."""

from __future__ import annotations

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import checkify

import jopt
from jopt.torch.clip import total_norm
from tests.oracles import TOLERANCE, max_relative_error, run_jax, run_torch
from tests.problems import PROBLEMS
from tests.test_clipping import SHAPES, SMALL, _problem_grads, assert_close, random_tree

NORM_TYPES = [1.0, 2.0, 3.5, math.inf]
MAX_NORMS = [1e-2, 1.0, 1e5]  # below every total norm here, between, above every one
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtypes(tree):
    return jax.tree.map(lambda x: x.dtype, tree)


def gradient_trees(dtype):
    """``(label, grads)``: in float32 each problem's gradient at its initial point and a
    random tree of ranks 0 to 5; in float64 a smaller random tree."""
    if dtype == "float32":
        out = [(name, g) for name, g, _ in _problem_grads()]
        return [*out, ("random", jax.device_get(random_tree(dtype, 0)))]
    with jax.enable_x64(True):
        return [("random", jax.device_get(random_tree(dtype, 0, SMALL)))]


def torch_clip_grad_norm(grads, max_norm, norm_type, dtype, **kwargs):
    """torch's clipped gradients (numpy, tree of ``grads``) and the total norm it returns."""
    leaves, treedef = jax.tree.flatten(grads)
    tensors = [torch.zeros(np.shape(x), dtype=TORCH_DTYPES[dtype]) for x in leaves]
    for t, g in zip(tensors, leaves, strict=True):
        t.grad = torch.tensor(np.asarray(g), dtype=TORCH_DTYPES[dtype])
    norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type, **kwargs)
    return jax.tree.unflatten(treedef, [t.grad.numpy() for t in tensors]), float(norm)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_grad_norm_matches_torch(dtype):
    """Norm types 1, 2, 3.5, inf; max_norm below, between and above; clipped values and norm."""
    trees = gradient_trees(dtype)

    @jax.jit
    def ours(trees, max_norms):
        out = []
        for norm_type in NORM_TYPES:

            def one(max_norm, grads, norm_type=norm_type):
                tx = jopt.torch.clip_grad_norm(max_norm, norm_type)
                clipped, state = tx.update(grads, tx.init(grads))
                return clipped, state.total_norm

            out.append([jax.vmap(one, (0, None))(max_norms, g) for g in trees])
        return out

    with jax.enable_x64(dtype == "float64"):
        results = jax.device_get(ours([g for _, g in trees], jnp.asarray(MAX_NORMS, dtype)))
    tolerance = TOLERANCE[jnp.dtype(dtype)]
    for norm_type, per_tree in zip(NORM_TYPES, results, strict=True):
        for (label, grads), (clipped, norms) in zip(trees, per_tree, strict=True):
            for k, max_norm in enumerate(MAX_NORMS):
                expected, expected_norm = torch_clip_grad_norm(grads, max_norm, norm_type, dtype)
                where = f"max_norm={max_norm}, norm_type={norm_type} on {label}"
                assert norms[k].dtype == jnp.dtype(dtype), where
                assert abs(norms[k] - expected_norm) <= tolerance * expected_norm, where
                ours_k = jax.tree.map(lambda x, k=k: x[k], clipped)
                assert dtypes(ours_k) == dtypes(grads), where
                assert_close(ours_k, expected, tolerance, where)


def test_total_norm_of_order_inf_accepts_torchs_spellings():
    tree = {"a": jnp.array([3.0, -4.0]), "b": jnp.array([[12.0]])}
    for spelling in ("inf", "Infinity", float("inf")):
        assert float(total_norm(tree, spelling)) == 12.0
    assert float(total_norm({}, 1.0)) == 0.0


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_gradients_give_torchs_numbers(bad, norm_type):
    """An Inf norm zeroes finite entries and makes Inf ones NaN; a NaN norm makes all NaN."""
    grads = {"a": np.array([1.0, bad, -2.0], np.float32), "b": np.array([0.5], np.float32)}
    tx = jopt.torch.clip_grad_norm(1.0, norm_type)
    clipped, state = jax.jit(tx.update)(grads, tx.init(grads))
    expected, expected_norm = torch_clip_grad_norm(grads, 1.0, norm_type, "float32")
    np.testing.assert_array_equal(state.total_norm, np.float32(expected_norm))
    for key in grads:
        np.testing.assert_array_equal(clipped[key], expected[key], err_msg=key)


def test_error_if_nonfinite_raises_eagerly_and_through_checkify():
    grads = {"a": jnp.array([1.0, jnp.inf])}
    with pytest.raises(RuntimeError, match="non-finite"):
        torch_clip_grad_norm(grads, 1.0, 2.0, "float32", error_if_nonfinite=True)
    tx = jopt.torch.clip_grad_norm(1.0, error_if_nonfinite=True)
    state = tx.init(grads)
    message = "The total norm of order 2.0 for gradients is non-finite (inf)"
    with pytest.raises(checkify.JaxRuntimeError, match=re.escape(message)):  # eager: at once
        tx.update(grads, state)
    with pytest.raises(ValueError, match=r"checkify\.check which was not functionalized"):
        jax.jit(tx.update)(grads, state)
    step = jax.jit(checkify.checkify(tx.update))
    error, _ = step(grads, state)
    assert message in error.get()
    with pytest.raises(checkify.JaxRuntimeError, match=re.escape(message)):
        error.throw()
    error, (clipped, _) = step({"a": jnp.array([3.0, 4.0])}, state)
    assert error.get() is None
    np.testing.assert_allclose(clipped["a"], [0.6, 0.8], rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_grad_value_matches_torch(dtype):
    ((_, grads),) = gradient_trees(dtype)[-1:]
    grads = jax.tree.map(np.array, grads)  # writable copies
    grads["vector"][:3] = np.inf, -np.inf, np.nan
    values = [0.0, 0.05, 1.0, 1e3]

    def clipped(value):
        tx = jopt.torch.clip_grad_value(value)
        return tx.update(grads, tx.init(grads))[0]

    with jax.enable_x64(dtype == "float64"):
        ours = jax.device_get(jax.jit(jax.vmap(clipped))(jnp.asarray(values, dtype)))
    for k, value in enumerate(values):
        leaves = jax.tree.leaves(grads)
        tensors = [torch.zeros(np.shape(x), dtype=TORCH_DTYPES[dtype]) for x in leaves]
        for t, g in zip(tensors, leaves, strict=True):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_value_(tensors, value)
        for path, t, x in zip(jopt.tree.paths(grads), tensors, jax.tree.leaves(ours), strict=True):
            np.testing.assert_array_equal(x[k], t.grad.numpy(), err_msg=f"{value} at {path}")


@pytest.mark.parametrize(
    ("norm_type", "optimizer", "options", "dtype"),
    [
        (2.0, "SGD", dict(lr=0.01, momentum=0.9), "float32"),
        (math.inf, "Adam", dict(lr=0.02), "float64"),
    ],
)
def test_chain_matches_torch_over_100_steps(norm_type, optimizer, options, dtype):
    """clip_grad_norm_ between backward() and step(), as a chain; the quadratic's gradient
    norm starts above max_norm and ends below it."""
    problem = next(p for p in PROBLEMS if p.name == "quadratic")

    class ClipThenStep:
        def __init__(self, params):
            self.params = params
            self.inner = getattr(torch.optim, optimizer)(params, **options)

        def step(self):
            torch.nn.utils.clip_grad_norm_(self.params, 5.0, norm_type)
            self.inner.step()

    with jax.enable_x64(dtype == "float64"):
        tx = jopt.chain(
            jopt.torch.clip_grad_norm(5.0, norm_type), getattr(jopt.torch, optimizer)(**options)
        )
        ours = run_jax(tx, problem, dtype)
        theirs = run_torch(ClipThenStep, problem, dtype)
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{error:.3g} at {where}"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (jopt.torch.clip_grad_norm, torch.nn.utils.clip_grad_norm_),
        (jopt.torch.clip_grad_value, torch.nn.utils.clip_grad_value_),
    ],
)
def test_signature_is_torchs_without_the_parameters(ours, theirs):
    expected = list(inspect.signature(theirs).parameters.values())[1:]
    got = list(inspect.signature(ours).parameters.values())
    assert [(p.name, p.default, p.kind) for p in got] == [
        (p.name, p.default, p.kind) for p in expected
    ]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_keeps_dtype_and_stays_finite(dtype):
    """Large half-precision gradients: the norm is summed in float32, each leaf stays half."""
    grads = random_tree(dtype, 0, SMALL)
    grads["big"] = jnp.full((1000,), 3e4, dtype)  # float16 squares overflow at 256
    tx = jopt.torch.clip_grad_norm(1.0)
    clipped, state = jax.jit(tx.update)(grads, tx.init(grads))
    assert state.total_norm.dtype == jnp.float32 and bool(jnp.isfinite(state.total_norm))
    assert dtypes(clipped) == dtypes(grads)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(clipped))
    upcast = jax.device_get(jax.tree.map(lambda x: x.astype(jnp.float32), grads))
    expected, expected_norm = torch_clip_grad_norm(upcast, 1.0, 2.0, "float32")
    np.testing.assert_allclose(float(state.total_norm), expected_norm, rtol=1e-5)
    finfo = jnp.finfo(dtype)
    for path, x, y in zip(
        jopt.tree.paths(grads), jax.tree.leaves(clipped), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(
            np.asarray(x, np.float32),
            y,
            rtol=float(finfo.eps),
            atol=float(finfo.tiny),
            err_msg=path,
        )


def test_total_norm_lives_in_the_state_through_a_chain_jit_and_vmap():
    """The state keeps the pre-clip norm in a stable dtype; vmap gives one per example."""
    grads = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    tx = jopt.chain(jopt.torch.clip_grad_norm(1.0), jopt.torch.SGD(lr=0.1))
    state = tx.init(grads)
    assert isinstance(state[0], jopt.torch.ClipGradNormState)
    assert float(state[0].total_norm) == 0.0
    _, state = jax.jit(tx.update)(grads, state, grads)
    assert float(state[0].total_norm) == 5.0
    batch = jax.tree.map(lambda x: np.stack([x, 2 * x, x / 10]), jax.device_get(grads))
    clip = jopt.torch.clip_grad_norm(1.0)
    _, states = jax.jit(jax.vmap(lambda g: clip.update(g, clip.init(g))))(batch)
    np.testing.assert_allclose(states.total_norm, [5.0, 10.0, 0.5], rtol=1e-6)
    with jax.enable_x64(True):
        params = {"a": jnp.zeros(1, jnp.float64), "b": jnp.zeros(1, jnp.float32)}
        assert clip.init(params).total_norm.dtype == jnp.float64


def test_inside_fuse_gives_the_numbers_of_the_unfused_chain():
    """Sums and maxima over fused buffers are those over the leaves, for every norm type."""
    grads = random_tree("float32", 0, SHAPES)

    @jax.jit
    def run(grads):
        out = []
        for norm_type in (2.0, 3.5, math.inf):
            unfused = jopt.chain(jopt.torch.clip_grad_norm(0.5, norm_type), jopt.scale_by_adam())
            fused = jopt.fuse(unfused, max_leaf_size=40)  # packed leaves and leaves of their own
            (a, s1), (b, s2) = (tx.update(grads, tx.init(grads)) for tx in (unfused, fused))
            out.append((a, b, s1[0].total_norm, s2.inner_state[0].total_norm))
        return out

    results = jax.device_get(run(grads))
    for norm_type, (a, b, norm, fused_norm) in zip((2, 3.5, "inf"), results, strict=True):
        assert_close(b, a, 1e-6, f"norm_type={norm_type}")
        np.testing.assert_allclose(fused_norm, norm, rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: jopt.torch.clip_grad_norm(-1.0), "max_norm=-1.0 must be >= 0"),
        (
            lambda: jopt.torch.clip_grad_norm(1.0, norm_type=0.5),
            "norm_type=0.5 must be >= 1 (a p-norm), or 'inf' for the largest absolute value",
        ),
        (
            lambda: jopt.torch.clip_grad_norm(1.0, norm_type="fro"),
            "norm_type='fro' must be >= 1 (a p-norm), or 'inf' for the largest absolute value",
        ),
        (lambda: jopt.torch.clip_grad_value(-0.5), "clip_value=-0.5 must be >= 0"),
    ],
)
def test_bad_arguments_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        make()
