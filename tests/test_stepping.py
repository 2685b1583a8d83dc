"""jopt.step: update and apply in one call, for every optimizer of both doors and optax.

Where a fused kernel runs (``KERNELS`` below names the kernel of each case, on CPU
float32), the step may round differently from XLA's loop in the last bit; everywhere
else it is the same program.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.oracles import standard_promotion
from tests.test_fused import OPTIMIZERS

SCHEDULE = jopt.warmup_cosine_decay_schedule(0.0, 0.01, 5, 50)
CHAINS = {
    "clip+adamw+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.adamw(SCHEDULE, weight_decay=0.01)
    ),
    "clip+sgd": lambda: jopt.chain(jopt.clip_by_global_norm(0.5), jopt.sgd(0.05, momentum=0.9)),
    "clip+clip+adam": lambda: jopt.chain(
        jopt.clip_by_global_norm(2.0), jopt.clip(0.05), jopt.adam(0.01)
    ),
    "optax.adamw": lambda: optax.adamw(0.01),
    "optax.clip+jopt.adam": lambda: jopt.chain(optax.clip_by_global_norm(1.0), jopt.adam(0.01)),
    "jopt.clip+optax.adam": lambda: jopt.chain(jopt.clip_by_global_norm(1.0), optax.adam(0.01)),
    "torch.Adam_no_decay": lambda: jopt.torch.Adam(lr=0.01, betas=(0.8, 0.99)),
    "torch.SGD_dampening": lambda: jopt.torch.SGD(lr=0.05, momentum=0.9, dampening=0.3),
    "clip+torch.SGD": lambda: jopt.chain(
        jopt.clip_by_global_norm(0.5), jopt.torch.SGD(lr=0.05, momentum=0.9)
    ),
    "torch.RMSprop_plain": lambda: jopt.torch.RMSprop(lr=0.01, alpha=0.9),
    "torch.Adagrad_plain": lambda: jopt.torch.Adagrad(lr=0.05, initial_accumulator_value=0.1),
    "torch.AdamW_schedule": lambda: jopt.torch.AdamW(lr=SCHEDULE, weight_decay=0.05),
    # torch's coupled weight decay and maximize, folded into the kernels' gradient
    "torch.SGD_l2_maximize": lambda: jopt.torch.SGD(
        lr=0.05, momentum=0.9, weight_decay=0.01, maximize=True
    ),
    "clip+torch.SGD_nesterov_l2_maximize": lambda: jopt.chain(
        jopt.clip_by_global_norm(0.5),
        jopt.torch.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
    ),
    "clip+torch.Adam_l2_maximize": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.torch.Adam(lr=0.01, weight_decay=0.01, maximize=True)
    ),
    "torch.AdamW_maximize": lambda: jopt.torch.AdamW(lr=0.01, maximize=True),
    "torch.RMSprop_l2_maximize": lambda: jopt.torch.RMSprop(
        lr=0.01, alpha=0.9, weight_decay=0.01, maximize=True
    ),
    "torch.Adagrad_l2": lambda: jopt.torch.Adagrad(lr=0.05, weight_decay=0.01),
    "torch.Adagrad_maximize": lambda: jopt.torch.Adagrad(lr=0.05, maximize=True),
    "clip+torch.Adagrad_lr_decay_maximize": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0),
        jopt.torch.Adagrad(lr=SCHEDULE, lr_decay=0.05, maximize=True),
    ),
    "rmsprop_momentum": lambda: jopt.rmsprop(0.01, momentum=0.9),
    "clip+rmsprop_nesterov+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.rmsprop(SCHEDULE, momentum=0.8, nesterov=True)
    ),
    "rmsprop_eps_outside_momentum": lambda: jopt.rmsprop(0.01, eps_in_sqrt=False, momentum=0.9),
    "torch.RMSprop_momentum": lambda: jopt.torch.RMSprop(lr=0.01, momentum=0.9),
    "torch.RMSprop_momentum_l2_maximize": lambda: jopt.torch.RMSprop(
        lr=0.01, momentum=0.9, weight_decay=0.01, maximize=True
    ),
    "torch.Adam_amsgrad_l2_maximize": lambda: jopt.torch.Adam(
        lr=0.01, amsgrad=True, weight_decay=0.01, maximize=True
    ),
    "clip+torch.AdamW_amsgrad": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.torch.AdamW(lr=0.01, amsgrad=True)
    ),
    "clip+nadamw+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.adamw(SCHEDULE, weight_decay=0.01, nesterov=True)
    ),
    "adadelta_plain": lambda: jopt.adadelta(0.5, rho=0.8),
    "adadelta_masked_decay": lambda: jopt.adadelta(  # decays before the fused chain
        weight_decay=0.1, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "clip+torch.Adadelta_maximize+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.torch.Adadelta(lr=SCHEDULE, maximize=True)
    ),
    "rmsprop_centered_eps_outside": lambda: jopt.rmsprop(0.01, centered=True, eps_in_sqrt=False),
    "clip+rmsprop_centered_nesterov+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0),
        jopt.rmsprop(SCHEDULE, centered=True, momentum=0.8, nesterov=True),
    ),
    "torch.RMSprop_centered_l2_maximize": lambda: jopt.torch.RMSprop(
        lr=0.01, alpha=0.9, centered=True, weight_decay=0.01, maximize=True
    ),
    # (behind a clip, torch's RMSprop drifts from float64 by ~3e-5 on rare elements,
    # XLA's loop and the kernel alike: no clip here)
    "torch.RMSprop_centered_momentum_l2+schedule": lambda: jopt.torch.RMSprop(
        lr=SCHEDULE, centered=True, momentum=0.9, weight_decay=0.01
    ),
    "amsgrad": lambda: jopt.amsgrad(0.01, b1=0.8),
    "clip+amsgrad+schedule": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.amsgrad(SCHEDULE, eps_root=1e-8)
    ),
    "amsgrad_bf16_mu": lambda: jopt.amsgrad(0.01, mu_dtype=jnp.bfloat16),  # XLA: f32 state only
    "partition": lambda: jopt.partition(
        {"adam": jopt.adam(0.01), "sgd": jopt.sgd(0.1)},
        jopt.labels_by_path({"big/**": "adam"}, default="sgd"),
    ),
}
LOW_PRECISION_STATE = {  # besides OPTIMIZERS' adam_bf16_moments
    "adamw_bf16_nu": lambda: jopt.adamw(0.01, weight_decay=0.1, nu_dtype=jnp.bfloat16),
    "sgd_momentum_bf16": lambda: jopt.sgd(0.05, momentum=0.9, accumulator_dtype=jnp.bfloat16),
    "nadam_bf16_mu": lambda: jopt.adam(0.01, mu_dtype=jnp.bfloat16, nesterov=True),
    "nadamw_bf16_moments": lambda: jopt.adamw(
        0.01, weight_decay=0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16, nesterov=True
    ),
    "clip+adam_bf16_mu": lambda: jopt.chain(
        jopt.clip_by_global_norm(1.0), jopt.adam(0.01, mu_dtype=jnp.bfloat16)
    ),
}
CASES = {**OPTIMIZERS, **CHAINS, **LOW_PRECISION_STATE}
KERNELS = {  # the kernel each case's step runs on the CPU (every other case: none)
    "sgd_momentum": "momentum",
    "sgd_nesterov": "momentum_nesterov",
    "torch.SGD_nesterov": "momentum_nesterov",
    "clip+sgd": "momentum",
    "rmsprop": "rmsprop",
    "adagrad": "adagrad",
    "adam": "adam",
    "adam_bf16_moments": "adam",
    "clip+adam_bf16_mu": "adam",
    "adamw_bf16_nu": "adamw",
    "sgd_momentum_bf16": "momentum",
    "clip+clip+adam": "adam",
    "optax.clip+jopt.adam": "adam",
    "adamw": "adamw",
    "clip+adamw+schedule": "adamw",
    "torch.AdamW": "adamw",
    "torch.Adam_no_decay": "adam",
    "torch.SGD_dampening": "momentum",
    "clip+torch.SGD": "momentum",
    "torch.RMSprop_plain": "rmsprop_eps_outside",
    "torch.Adagrad_plain": "adagrad_eps_outside",
    "torch.AdamW_schedule": "adamw",
    "torch.SGD_l2_maximize": "momentum_l2",
    "clip+torch.SGD_nesterov_l2_maximize": "momentum_nesterov_l2",
    "torch.SGD": "momentum_l2",
    "torch.Adam": "adam_l2",
    "clip+torch.Adam_l2_maximize": "adam_l2",
    "torch.AdamW_maximize": "adamw",
    "torch.RMSprop_l2_maximize": "rmsprop_eps_outside_l2",
    "torch.Adagrad_l2": "adagrad_eps_outside_l2",
    "torch.Adagrad_maximize": "adagrad_eps_outside",
    "torch.Adagrad": "adagrad_eps_outside_l2",  # lr_decay in the step size
    "clip+torch.Adagrad_lr_decay_maximize": "adagrad_eps_outside",
    "torch.Adam_amsgrad": "amsgrad_raw",
    "rmsprop_momentum": "rmsprop_momentum",
    "clip+rmsprop_nesterov+schedule": "rmsprop_momentum_nesterov",
    "torch.RMSprop_momentum": "torch_rmsprop_momentum",
    "torch.RMSprop_momentum_l2_maximize": "torch_rmsprop_momentum_l2",
    "torch.Adam_amsgrad_l2_maximize": "amsgrad_raw_l2",
    "clip+torch.AdamW_amsgrad": "amsgradw_raw",
    "adam_nesterov_eps_root": "nadam",
    "clip+nadamw+schedule": "nadamw",
    "nadam_bf16_mu": "nadam",
    "nadamw_bf16_moments": "nadamw",
    "adadelta": "adadelta_l2",  # optax's weight decay is added to the gradient first
    "torch.Adadelta": "adadelta_l2",
    "adadelta_plain": "adadelta",
    "adadelta_masked_decay": "adadelta",  # on the decayed gradients
    "clip+torch.Adadelta_maximize+schedule": "adadelta",
    "amsgrad": "amsgrad",
    "clip+amsgrad+schedule": "amsgrad",
    "rmsprop_centered_momentum": "rmsprop_centered_momentum",
    "torch.RMSprop": "torch_rmsprop_centered_momentum",
    "rmsprop_centered_eps_outside": "rmsprop_centered_eps_outside",
    "clip+rmsprop_centered_nesterov+schedule": "rmsprop_centered_momentum_nesterov",
    "torch.RMSprop_centered_l2_maximize": "rmsprop_centered_eps_outside_l2",
    "torch.RMSprop_centered_momentum_l2+schedule": "torch_rmsprop_centered_momentum_l2",
}


def _params(dtype: Any = jnp.float32) -> dict[str, Any]:
    # a large leaf (its own buffer) and small ones (packed by fuse)
    key = jax.random.key(0)
    return {
        "big": {"w": jax.random.normal(key, (512, 520), dtype)},  # >= MIN_KERNEL_SIZE
        "small": [jnp.linspace(-1, 1, 7, dtype=dtype), jnp.ones((3, 4), dtype)],
    }


def _grads(t: int, params: Any) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(1), t), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def _trajectories(tx: Any, params: Any, steps: int) -> tuple[list[Any], list[Any]]:
    @jax.jit
    def by_update(grads: Any, state: Any, params: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    by_step = jax.jit(lambda grads, state, params: jopt.step(tx, grads, state, params))
    out = []
    for fn in (by_update, by_step):
        p, s, seen = params, tx.init(params), []
        for t in range(steps):
            p, s = fn(_grads(t, params), s, p)
            seen.append((p, s))
        out.append(seen)
    return out[0], out[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_equals_update_then_apply(name: str) -> None:
    tx = CASES[name]()
    if "optax" in name:  # optax itself needs jax's default promotion rules
        with standard_promotion():
            by_update, by_step = _trajectories(tx, _params(), 12)
    else:
        by_update, by_step = _trajectories(tx, _params(), 12)
    low_precision = name in LOW_PRECISION_STATE or name == "adam_bf16_moments"
    for (p1, s1), (p2, s2) in zip(by_update, by_step, strict=True):
        assert jax.tree.structure(s1) == jax.tree.structure(s2)
        for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2)), strict=True):
            if not low_precision:
                # a few float32 ulps of the values (ones and unit normals)
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)
            elif a.dtype == jnp.bfloat16:
                # The kernel and XLA may round a moment differently in the last
                # float32 bit, which moves a rare element across a bfloat16 rounding
                # boundary (an ulp, 2^-8 relative; it compounds over steps).
                a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
                assert np.mean(a == b) > 0.999
                np.testing.assert_allclose(a, b, rtol=2.0**-5, atol=1e-5)
            else:
                # ... which moves those parameters by a fraction of a step (lr = 0.01)
                a, b = np.asarray(a), np.asarray(b)
                assert np.mean(np.isclose(a, b, rtol=2e-6, atol=2e-6)) > 0.999
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def _lowered(tx: Any, params: Any) -> str:
    step = jax.jit(lambda g, s, p: jopt.step(tx, g, s, p))
    return step.lower(params, tx.init(params), params).as_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_kernel_runs_exactly_where_it_applies(name: str) -> None:
    if not jopt.kernels.available():
        pytest.fail(f"the CPU kernels did not build here: {jopt.kernels.status()}")
    with standard_promotion():
        text = _lowered(CASES[name](), _params())
    targets = set(re.findall(r"jopt_(\w+?)_step_(?:f32|bf16)", text))
    assert targets == ({KERNELS[name]} if name in KERNELS else set()), name


def test_low_precision_params_step_as_update_then_apply() -> None:
    tx = jopt.adamw(0.01)
    params = _params(jnp.bfloat16)
    assert "jopt_adam" not in _lowered(tx, params)
    by_update, by_step = _trajectories(tx, params, 5)
    for (p1, _), (p2, _) in zip(by_update, by_step, strict=True):
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_the_clip_is_folded_without_a_gradient_sized_temporary() -> None:
    # The clipped step reads the gradients twice (the norm, then the kernel) and writes
    # the params and moments in place: no full-size op but those two, and no copies.
    tx = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(0.01))
    params = {"w": jnp.ones((1 << 18,))}

    def train_step(params: Any, state: Any, grads: Any) -> Any:
        return jopt.step(tx, grads, state, params)

    compiled = (
        jax.jit(train_step, donate_argnums=(0, 1))
        .lower(params, tx.init(params), params)
        .compile()
        .as_text()
    )
    entry = compiled[compiled.index("ENTRY") :].splitlines()[1:]
    ops = [re.search(r" = (\(.*?\)|\S+) ([\w-]+)\(", line) for line in entry]
    full = {m[2] for m in ops if m and "f32[262144]" in m[1] and m[2] not in ("parameter", "tuple")}
    assert full == {"custom-call", "get-tuple-element"}, "\n".join(entry)


@pytest.mark.parametrize(
    "width, depth, calls",
    [(512, 3, 1), (64, 2 * jopt.kernels.MAX_LEAVES_PER_CALL + 2, 3)],  # 512 x 512: kernel-sized
)
def test_a_training_step_updates_the_weights_in_place_without_copies(
    width: int, depth: int, calls: int
) -> None:
    # The backward pass reads every weight (delta @ W.T); the kernels must run after
    # those reads instead of XLA copying the weights to protect them. One call reads
    # every gradient; several calls wait for a zero computed after all of them.
    tx = jopt.adamw(1e-3)
    keys = jax.random.split(jax.random.key(0), depth)
    params = [jax.random.normal(k, (width, width)) / width**0.5 for k in keys]
    x = jnp.ones((8, width))

    def loss(params: Any) -> jax.Array:
        h = x
        for w in params:
            h = jnp.tanh(h @ w)
        return jnp.sum(h**2)

    def train_step(params: Any, state: Any) -> Any:
        return jopt.step(tx, jax.grad(loss)(params), state, params)

    compiled = (
        jax.jit(train_step, donate_argnums=(0, 1))
        .lower(params, tx.init(params))
        .compile()
        .as_text()
    )
    entry = compiled[compiled.index("ENTRY") :]
    target = jopt.kernels.rules.ADAMW.target(jnp.float32, jnp.float32)
    assert entry.count(f'custom_call_target="{target}"') == calls
    assert entry.count('custom_call_target="jopt_after_all"') == (calls > 1)
    assert " copy(" not in entry, entry


@pytest.mark.parametrize("name", ["adamw", "nadamw", "amsgrad"])
def test_step_agrees_with_optax_over_100_steps(name: str) -> None:
    """The kernel path against the real optax, step by step (the parity tests' bound)."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.01, 5, 50)
    if name == "amsgrad":
        ours_tx, theirs_tx = jopt.amsgrad(SCHEDULE, b1=0.8), optax.amsgrad(schedule, b1=0.8)
    else:
        nesterov = name == "nadamw"
        ours_tx = jopt.adamw(SCHEDULE, weight_decay=0.01, nesterov=nesterov)
        theirs_tx = optax.adamw(schedule, weight_decay=0.01, nesterov=nesterov)
    ours = jopt.chain(jopt.clip_by_global_norm(1.0), ours_tx)
    theirs = optax.chain(optax.clip_by_global_norm(1.0), theirs_tx)
    params = _params()
    p1, s1 = params, ours.init(params)
    p2, s2 = params, theirs.init(params)
    step = jax.jit(lambda g, s, p: jopt.step(ours, g, s, p))
    assert f"jopt_{name}_step" in step.lower(params, s1, p1).as_text()

    @jax.jit
    def optax_step(g: Any, s: Any, p: Any) -> Any:
        updates, s = theirs.update(g, s, p)
        return optax.apply_updates(p, updates), s

    for t in range(100):
        g = _grads(t, params)
        p1, s1 = step(g, s1, p1)
        with standard_promotion():
            p2, s2 = optax_step(g, s2, p2)
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs, kernel",
    [
        ("Adam", dict(lr=0.01, betas=(0.8, 0.99)), "adam_step_f32_f32"),
        ("AdamW", dict(lr=0.01, weight_decay=0.05), "adamw_step_f32_f32"),
        ("SGD", dict(lr=0.01, momentum=0.9), "momentum_step_f32"),
        ("SGD", dict(lr=0.01, momentum=0.8, dampening=0.5), "momentum_step_f32"),
        ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True), "momentum_nesterov_step_f32"),
        ("RMSprop", dict(lr=0.001, alpha=0.9, eps=1e-6), "rmsprop_eps_outside_step_f32"),
        ("Adagrad", dict(lr=0.05), "adagrad_eps_outside_step_f32"),
        ("Adagrad", dict(lr=0.01, initial_accumulator_value=0.5), "adagrad_eps_outside_step_f32"),
        # coupled weight decay and maximize, in the kernels' gradient
        ("SGD", dict(lr=0.01, momentum=0.9, weight_decay=5e-2), "momentum_l2_step_f32"),
        (
            "SGD",
            dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-2, maximize=True),
            "momentum_nesterov_l2_step_f32",
        ),
        ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.2, maximize=True), "momentum_step_f32"),
        ("Adam", dict(lr=0.01, weight_decay=0.05), "adam_l2_step_f32_f32"),
        ("Adam", dict(lr=0.01, weight_decay=0.05, maximize=True), "adam_l2_step_f32_f32"),
        ("AdamW", dict(lr=0.01, weight_decay=0.05, maximize=True), "adamw_step_f32_f32"),
        (
            "RMSprop",
            dict(lr=0.001, weight_decay=0.05, maximize=True),
            "rmsprop_eps_outside_l2_step_f32",
        ),
        ("Adagrad", dict(lr=0.05, weight_decay=0.05), "adagrad_eps_outside_l2_step_f32"),
        ("Adagrad", dict(lr=0.05, maximize=True), "adagrad_eps_outside_step_f32"),
        ("Adadelta", dict(lr=1.0, rho=0.8), "adadelta_step_f32_f32"),
        (
            "Adadelta",
            dict(lr=0.5, eps=1e-5, weight_decay=0.05, maximize=True),
            "adadelta_l2_step_f32_f32",
        ),
        ("Adagrad", dict(lr=0.05, lr_decay=0.05), "adagrad_eps_outside_step_f32"),
        (
            "Adagrad",
            dict(lr=0.05, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1),
            "adagrad_eps_outside_l2_step_f32",
        ),
        # AMSGrad (three states), as torch keeps it
        ("Adam", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.99)), "amsgrad_raw_step_f32_f32_f32"),
        (
            "Adam",
            dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True),
            "amsgrad_raw_l2_step_f32_f32_f32",
        ),
        ("AdamW", dict(lr=0.01, amsgrad=True), "amsgradw_raw_step_f32_f32_f32"),
        # RMSprop with momentum (the buffer after the normalization, lr after the buffer)
        (
            "RMSprop",
            dict(lr=0.001, momentum=0.9, alpha=0.95),
            "torch_rmsprop_momentum_step_f32_f32",
        ),
        (
            "RMSprop",
            dict(lr=0.001, momentum=0.5, weight_decay=0.05, maximize=True),
            "torch_rmsprop_momentum_l2_step_f32_f32",
        ),
        # centered: the variance v - m^2 under the root
        ("RMSprop", dict(lr=0.001, centered=True), "rmsprop_centered_eps_outside_step_f32_f32"),
        (
            "RMSprop",
            dict(lr=0.001, centered=True, alpha=0.9, weight_decay=0.05, maximize=True),
            "rmsprop_centered_eps_outside_l2_step_f32_f32",
        ),
        (
            "RMSprop",
            dict(lr=0.001, centered=True, momentum=0.9),
            "torch_rmsprop_centered_momentum_step_f32_f32_f32",
        ),
        (
            "RMSprop",
            dict(lr=0.001, centered=True, momentum=0.5, weight_decay=0.05),
            "torch_rmsprop_centered_momentum_l2_step_f32_f32_f32",
        ),
    ],
)
def test_torch_door_kernel_step_agrees_with_torch_over_100_steps(
    name: str, kwargs: dict[str, Any], kernel: str
) -> None:
    """The kernel path of the torch door against the real torch.optim, step by step."""
    import torch

    ours = getattr(jopt.torch, name)(**kwargs)
    params = _params()
    leaves = jax.tree.leaves(params)
    tensors = [torch.nn.Parameter(torch.tensor(np.asarray(x))) for x in leaves]
    theirs = getattr(torch.optim, name)(tensors, **kwargs)
    step = jax.jit(lambda g, s, p: jopt.step(ours, g, s, p))
    assert f"jopt_{kernel}" in step.lower(params, ours.init(params), params).as_text()
    p, s = params, ours.init(params)
    for t in range(100):
        g = _grads(t, params)
        p, s = step(g, s, p)
        for tensor, grad in zip(tensors, jax.tree.leaves(g), strict=True):
            tensor.grad = torch.tensor(np.asarray(grad))
        theirs.step()
        for a, b in zip(jax.tree.leaves(p), tensors, strict=True):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_extra_arguments_reach_the_update() -> None:
    tx = jopt.chain(jopt.adam(0.1), jopt.reduce_on_plateau(patience=1, factor=0.5))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(6):
        params, state = jopt.step(tx, {"w": jnp.ones(3)}, state, params, value=jnp.float32(1.0))
    assert float(state[1].scale) < 1.0


def test_a_mismatched_gradient_names_the_path() -> None:
    tx = jopt.adam(0.1)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(jopt.TreeMismatchError, match="b"):
        jopt.step(tx, {"a": jnp.ones(3), "b": jnp.ones(4)}, state, params)
    with pytest.raises(TypeError, match="adam"):
        jopt.step(tx, params, jopt.sgd(0.1).init(params), params)


def test_a_custom_step_is_used_and_combinators_pass_it_through() -> None:
    calls = []

    def halve(grads: Any, state: Any, params: Any, grad_scale: Any = None, **extra: Any) -> Any:
        calls.append(grad_scale)
        return jax.tree.map(lambda p: p / 2, params), state

    tx = jopt.stepping.with_step(jopt.scale(-1.0), halve)
    chained = jopt.chain(jopt.clip_by_global_norm(1.0), tx)
    params, _ = jopt.step(chained, jnp.full(4, 3.0), chained.init(None), jnp.ones(4))
    np.testing.assert_array_equal(np.asarray(params), np.full(4, 0.5))
    assert float(calls[0]) == pytest.approx(1.0 / 6.0)  # 1 / ||(3, 3, 3, 3)||
    # update still runs the transformation itself
    np.testing.assert_array_equal(np.asarray(tx.update(jnp.ones(2), None)[0]), -np.ones(2))
