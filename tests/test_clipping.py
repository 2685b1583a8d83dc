"""The optax door to clipping: every function against the real optax 0.2.8, plus jopt's promises.

Compiling is what these tests spend their time on, so each comparison traces all its
cases into one jitted function per library, with the thresholds traced and vmapped (a
promise of its own: thresholds may be traced).
"""

from __future__ import annotations

import contextlib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.hyperparams import NONNEGATIVE
from tests.oracles import TOLERANCE, max_relative_error, run_jax, run_optax, standard_promotion
from tests.problems import PROBLEMS

# (name, thresholds swept in one vmapped call, static options): each sweep clips every
# leaf, some leaves (or units), and nothing.
CASES = [
    ("clip", dict(max_delta=[1e-3, 0.5, 1e3]), {}),
    ("clip_by_global_norm", dict(max_norm=[1e-3, 1.0, 1e3]), {}),
    ("clip_by_block_rms", dict(threshold=[1e-3, 0.5, 1e3]), {}),
    ("adaptive_grad_clip", dict(clipping=[1e-3, 0.1, 1e3], eps=[1e-3, 0.05, 1e-3]), {}),
    ("adaptive_grad_clip", dict(clipping=[0.01, 0.1]), dict(axis=-1)),
]
SHAPES = {
    "scalar": (),
    "vector": (7,),
    "row": (1, 6),  # squeezes to a vector: one unit for AGC
    "dense": (5, 3),
    "heads": (4, 2, 3),
    "conv": (3, 3, 2, 4),
    "conv3d": (2, 2, 2, 2, 3),
}
SMALL = {k: SHAPES[k] for k in ("vector", "dense", "conv")}  # where ranks are not the point


def random_tree(dtype, seed=0, shapes=SHAPES):
    """Leaves of every rank AGC knows, at scales 1e-3 to 50, so thresholds clip some."""
    rng = np.random.default_rng(seed)
    scales = (1e-3, 1.0, 50.0, 0.1)
    return {
        name: jnp.asarray((rng.normal(size=shape) * scales[i % 4]).astype(jnp.dtype(dtype)))
        for i, (name, shape) in enumerate(shapes.items())
    }


@functools.lru_cache
def _problem_grads() -> tuple:
    """Each problem's float32 (gradient, params) at its initial point, as numpy arrays."""
    out = []
    for problem in PROBLEMS:
        params = problem.params("float32")
        grads = jax.jit(jax.grad(problem.loss))(params)
        out.append((problem.name, *jax.tree.map(np.asarray, (grads, params))))
    return tuple(out)


def inputs(dtype, static=None, problems=True, shapes=SHAPES):
    """``(label, grads, params)``: the problems' (cast to ``dtype``) and a random tree's."""
    out = []
    if problems:
        cast = functools.partial(jax.tree.map, lambda x: jnp.asarray(x.astype(jnp.dtype(dtype))))
        out.extend((name, *cast((grads, params))) for name, grads, params in _problem_grads())
    if static and "axis" in static:  # an explicit axis needs leaves that have it
        shapes = {k: v for k, v in shapes.items() if v}
    out.append(("random", random_tree(dtype, 0, shapes), random_tree(dtype, 1, shapes)))
    return out


def run_cases(library, cases, data):
    """For each case, its updates on each of its ``(grads, params)``, under one ``jit``.

    ``data[i]`` is case ``i``'s list of pairs; its thresholds are vmapped over, so every
    leaf of the result has a leading axis, one entry per threshold."""

    def run(data):
        out = []
        for (name, swept, static), pairs in zip(cases, data, strict=True):

            def one(thresholds, name=name, static=static, pairs=pairs):
                tx = getattr(library, name)(**thresholds, **static)
                return [tx.update(g, tx.init(p), p)[0] for g, p in pairs]

            out.append(jax.vmap(one)({k: jnp.asarray(v) for k, v in swept.items()}))
        return out

    with standard_promotion() if library is optax else contextlib.nullcontext():
        return jax.device_get(jax.jit(run)(data))


def assert_close(ours, theirs, tolerance, label="", atol=0.0):
    """Each leaf within ``tolerance`` of the reference, relative to the leaf's largest value
    (plus ``atol``, for half-precision subnormals)."""
    for path, a, b in zip(
        jopt.tree.paths(theirs), jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True
    ):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
        error = float(np.max(np.abs(a - b) - atol, initial=0.0)) / scale
        assert error <= tolerance, f"{label} at '{path}': relative error {error:.3g}"


def compare(cases, data, tolerance, reference=None, atol=0.0):
    """jopt against optax for every case, threshold and input; returns jopt's updates.

    ``data[i]`` is case ``i``'s list of ``(label, grads, params)``; ``reference`` (the
    same structure) feeds optax instead, e.g. upcast to float32."""
    pairs = [[(g, p) for _, g, p in group] for group in data]
    ours = run_cases(jopt, cases, pairs)
    theirs = run_cases(
        optax, cases, pairs if reference is None else [[(g, p) for _, g, p in r] for r in reference]
    )
    for (name, swept, static), group, a, b in zip(cases, data, ours, theirs, strict=True):
        for (label, grads, _), x, y in zip(group, a, b, strict=True):
            assert jax.tree.map(jnp.result_type, x) == jax.tree.map(jnp.result_type, grads)
            for k in range(len(next(iter(swept.values())))):
                at = {key: v[k] for key, v in swept.items()}
                pick = functools.partial(jax.tree.map, lambda v, k=k: v[k])
                where = f"{name}({at}, {static}) on {label}"
                assert_close(pick(x), pick(y), tolerance, where, atol)
    return ours


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_optax(dtype):
    """Every threshold, in float32 on every problem and a random tree of ranks 0 to 5; in
    float64 on a smaller random tree."""
    f32 = dtype == "float32"
    with jax.enable_x64(not f32):
        data = [  # the axis= case on the random tree only: ranks are its point
            inputs(dtype, static, problems=f32 and not static, shapes=SHAPES if f32 else SMALL)
            for _, _, static in CASES
        ]
        compare(CASES, data, TOLERANCE[jnp.dtype(dtype)])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_keeps_dtype_and_matches_optax_in_float32(dtype):
    """Half-precision leaves stay half and finite, and are optax's float32 answer rounded once
    (to within an ulp: a relative one, or the absolute one of the subnormals)."""
    data = [inputs(dtype, static, problems=False, shapes=SMALL) for _, _, static in CASES]
    upcast = [
        [(label, *jax.tree.map(lambda x: x.astype(np.float32), (g, p))) for label, g, p in group]
        for group in data
    ]
    finfo = jnp.finfo(dtype)
    ours = compare(CASES, data, float(finfo.eps), upcast, atol=float(finfo.smallest_subnormal))
    assert all(bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(ours))


def test_float16_global_norm_does_not_overflow_where_optax_does():
    """The squares of float16 gradients of 300 overflow float16: optax returns zeros."""
    grads = {"w": jnp.full((1000,), 300.0, jnp.float16)}

    def clipped(library):
        tx = library.clip_by_global_norm(1.0)
        return jax.jit(lambda g: tx.update(g, tx.init(g))[0])(grads)["w"]

    ours = clipped(jopt)
    with standard_promotion():
        theirs = clipped(optax)
    expected = 1.0 / np.sqrt(1000.0)
    assert ours.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(ours, np.float32), expected, rtol=1e-3)
    assert not np.allclose(np.asarray(theirs, np.float32), expected, rtol=0.5)


def test_non_finite_gradients_propagate_as_in_optax():
    """Inf and NaN gradients give the NaNs and zeros that optax gives, where optax gives them."""
    data = []
    for _, _, static in CASES:
        ((_, grads, params),) = inputs("float32", static, problems=False, shapes=SMALL)
        grads = jax.tree.map(np.array, grads)  # writable copies
        grads["dense"][0, 0], grads["dense"][1, 2], grads["vector"][3] = np.inf, np.nan, -np.inf
        data.append([(grads, params)])
    ours, theirs = run_cases(jopt, CASES, data), run_cases(optax, CASES, data)
    for case, a, b in zip(CASES, ours, theirs, strict=True):
        for path, x, y in zip(
            jopt.tree.paths(b), jax.tree.leaves(a), jax.tree.leaves(b), strict=True
        ):
            where = f"{case[:2]} at '{path}'"
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=where)
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=0, err_msg=where)


def test_zero_threshold_and_zero_gradient_give_zeros_not_nan():
    """Where optax computes 0 / 0, jopt takes the limit: a zero gradient stays zero."""
    optax_gives_nan = {"clip_by_global_norm": True, "clip_by_block_rms": True}
    cases = [(name, {next(iter(swept)): [0.0]}, {}) for name, swept, static in CASES if not static]
    grads = {"w": jnp.zeros(3)}
    data = [[(grads, grads)]] * len(cases)
    ours, theirs = run_cases(jopt, cases, data), run_cases(optax, cases, data)
    for (name, _, _), (a,), (b,) in zip(cases, ours, theirs, strict=True):
        np.testing.assert_array_equal(a["w"], np.zeros((1, 3)), err_msg=name)
        assert bool(np.all(np.isnan(b["w"]))) == optax_gives_nan.get(name, False), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_example_global_norm_clip_matches_optax(dtype):
    """Bounds that clip every example, some, none; a zero example; vmapped over the bounds."""
    with jax.enable_x64(dtype == "float64"):
        shapes = {"w": (6, 3, 2), "b": (6, 2), "s": (6,)}
        grads = jax.tree.map(np.array, random_tree(dtype, 3, shapes))  # writable copies
        for x in jax.tree.leaves(grads):
            x[2] = 0.0
        squares = sum(np.sum(np.reshape(x, (6, -1)) ** 2, axis=1) for x in jax.tree.leaves(grads))
        norms = np.sqrt(squares)
        bounds = jnp.asarray([0.0, np.median(norms[norms > 0]), 2 * norms.max(), np.inf], dtype)

        def run(library):
            clip = library.per_example_global_norm_clip
            return jax.device_get(jax.jit(jax.vmap(lambda bound: clip(grads, bound)))(bounds))

        ours, ours_count = run(jopt)
        with standard_promotion():
            theirs, their_count = run(optax)
        np.testing.assert_array_equal(ours_count, their_count)
        assert ours_count.dtype == jnp.int32 and 0 < int(ours_count[1]) < 5
        assert jax.tree.map(jnp.result_type, ours) == jax.tree.map(jnp.result_type, theirs)
        for k, bound in enumerate(bounds):
            pick = functools.partial(jax.tree.map, lambda x, k=k: x[k])
            assert_close(pick(ours), pick(theirs), TOLERANCE[jnp.dtype(dtype)], f"bound {bound}")


def test_per_example_global_norm_clip_keeps_half_precision_and_takes_integers():
    grads = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
    total, count = jopt.per_example_global_norm_clip(grads, 1.25)
    np.testing.assert_allclose(total[0], [1.75, 1.75, 1.75])
    assert total[0].dtype == jnp.float32 and int(count) == 3
    total, _ = jopt.per_example_global_norm_clip([grads[0].astype(jnp.bfloat16)], 1.25)
    assert total[0].dtype == jnp.bfloat16


def test_per_example_global_norm_clip_names_a_leaf_without_the_batch_axis():
    grads = {"a": jnp.ones((4, 2)), "b": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match=r"of size 4; 'b' has shape \[3, 2\]"):
        jopt.per_example_global_norm_clip(grads, 1.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chain_with_adamw_matches_optax_over_100_steps(dtype):
    """On the quadratic, clipping is active for the first 75 steps and then not."""
    problem = next(p for p in PROBLEMS if p.name == "quadratic")
    with jax.enable_x64(dtype == "float64"):
        ours = run_jax(jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(0.02)), problem, dtype)
        with standard_promotion():
            reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.02))
        theirs = run_optax(reference, problem, dtype)
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{error:.3g} at {where}"


def test_jit_and_vmap():
    """vmap over a batch of trees clips each tree on its own, as separate jitted calls do."""
    grads, params = random_tree("float32", 0, SMALL), random_tree("float32", 1, SMALL)
    batch = jax.tree.map(lambda x: np.stack([x, 3 * x]), jax.device_get((grads, params)))
    transforms = [
        getattr(jopt, name)(**{k: v[1] for k, v in swept.items()}, **static)
        for name, swept, static in CASES
        if not static
    ]

    def run(g, p):
        return [tx.update(g, tx.init(p), p)[0] for tx in transforms]

    mapped = jax.device_get(jax.jit(jax.vmap(run))(*batch))
    single = jax.jit(run)
    for i in range(2):
        pick = functools.partial(jax.tree.map, lambda x, i=i: x[i])
        assert_close(pick(mapped), single(*pick(batch)), 1e-6, f"example {i}")


def test_threshold_may_be_traced_and_live_in_the_state():
    """Built inside with_hyperparams, max_norm is read and changed without retracing."""
    traces = []

    def build(max_norm):
        traces.append(max_norm)
        return jopt.clip_by_global_norm(max_norm)

    tx = jopt.with_hyperparams(build, owner="clip", bounds={"max_norm": NONNEGATIVE}, max_norm=1.0)
    grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    state = tx.init(grads)
    step = jax.jit(tx.update)
    out, _ = step(grads, state)
    np.testing.assert_allclose(out["a"], [0.6], rtol=1e-6)
    traced = len(traces)
    state = jopt.set_hyperparams(state, max_norm=2.5)
    assert float(jopt.hyperparams(state)["max_norm"]) == 2.5
    out, _ = step(grads, state)
    np.testing.assert_allclose(out["a"], [1.5], rtol=1e-6)
    assert len(traces) == traced, "changing max_norm retraced the step"
    with pytest.raises(ValueError, match=r"clip: max_norm=-1.0 must be >= 0"):
        jopt.set_hyperparams(state, max_norm=-1.0)


def test_inside_fuse_gives_the_numbers_of_the_unfused_chain():
    """The global norm over fused buffers is the norm over the leaves, step after step."""
    grads, params = random_tree("float32", 0, SMALL), random_tree("float32", 1, SMALL)
    grads["big"] = np.linspace(-3.0, 3.0, 300, dtype=np.float32).reshape(20, 15)
    params["big"] = np.ones((20, 15), np.float32)
    unfused = jopt.chain(jopt.clip_by_global_norm(0.5), jopt.scale_by_adam())
    fused = jopt.fuse(unfused, max_leaf_size=100)  # "big" keeps a buffer of its own
    assert len(fused.init(params).layout.buffers) == 2

    @jax.jit
    def run(grads, params):
        s1, s2, out = unfused.init(params), fused.init(params), []
        for step in range(3):
            g = jax.tree.map(lambda x, step=step: x * (1.0 + step), grads)
            a, s1 = unfused.update(g, s1, params)
            b, s2 = fused.update(g, s2, params)
            out.append((a, b))
        return out

    for step, (a, b) in enumerate(jax.device_get(run(grads, params))):
        assert_close(b, a, 1e-6, f"step {step}")


@pytest.mark.parametrize(
    ("tx", "name"),
    [
        (jopt.clip_by_block_rms(1.0), "clip_by_block_rms"),
        (jopt.adaptive_grad_clip(0.1), "adaptive_grad_clip"),
    ],
)
def test_per_leaf_clips_refuse_to_run_inside_fuse(tx, name):
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    fused = jopt.fuse(tx)
    with pytest.raises(
        ValueError, match=f"{name} clips each leaf on its own, but inside jopt.fuse"
    ):
        fused.update(params, fused.init(params), params)


def test_global_norm_clip_allocates_no_gradient_sized_temporary():
    """Under jit the norm and the product are fused: only the output is gradient-sized."""
    grads = {"a": jnp.ones((1 << 20,)), "b": jnp.ones((256, 64))}
    tx = jopt.clip_by_global_norm(1.0)
    compiled = jax.jit(lambda g: tx.update(g, tx.init(None))[0]).lower(grads).compile()
    memory = compiled.memory_analysis()
    assert memory.temp_size_in_bytes < 4 * 256 * 64, memory


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: jopt.clip(-1.0), "max_delta=-1.0 must be >= 0"),
        (lambda: jopt.clip_by_global_norm(-0.5), "max_norm=-0.5 must be >= 0"),
        (lambda: jopt.clip_by_global_norm(float("nan")), "max_norm=nan must be >= 0"),
        (lambda: jopt.clip_by_global_norm(jnp.ones(2)), "max_norm must be a scalar, got shape [2]"),
        (lambda: jopt.clip_by_block_rms(-1), "threshold=-1 must be >= 0"),
        (lambda: jopt.adaptive_grad_clip(-0.1), "clipping=-0.1 must be >= 0"),
        (lambda: jopt.adaptive_grad_clip(0.1, eps=-1e-3), "eps=-0.001 must be >= 0"),
        (
            lambda: jopt.per_example_global_norm_clip([jnp.ones((2, 1))], -1.0),
            "l2_norm_clip=-1.0 must be >= 0",
        ),
    ],
)
def test_bad_thresholds_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        make()


def test_adaptive_grad_clip_errors_name_the_problem():
    tx = jopt.adaptive_grad_clip(0.1)
    grads = {"deep": {"w": jnp.ones((1, 2, 1, 2, 1, 2))}}
    with pytest.raises(ValueError, match=r"^adaptive_grad_clip needs params"):
        tx.update(grads, tx.init(grads))
    with pytest.raises(ValueError, match="leaf 'deep/w' has shape \\[1, 2, 1, 2, 1, 2\\]"):
        tx.update(grads, tx.init(grads), grads)
    with pytest.raises(jopt.TreeMismatchError, match="updates is missing 'deep/b'"):
        tx.update(grads, tx.init(grads), {"deep": {"w": grads["deep"]["w"], "b": jnp.ones(1)}})
