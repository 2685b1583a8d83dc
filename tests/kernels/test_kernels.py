"""jopt.kernels: the fused CPU kernels against their XLA twins, in place, built once."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt.kernels import (
    MAX_LEAVES_PER_CALL,
    MIN_KERNEL_SIZE,
    AdamCoefficients,
    _calls,
    _twin,
    adam_step,
    adam_step_many,
    rules,
    step_many,
)


def _reference(
    p: jax.Array, g: jax.Array, m: jax.Array, v: jax.Array, c: AdamCoefficients, decoupled: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Adam's kernel arithmetic on one buffer as XLA code (its rule's reference)."""
    kernel = rules.ADAMW if decoupled else rules.ADAM
    new_p, (new_m, new_v) = kernel.reference(p, g, (m, v), jnp.stack(c))
    return new_p, new_m, new_v


def _coefficients(count: int, **kw: Any) -> AdamCoefficients:
    values = dict(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, learning_rate=1e-2)
    values.update(kw)
    return AdamCoefficients.of(count=jnp.int32(count), **values)


def _buffers(shape: tuple[int, ...], seed: int = 0) -> tuple[jax.Array, ...]:
    k = jax.random.split(jax.random.key(seed), 4)
    p, g, m = (jax.random.normal(k[i], shape) for i in range(3))
    v = jnp.abs(jax.random.normal(k[3], shape)) * 0.1
    return p, g, m, v


def test_the_kernels_build_here() -> None:
    assert jopt.kernels.available(), jopt.kernels.status()
    assert "libjopt_kernels" in jopt.kernels.status()


@pytest.mark.parametrize("decoupled_decay", [False, True])
@pytest.mark.parametrize(
    "shape",
    [(MIN_KERNEL_SIZE,), (MIN_KERNEL_SIZE + 3,), (513, 1025)],  # whole and partial blocks
)
def test_kernel_matches_xla_to_an_ulp(shape: tuple[int, ...], decoupled_decay: bool) -> None:
    p, g, m, v = _buffers(shape)
    c = _coefficients(7, weight_decay=0.05, grad_scale=0.3, eps_root=1e-9)
    kernel = jax.jit(lambda *a: adam_step(*a, decoupled_decay=decoupled_decay))
    lowered = kernel.lower(p, g, m, v, c).as_text()
    assert "jopt_adam" in lowered
    got = kernel(p, g, m, v, c)
    want = jax.jit(lambda *a: _reference(*a, decoupled_decay))(p, g, m, v, c)
    for a, b in zip(got, want, strict=True):
        assert a.shape == shape and a.dtype == jnp.float32
        # XLA contracts to fused multiply-adds where its optimiser likes; the kernel
        # where XLA does in isolation: they agree to one or two ulps
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7, atol=1e-7)


def test_kernel_writes_in_place_when_donated() -> None:
    p, g, m, v = _buffers((1 << 18,))
    before = [x.unsafe_buffer_pointer() for x in (p, m, v)]
    step = jax.jit(lambda p, m, v, g, c: adam_step(p, g, m, v, c), donate_argnums=(0, 1, 2))
    out = step(p, m, v, g, _coefficients(1))
    assert [x.unsafe_buffer_pointer() for x in out] == before


@pytest.mark.parametrize(
    "dtype, size",
    [(jnp.bfloat16, MIN_KERNEL_SIZE), (jnp.float32, MIN_KERNEL_SIZE - 1), (jnp.float32, 1)],
)
def test_other_dtypes_and_small_buffers_run_the_xla_twin(dtype: Any, size: int) -> None:
    p, g, m, v = (x.astype(dtype) for x in _buffers((size,)))
    c = _coefficients(1)
    fn = jax.jit(lambda *a: adam_step(*a))
    assert "jopt_adam" not in fn.lower(p, g, m, v, c).as_text()
    twin = jax.jit(lambda *a: _reference(*a, False))(p, g, m, v, c)
    for a, b in zip(fn(p, g, m, v, c), twin, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_coefficients_are_those_of_the_transformations() -> None:
    c = _coefficients(3, weight_decay=0.1, learning_rate=0.5)
    assert float(c.c2) == pytest.approx(0.001, rel=1e-7)  # 1 - b2 rounded once
    assert float(c.bc1) == pytest.approx(1 - 0.9**3, rel=1e-6)
    assert float(c.neg_lr) == -0.5 and float(c.grad_scale) == 1.0


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


STEP = """
    import warnings
    import jax, jax.numpy as jnp, jopt
    tx = jopt.adam(0.1)
    p = jnp.ones(1 << 18)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn = jax.jit(lambda g, s, p: jopt.step(tx, g, s, p))
        text = fn.lower(p, tx.init(p), p).as_text()
        new, _ = fn(p, tx.init(p), p)
    print("kernel" if "jopt_adam" in text else "xla", new[:2].tolist())
    print(jopt.kernels.status())
    print([str(w.message) for w in caught])
"""


def test_disabled_by_the_environment(tmp_path: Path) -> None:
    done = _run(STEP, {"JOPT_KERNELS": "0", "JOPT_KERNELS_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("xla [0.9")
    assert "disabled by JOPT_KERNELS=0" in lines[1]
    assert lines[2] == "[]" and not any(tmp_path.iterdir())


def test_a_failed_build_warns_and_falls_back(tmp_path: Path) -> None:
    done = _run(STEP, {"CXX": "false", "JOPT_KERNELS_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("xla [0.9")  # the same step, as XLA code
    assert "false" in lines[1] and "failed" in lines[1]
    assert "CPU kernels unavailable" in lines[2] and "false" in lines[2]
    assert not list(tmp_path.rglob("*.so")), "a failed build must not leave a library behind"


def test_built_once_then_loaded_from_the_cache(tmp_path: Path) -> None:
    env = {"JOPT_KERNELS_CACHE": str(tmp_path)}
    first = _run(STEP, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("kernel [0.9")
    (library,) = tmp_path.rglob("libjopt_kernels.so")
    built = library.stat().st_mtime_ns
    second = _run(STEP, env)
    assert second.stdout.startswith("kernel [0.9")
    assert library.stat().st_mtime_ns == built
    assert second.stdout.splitlines()[0] == first.stdout.splitlines()[0]


def test_derivatives_and_vmap_go_through_the_kernel() -> None:
    p, g, m, v = _buffers((MIN_KERNEL_SIZE,))
    c = _coefficients(2, weight_decay=0.01)

    def loss(fn: Any, g: jax.Array) -> jax.Array:
        new_p, new_m, new_v = fn(p, g, m, v, c)
        return jnp.sum(new_p**2) + jnp.sum(new_m * new_v)

    kernel = lambda *a: adam_step(*a, decoupled_decay=True)
    twin = lambda *a: _reference(*a, True)
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.grad(lambda g: loss(kernel, g)))(g)),
        np.asarray(jax.jit(jax.grad(lambda g: loss(twin, g)))(g)),
        rtol=1e-5,
        atol=1e-6,
    )
    batched = jax.jit(jax.vmap(kernel, in_axes=(0, 0, 0, 0, None)))
    stack = [jnp.stack([x, -x]) for x in (p, g, m, v)]
    stack[3] = jnp.abs(stack[3])
    got = batched(*stack, c)
    want = jax.vmap(twin, in_axes=(0, 0, 0, 0, None))(*stack, c)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7, atol=1e-7)


def _packed(shapes: list[tuple[int, ...]], buffers: list[int], seed: int = 0) -> tuple[Any, ...]:
    """Leaves of ``shapes`` whose state lives in ``buffers[i]``, packed in order."""
    keys = jax.random.split(jax.random.key(seed), 2 * len(shapes) + 2)
    params = [jax.random.normal(keys[i], s) for i, s in enumerate(shapes)]
    grads = [jax.random.normal(keys[len(shapes) + i], s) for i, s in enumerate(shapes)]
    sizes = [0] * (max(buffers) + 1)
    slots = []
    for shape, j in zip(shapes, buffers, strict=True):
        slots.append((j, sizes[j]))
        sizes[j] += int(np.prod(shape))
    mu = [jax.random.normal(jax.random.fold_in(keys[-2], j), (n,)) for j, n in enumerate(sizes)]
    nu = [
        jnp.abs(jax.random.normal(jax.random.fold_in(keys[-1], j), (n,)))
        for j, n in enumerate(sizes)
    ]
    return params, grads, mu, nu, tuple(slots)


MANY = {
    # 150 small leaves of mixed shapes in two packed buffers (more leaves than one
    # call takes), a large leaf with a buffer of its own, empty leaves on the way
    "packed": (
        [(37,), (5, 7), (64,), (0,)] * 50 + [(300, 70)],
        [0] * 100 + [1] * 100 + [2],
    ),
    "one leaf per buffer": ([(2000,), (3, 1000), (4096,)], [0, 1, 2]),
}


def _coefficient_values(kernel: rules.StepKernel) -> dict[str, Any]:
    adam = _coefficients(4, weight_decay=0.05, grad_scale=0.7, eps_root=1e-9)._asdict()
    values = dict(grad_scale=0.7, d=0.9, c=0.1, eps=1e-7, neg_lr=-0.01, momentum=0.8)
    values["bc1_next"] = 1 - 0.9**5  # NAdam's next bias correction (step 4 of b1 = 0.9)
    if kernel.l2:  # the torch door's coupled weight decay, with maximize's negative scale
        adam["grad_scale"] = values["grad_scale"] = -0.7
        values["l2"] = 0.03
    return {
        k: adam[k] if "bc2" in kernel.coefficients and k in adam else values[k]  # Adam's kin
        for k in kernel.coefficients
    }


def _states(
    kernel: rules.StepKernel, mu: list[jax.Array], nu: list[jax.Array], storage: tuple[str, ...]
) -> list[Any]:
    # first moments and momenta may be negative; squares are not
    if "centered" in kernel.name:
        # The mean and mean square of the same gradients: the variance v - m^2 is at
        # least 1, so a rounding of m or v moves it by a few ulps of v at most (its
        # cancellation is test_centered_rmsprop_is_as_accurate_as_xla's subject).
        nu = [m * m + 1 + v for m, v in zip(mu, nu, strict=True)]
    trees = [mu if name in ("mu", "trace") else nu for name in kernel.states]
    return [[x.astype(d) for x in tree] for tree, d in zip(trees, storage, strict=True)]


STORAGE = [  # every kernel with every storage of its states
    pytest.param(kernel, combo, id=f"{kernel.name}-{'-'.join(combo)}")
    for kernel in rules.KERNELS
    for combo in itertools.product(kernel.storage, repeat=len(kernel.states))
]


def _assert_close(got: Any, want: Any) -> None:
    """Float32 results to an ulp or two: of the value, or where a sum cancels, of the
    array's largest magnitude (XLA places its own fused multiply-adds: in ``x y + z w``
    it contracts either product, as it likes in each fusion), with 99.5% of all the
    elements to an ulp or two of themselves. A bfloat16 state is the same float32
    value rounded once, so it agrees exactly except where an ulp of float32 moves a
    value across a rounding boundary (one bfloat16 ulp)."""
    close = []
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if a.dtype == jnp.float32:
            a, b = np.asarray(a), np.asarray(b)
            largest = np.max(np.abs(b[np.isfinite(b)]), initial=0.0)
            atol = max(1e-7, 2 * float(np.spacing(np.float32(largest))))
            np.testing.assert_allclose(a, b, rtol=3e-7, atol=atol)
            close.append(np.isclose(a, b, rtol=3e-7, atol=1e-7, equal_nan=True).ravel())
            continue
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, rtol=2.0**-7, atol=1e-30)
        assert np.mean(a == b) > 0.999
    close_all = np.concatenate(close) if close else np.ones(1, bool)
    assert np.mean(close_all) > 0.995, f"{np.sum(~close_all)} of {close_all.size} elements differ"


@pytest.mark.parametrize("kernel, storage", STORAGE)
@pytest.mark.parametrize("case", sorted(MANY))
def test_many_leaves_match_the_twin(
    case: str, kernel: rules.StepKernel, storage: tuple[str, ...]
) -> None:
    params, grads, mu, nu, slots = _packed(*MANY[case])
    states = _states(kernel, mu, nu, storage)
    c = kernel.pack(**_coefficient_values(kernel))
    fn = jax.jit(lambda p, g, s: step_many(kernel, p, g, s, c, slots=slots))
    text = fn.lower(params, grads, states).compile().as_text()
    live = tuple(s for s, p in zip(slots, params, strict=True) if p.size)
    calls = len(_calls(live, len(mu)))
    assert text.count(f'custom_call_target="{kernel.target(*storage)}"') == calls
    got = fn(params, grads, states)
    want = jax.jit(lambda p, g, s: _twin(kernel, p, g, s, c, slots))(params, grads, states)
    _assert_close(got, want)


def test_a_state_the_kernel_does_not_keep_runs_the_twin() -> None:
    params, grads, _, nu, slots = _packed([(MIN_KERNEL_SIZE,)], [0])
    kernel = rules.RMSPROP  # keeps float32 state only
    c = kernel.pack(**_coefficient_values(kernel))
    for states in ([[x.astype(jnp.bfloat16) for x in nu]], [[nu[0].astype(jnp.float16)]]):
        fn = jax.jit(lambda p, g, s: step_many(kernel, p, g, s, c, slots=slots))
        assert "jopt_rmsprop" not in fn.lower(params, grads, states).as_text()
        got = fn(params, grads, states)
        assert got[1][0][0].dtype == states[0][0].dtype
        want = jax.jit(lambda p, g, s: _twin(kernel, p, g, s, c, slots))(params, grads, states)
        _assert_close(got, want)


CENTERED = [k for k in rules.KERNELS if "centered" in k.name]


def _centered_exact(kernel: rules.StepKernel, g: Any, m: Any, v: Any, c: dict) -> Any:
    """Centered RMSprop's new parameters from p = 0 and a zero momentum buffer, in
    float64 (an oracle written apart from the rules), and the conditioning of its
    root: ``v / (v - m^2)`` of the new moments."""
    g = g * c["grad_scale"]
    m, v = c["c"] * g + c["d"] * m, c["c"] * g * g + c["d"] * v
    var = v - m * m
    lr, eps = -c["neg_lr"], c["eps"]
    if kernel.name.startswith("torch") or "eps_outside" in kernel.name:
        u = -lr * g / (np.sqrt(var) + eps)
    else:
        u = -lr * g / np.sqrt(var + eps)
    if kernel.name.endswith("nesterov"):  # p + u + momentum b, with b = u
        u = u + c["momentum"] * u
    return u, v / var


@pytest.mark.parametrize("kernel", CENTERED, ids=lambda k: k.name)
def test_centered_rmsprop_is_as_accurate_as_xla(kernel: rules.StepKernel) -> None:
    """Where the variance v - m^2 cancels (down to 1e-5 of v), an ulp of m or v moves
    it by up to cond = v / (v - m^2) ulps, and no float32 evaluation does better. The
    kernel and its XLA twin are each within 8 cond ulps of the float64 exact step; a
    kernel that took the raw v, or the old m, misses by orders of magnitude."""
    n = 3 * MIN_KERNEL_SIZE
    keys = jax.random.split(jax.random.key(7), 3)
    g = np.asarray(jax.random.normal(keys[0], (n,)), np.float64)
    m = np.asarray(jax.random.normal(keys[1], (n,)), np.float64)
    spread = np.asarray(jax.random.uniform(keys[2], (n,), minval=-5.0, maxval=0.0), np.float64)
    v = (m * m * (1 + 10.0**spread)).astype(np.float32).astype(np.float64)
    values = {**_coefficient_values(kernel), "eps": 1e-12, "neg_lr": -1.0}
    coefs = kernel.pack(**values)
    exact_c = {k: float(x) for k, x in zip(kernel.coefficients, np.asarray(coefs), strict=True)}
    want, cond = _centered_exact(kernel, g, m, v, exact_c)
    assert cond.max() > 1e4  # the data do cancel
    f32 = [jnp.asarray(x, jnp.float32) for x in (g, m, v)]
    states = [[f32[1]], [f32[2]], [jnp.zeros(n)]][: len(kernel.states)]
    p = jnp.zeros(n)
    fn = jax.jit(lambda p, g, s: step_many(kernel, [p], [g], s, coefs)[0][0])
    target = kernel.target(*("float32",) * len(kernel.states))
    assert f"@{target}(" in fn.lower(p, f32[0], states).as_text()
    twin = jax.jit(lambda p, g, s: kernel.reference(p, g, tuple(x[0] for x in s), coefs)[0])
    for got in (fn(p, f32[0], states), twin(p, f32[0], states)):
        error = np.abs(np.asarray(got, np.float64) - want) / (np.abs(want) * (1 + cond))
        assert error.max() < 8 * 2.0**-24, f"{error.max() / 2.0**-24:.1f} cond ulps"


@pytest.mark.parametrize(
    "kernel", [rules.AMSGRAD_RAW, rules.AMSGRADW_RAW, rules.AMSGRAD], ids=lambda k: k.name
)
def test_amsgrad_maximum_keeps_nans_as_xla_does(kernel: rules.StepKernel) -> None:
    params, grads, mu, nu, slots = _packed([(MIN_KERNEL_SIZE,)], [0])
    nu_max = np.asarray(nu[0]).copy()
    nu_max[:8] = np.nan  # a NaN maximum stays NaN whatever the new moment
    g = np.asarray(grads[0]).copy()
    g[8:16] = np.nan  # a NaN gradient makes the new moment NaN: so is the maximum
    nu_max[::2][10:20] = 0.0  # and ordinary values either side of the new moment
    grads, states = [jnp.asarray(g)], [mu, nu, [jnp.asarray(nu_max)]]
    c = kernel.pack(**_coefficient_values(kernel))
    fn = jax.jit(lambda p, g, s: step_many(kernel, p, g, s, c, slots=slots))
    assert kernel.target(*["float32"] * 3) in fn.lower(params, grads, states).as_text()
    got = fn(params, grads, states)
    want = jax.jit(lambda p, g, s: _twin(kernel, p, g, s, c, slots))(params, grads, states)
    new_max = np.asarray(got[1][2][0])
    assert np.isnan(new_max[:16]).all() and not np.isnan(new_max[16:]).any()
    _assert_close(got, want)


def test_bfloat16_state_rounds_as_jopt_casts() -> None:
    """Momentum with d = 0 stores the gradient itself: every rounding case, bit for bit,
    against jopt.tree.cast (round to nearest even, finite values saturating)."""
    f32 = np.finfo(np.float32)
    one, ulp = 1.0, 2.0**-8  # the bfloat16 ulp at 1
    special = [
        one + ulp / 2,  # a tie: rounds to even (down)
        one + 3 * ulp / 2,  # a tie: rounds to even (up)
        one + ulp / 2 + 2.0**-20,  # just above a tie: up
        -(one + ulp / 2),
        f32.max,  # saturates to bfloat16's largest finite value
        -f32.max,
        float(np.float32(3.3961e38)),  # between bfloat16's max and the next tie
        float(np.float32(3.3895314e38)),  # bfloat16's max
        np.inf,
        -np.inf,
        np.nan,
        -np.nan,
        0.0,  # (not -0.0: the momentum rule adds +0.0 to it)
        f32.tiny,  # the smallest normal
        f32.smallest_subnormal,
        3.0e-39,  # subnormal
    ]
    g = np.random.default_rng(0).normal(size=MIN_KERNEL_SIZE).astype(np.float32)
    g = g * np.float32(10.0) ** np.random.default_rng(1).integers(-30, 30, g.size)
    g[: len(special)] = special
    g = jnp.asarray(g, jnp.float32)
    kernel = rules.MOMENTUM
    c = kernel.pack(grad_scale=1.0, d=0.0, c=1.0, neg_lr=0.0)
    trace = [jnp.zeros(g.shape, jnp.bfloat16)]
    fn = jax.jit(lambda p, g, s: step_many(kernel, p, g, s, c))
    assert "jopt_momentum_step_bf16" in fn.lower([g], [g], [trace]).as_text()
    _, ((stored,),) = fn([jnp.zeros_like(g)], [g], [trace])
    want = np.asarray(jax.jit(lambda x: jopt.tree.cast(x, jnp.bfloat16))(g))
    got_bits, want_bits = np.asarray(stored).view(np.uint16), want.view(np.uint16)
    nan = np.isnan(want.astype(np.float32))
    assert nan.sum() == 2 and np.isnan(np.asarray(stored, np.float32))[nan].all()
    np.testing.assert_array_equal(got_bits[~nan], want_bits[~nan])
    assert np.isfinite(np.asarray(stored[4:6], np.float32)).all()  # saturated
    # XLA's CPU arithmetic flushes subnormals (so does the kernel's, on its threads);
    # elsewhere it is plain round-to-nearest-even (ml_dtypes' conversion)
    assert not np.asarray(stored[len(special) - 2 : len(special)], np.float32).any()
    magnitude = np.abs(np.asarray(g))
    finite = (magnitude < 3.3e38) & (magnitude >= f32.tiny)
    plain = np.asarray(g)[finite].astype(jnp.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(got_bits[finite], plain)


def test_many_leaves_are_written_in_place_when_donated() -> None:
    params, grads, mu, nu, slots = _packed(
        [(1000,)] * (2 * MAX_LEAVES_PER_CALL + 5), [0, 1] * (MAX_LEAVES_PER_CALL + 2) + [0]
    )
    before = [x.unsafe_buffer_pointer() for x in (*params, *mu, *nu)]
    step = jax.jit(
        lambda p, m, v, g: adam_step_many(p, g, m, v, _coefficients(1), slots=slots),
        donate_argnums=(0, 1, 2),
    )
    new_p, new_m, new_v = step(params, mu, nu, grads)
    assert [x.unsafe_buffer_pointer() for x in (*new_p, *new_m, *new_v)] == before


@pytest.mark.parametrize(
    "slots, message",
    [
        (((0, 0), (0, 4)), "starts at element 4 of state buffer 0, expected 3"),
        (((0, 0), (1, 0)), "state buffer 0 holds 6 elements, its leaves 3"),
        (((0, 0),), "slots has 1 entries for 2 leaves"),
    ],
)
def test_slots_that_do_not_tile_the_state_are_an_error(slots: Any, message: str) -> None:
    leaves = [jnp.ones(3), jnp.ones(3)]
    state = [jnp.zeros(6), jnp.zeros(3)]
    with pytest.raises(ValueError, match=message):
        adam_step_many(leaves, leaves, state, state, _coefficients(1), slots=slots)


def test_grad_and_vmap_of_many_leaves_use_the_twin() -> None:
    params, grads, mu, nu, slots = _packed([(3000,), (40, 30), (7,)], [0, 0, 1])
    c = _coefficients(2)

    def loss(run: Any, g: list[jax.Array]) -> jax.Array:
        new_p, new_m, _ = run(params, g, mu, nu)
        return sum(jnp.sum(x**2) for x in new_p) + sum(jnp.sum(x) for x in new_m)

    def twin(p: Any, g: Any, m: Any, v: Any) -> Any:
        new_p, (new_m, new_v) = _twin(rules.ADAM, p, g, [m, v], jnp.stack(c), slots)
        return new_p, new_m, new_v

    kernel = lambda p, g, m, v: adam_step_many(p, g, m, v, c, slots=slots)
    got = jax.jit(jax.grad(lambda g: loss(kernel, g)))(grads)
    want = jax.jit(jax.grad(lambda g: loss(twin, g)))(grads)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    stacked = [[jnp.stack([x, 2 * x]) for x in tree] for tree in (params, grads, mu, nu)]
    stacked[3] = [jnp.abs(x) for x in stacked[3]]
    got = jax.jit(jax.vmap(kernel))(*stacked)
    want = jax.vmap(twin)(*stacked)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=3e-7, atol=1e-7)


@pytest.mark.parametrize("kernel", [rules.ADAMW, rules.MOMENTUM_NESTEROV_L2], ids=lambda k: k.name)
def test_forward_derivatives_in_every_operand_are_the_twins(kernel: rules.StepKernel) -> None:
    # the primitive's own derivative rule: the kernel's values, the twin's tangents,
    # on a layout of several calls (tied together by the after-all barrier)
    shapes, buffers = MANY["packed"]
    params, grads, mu, nu, slots = _packed(shapes, buffers)
    assert len(_calls(slots, max(buffers) + 1)) > 1
    states = _states(kernel, mu, nu, ("float32",) * len(kernel.states))
    c = kernel.pack(**_coefficient_values(kernel))
    primals = (params, grads, states, c)
    tangents = jax.tree.map(lambda x: jnp.cos(3 * x), primals)

    def run(p: Any, g: Any, s: Any, c: Any) -> Any:
        return step_many(kernel, p, g, s, c, slots=slots)

    def twin(p: Any, g: Any, s: Any, c: Any) -> Any:
        return _twin(kernel, p, g, s, c, slots)

    assert "jopt_" in jax.jit(lambda *a: jax.jvp(run, a, tangents)).lower(*primals).as_text()
    got_out, got_dot = jax.jit(lambda *a: jax.jvp(run, a, tangents))(*primals)
    want_out, want_dot = jax.jvp(twin, primals, tangents)
    for got, want in ((got_out, want_out), (got_dot, want_dot)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("shapes", [[(MIN_KERNEL_SIZE,)], [(1000,)] * 300 + [(0,), (77, 3)]])
def test_sum_of_squares_is_the_float64_sum_to_float32_rounding(shapes: list[Any]) -> None:
    keys = jax.random.split(jax.random.key(1), len(shapes))
    leaves = [jax.random.normal(k, s) * 3 for k, s in zip(keys, shapes, strict=True)]
    fn = jax.jit(jopt.kernels.sum_of_squares)
    assert "jopt_sum_squares" in fn.lower(leaves).as_text()
    want = sum(np.sum(np.asarray(x, np.float64) ** 2) for x in leaves)
    got = fn(leaves)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(want, rel=1e-6)
    assert float(fn(leaves)) == float(got)  # the block order is fixed: deterministic
    norm = jax.jit(jopt.kernels.global_norm)({str(i): x for i, x in enumerate(leaves)})
    assert float(norm) == pytest.approx(float(jopt.global_norm(leaves)), rel=1e-6)
    grad = jax.jit(jax.grad(jopt.kernels.sum_of_squares))(leaves)
    for g, x in zip(grad, leaves, strict=True):
        np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(x), rtol=1e-6)


def test_sum_of_squares_takes_float32_only_and_global_norm_falls_back() -> None:
    with pytest.raises(TypeError, match="float32 leaves, got bfloat16"):
        jopt.kernels.sum_of_squares([jnp.ones(3, jnp.bfloat16)])
    tree = {"a": jnp.full(MIN_KERNEL_SIZE, 2.0, jnp.bfloat16)}
    fn = jax.jit(jopt.kernels.global_norm)
    assert "jopt_sum_squares" not in fn.lower(tree).as_text()
    assert float(fn(tree)) == pytest.approx(2 * MIN_KERNEL_SIZE**0.5)


@pytest.mark.parametrize("kernel, storage", STORAGE)
@pytest.mark.parametrize("seed", range(2))
def test_random_layouts_match_the_twin(
    seed: int, kernel: rules.StepKernel, storage: tuple[str, ...]
) -> None:
    """Random leaf counts, shapes (empty ones too) and packings."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 3 * MAX_LEAVES_PER_CALL))
    shapes = [
        tuple(int(d) for d in rng.integers(0, 40, size=rng.integers(0, 3))) for _ in range(count)
    ]
    shapes[int(rng.integers(count))] = (int(rng.integers(MIN_KERNEL_SIZE, 3 * MIN_KERNEL_SIZE)),)
    buffers = np.sort(rng.integers(0, int(rng.integers(1, 6)), size=count))
    buffers = np.unique(buffers, return_inverse=True)[1]  # no empty state buffer
    params, grads, mu, nu, slots = _packed(shapes, [int(b) for b in buffers], seed)
    states = _states(kernel, mu, nu, storage)
    c = kernel.pack(**_coefficient_values(kernel))
    fn = jax.jit(lambda p, g, s: step_many(kernel, p, g, s, c, slots=slots))
    assert kernel.target(*storage) in fn.lower(params, grads, states).as_text()
    got = fn(params, grads, states)
    want = jax.jit(lambda p, g, s: _twin(kernel, p, g, s, c, slots))(params, grads, states)
    _assert_close(got, want)
