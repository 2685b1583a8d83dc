"""jopt.kernels: the fused CPU Adam kernel against its XLA twin, in place, built once."""

from __future__ import annotations

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
from jopt.kernels import MIN_KERNEL_SIZE, AdamCoefficients, _reference, adam_step


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
