"""ReduceLROnPlateau against torch 2.13 and reduce_on_plateau against optax.contrib 0.2.8.

Both are driven by one synthetic sequence of monitored values with every feature a
plateau detector has to get right: steady improvements, flat stretches, improvements
smaller than the threshold, noise, and spikes. jopt runs jitted (a ``lax.scan`` over
the values); the peers run their own loops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jopt
from jopt.torch.lr_scheduler import ReduceLROnPlateau, StepLR
from tests.oracles import max_relative_error, standard_promotion
from tests.problems import PROBLEMS

LR = 0.1
STEPS = 320


def monitored(steps: int = STEPS, seed: int = 0) -> list[float]:
    """Stretches of descent, flat, sub-threshold improvement (3e-5 relative), noise, spikes."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    value = 1.0
    while len(out) < steps:
        kind = int(rng.integers(5))
        for _ in range(int(rng.integers(5, 30))):
            if kind == 0:
                value *= 0.97
            elif kind == 2:  # 3e-5 a step: the threshold is crossed with a margin of 1e-5
                value *= 1 - 3e-5
            noise = rng.normal() * 3e-3 if kind == 3 else 0.0
            spike = 0.5 if kind == 4 and rng.random() < 0.2 else 0.0
            out.append(value * (1 + noise + spike))
    return [float(np.float32(v)) for v in out[:steps]]  # exactly representable in float32


VALUES = monitored()


def torch_lrs(values: list[float], every: int = 1, **kwargs) -> np.ndarray:
    """``get_last_lr()`` after each value; the scheduler steps on the mean of ``every``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    out, total = [], 0.0
    for i, value in enumerate(values):
        optimizer.step()
        total += value
        if (i + 1) % every == 0:
            scheduler.step(total / every)
            total = 0.0
        out.append(scheduler.get_last_lr()[0])
    return np.asarray(out)


def jopt_lrs(tx, values: list[float], name: str = "lr") -> np.ndarray:
    """The learning rate jopt.hyperparams reports after each update, jitted."""
    params = jnp.zeros(1)

    def step(state, value):
        _, state = tx.update(jnp.zeros(1), state, params, value=value)
        return state, jopt.hyperparams(state)[name]

    run = jax.jit(lambda state, values: jax.lax.scan(step, state, values)[1])
    return np.asarray(run(tx.init(params), jnp.asarray(values)), np.float64)


TORCH_CASES = [
    pytest.param(
        dict(mode=mode, threshold_mode=threshold_mode, **options),
        id=f"{mode},{threshold_mode},{label}",
    )
    for mode in ("min", "max")
    for threshold_mode in ("rel", "abs")
    for label, options in {
        "default": {},
        "cooldown,min_lr,eps": dict(patience=2, cooldown=5, factor=0.7, min_lr=2e-3, eps=1e-3),
    }.items()
]


def _for_mode(kwargs: dict) -> tuple[dict, list[float]]:
    kwargs = dict(kwargs)
    if kwargs.get("threshold_mode") == "abs":
        kwargs.setdefault("threshold", 0.01)
    values = VALUES if kwargs.get("mode", "min") == "min" else [-v for v in VALUES]
    return kwargs, values


@pytest.mark.parametrize("kwargs", TORCH_CASES)
def test_learning_rates_match_torch(kwargs):
    kwargs, values = _for_mode(kwargs)
    theirs = torch_lrs(values, **kwargs)
    assert len(set(theirs.tolist())) >= 4, "the sequence must trigger several reductions"
    with jax.enable_x64(True):
        ours = jopt_lrs(ReduceLROnPlateau(jopt.torch.SGD(lr=LR), **kwargs), values)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(np.diff(ours) != 0, np.diff(theirs) != 0)


@pytest.mark.parametrize(
    ("make", "name"),
    [(lambda: jopt.torch.SGD(lr=LR), "lr"), (lambda: jopt.adam(LR), "learning_rate")],
    ids=["torch.SGD", "adam"],
)
@pytest.mark.parametrize(
    ("every", "dtype"),
    # float32 means of flat stretches are one ulp off torch's float64 ones, enough to
    # flip a comparison that sits on the threshold: means are compared in float64
    [(1, "float32"), (3, "float64")],
)
def test_learning_rates_match_torch_with_either_door(make, name, every, dtype):
    kwargs = dict(patience=3, cooldown=2, factor=0.5, min_lr=1e-4)
    theirs = torch_lrs(VALUES, every=every, **kwargs)
    with jax.enable_x64(dtype == "float64"):
        ours = jopt_lrs(ReduceLROnPlateau(make(), **kwargs, every=every), VALUES, name)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if dtype == "float32" else 1e-10, atol=0)
    np.testing.assert_array_equal(np.diff(ours) != 0, np.diff(theirs) != 0)


def test_the_reduced_learning_rate_drives_the_trajectory_as_in_torch():
    """torch: ``optimizer.step(); scheduler.step(loss)``; jopt: ``update(..., value=loss)``."""
    problem, steps = PROBLEMS[0], 150
    kwargs = dict(factor=0.5, patience=2, threshold=0.02)
    with jax.enable_x64(True):
        params = problem.params("float64")
        value_and_grad = jax.jit(jax.value_and_grad(problem.loss))
        leaves, treedef = jax.tree.flatten(params)
        tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
        optimizer = torch.optim.SGD(tensors, lr=0.01, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
        theirs, torch_lr = [], []
        for _ in range(steps):
            current = jax.tree.unflatten(
                treedef, [jnp.asarray(t.detach().numpy()) for t in tensors]
            )
            loss, grads = value_and_grad(current)
            for t, g in zip(tensors, jax.tree.leaves(grads), strict=True):
                t.grad = torch.tensor(np.asarray(g))
            optimizer.step()
            scheduler.step(float(loss))
            theirs.append(jax.tree.unflatten(treedef, [t.detach().numpy().copy() for t in tensors]))
            torch_lr.append(scheduler.get_last_lr()[0])

        tx = ReduceLROnPlateau(jopt.torch.SGD(lr=0.01, momentum=0.9), **kwargs)

        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(problem.loss)(params)
            updates, state = tx.update(grads, state, params, value=loss)
            params = jopt.apply_updates(params, updates)
            return (params, state), (params, jopt.hyperparams(state)["lr"])

        run = jax.jit(lambda carry: jax.lax.scan(step, carry, length=steps)[1])
        trajectory, lrs = run((params, tx.init(params)))
        ours = _unstack(trajectory, steps)
    assert len(set(torch_lr)) >= 3, "the problem must plateau more than once"
    np.testing.assert_allclose(np.asarray(lrs), torch_lr, rtol=1e-10, atol=0)
    error, where = max_relative_error(ours, theirs)
    assert error <= 1e-10, f"{error:.3g} at {where}"


def test_per_epoch_stepping_with_plateau_step():
    """``every=None``: update reads no value; jopt.plateau_step is scheduler.step(val_loss)."""
    kwargs = dict(patience=1, factor=0.5, cooldown=1)
    epochs = VALUES[:60]
    theirs = torch_lrs(epochs, **kwargs)
    tx = ReduceLROnPlateau(jopt.torch.SGD(lr=LR, momentum=0.9), **kwargs, every=None)
    params = jnp.ones(2)
    train_step = jax.jit(lambda state: tx.update(jnp.ones(2), state, params)[1])
    epoch_end = jax.jit(jopt.plateau_step)
    state, ours = tx.init(params), []
    for val_loss in epochs:
        state = train_step(train_step(state))  # two batches per epoch
        state = epoch_end(state, val_loss)
        ours.append(float(jopt.hyperparams(state)["lr"]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert int(state.last_epoch) == len(epochs)
    assert int(state.inner_state.count) == 2 * len(epochs)


def test_every_learning_rate_of_a_partition_is_reduced_down_to_min_lr():
    params = {"head": jnp.zeros(2), "body": jnp.zeros(3)}
    inner = jopt.partition(
        {"head": jopt.torch.SGD(lr=0.1), "body": jopt.torch.Adam(lr=0.01)},
        {"head": "head", "body": "body"},
    )
    tx = ReduceLROnPlateau(inner, patience=0, factor=0.5, min_lr=0.004)
    step = jax.jit(lambda state: tx.update(params, state, params, value=1.0)[1])
    state = jax.jit(tx.init)(params)
    for _ in range(6):
        state = step(state)
    lrs = {k: round(float(v), 6) for k, v in jopt.hyperparams(state).items() if k.endswith("lr")}
    assert lrs == {"head/lr": 0.004, "body/lr": 0.004}


def _count_traces(fn):
    traces = []

    def counted(*args):
        traces.append(None)
        return fn(*args)

    return jax.jit(counted), traces


@pytest.mark.parametrize(
    "tx",
    [
        ReduceLROnPlateau(jopt.torch.Adam(lr=LR), patience=1),
        jopt.chain(jopt.adam(LR), jopt.reduce_on_plateau(patience=1)),
    ],
    ids=["ReduceLROnPlateau", "reduce_on_plateau"],
)
def test_no_recompiles_as_the_learning_rate_drops(tx):
    params = jnp.ones(3)
    step, traces = _count_traces(lambda state, value: tx.update(params, state, params, value=value))
    state = tx.init(params)
    for value in VALUES[:40]:
        _, state = step(state, value)
    assert len(traces) == 1


OPTAX_CASES = {
    "default": dict(),
    "cooldown,min_scale": dict(factor=0.5, patience=3, cooldown=4, min_scale=0.05),
    "accumulation,atol": dict(accumulation_size=4, rtol=0.0, atol=0.01, patience=2),
}


def _run_with_values(tx, params, loss, values, strict=True):
    def step(carry, value):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params, value=value)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        return (params, state), (params, state[1].scale)

    with jax.numpy_dtype_promotion("strict" if strict else "standard"):
        run = jax.jit(lambda carry, values: jax.lax.scan(step, carry, values)[1])
        trajectory, scales = run((params, tx.init(params)), jnp.asarray(values))
    return _unstack(trajectory, len(values)), np.asarray(scales)


def _unstack(trajectory, steps):
    """A scanned trajectory (leaves with a leading step axis) as a list of numpy trees."""
    host = jax.tree.map(np.asarray, trajectory)
    return [jax.tree.map(lambda x, i=i: x[i], host) for i in range(steps)]


@pytest.mark.parametrize(
    ("optimizer", "kwargs"),
    [pytest.param("sgd", kwargs, id=f"sgd,{label}") for label, kwargs in OPTAX_CASES.items()]
    + [pytest.param("adam", OPTAX_CASES["cooldown,min_scale"], id="adam,cooldown,min_scale")],
)
def test_reduce_on_plateau_matches_optax(optimizer, kwargs):
    problem = PROBLEMS[2]
    params = problem.params("float32")
    ours, our_scales = _run_with_values(
        jopt.chain(getattr(jopt, optimizer)(0.01), jopt.reduce_on_plateau(**kwargs)),
        params,
        problem.loss,
        VALUES,
    )
    with standard_promotion():
        reference = optax.chain(
            getattr(optax, optimizer)(0.01), optax.contrib.reduce_on_plateau(**kwargs)
        )
    theirs, their_scales = _run_with_values(reference, params, problem.loss, VALUES, strict=False)
    assert len(set(np.asarray(their_scales).tolist())) >= 4
    np.testing.assert_array_equal(our_scales, their_scales)
    error, where = max_relative_error(ours, theirs)
    assert error <= 1e-5, f"{error:.3g} at {where}"


def test_reduce_on_plateau_keeps_optax_state_fields():
    state = jopt.reduce_on_plateau().init({"w": jnp.zeros(2)})
    reference = optax.contrib.reduce_on_plateau().init({"w": jnp.zeros(2)})
    assert state._fields == reference._fields
    for ours, theirs in zip(state, reference, strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert float(ours) == float(theirs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(factor=1.0), "factor=1.0 must be in [0.0, 1.0)"),
        (dict(factor=-0.5), "factor=-0.5 must be in [0.0, 1.0)"),
        (dict(mode="lowest"), "ReduceLROnPlateau: mode='lowest' must be 'min' or 'max'"),
        (
            dict(threshold_mode="rl"),
            "ReduceLROnPlateau: threshold_mode='rl' must be 'rel' or 'abs'",
        ),
        (dict(threshold=-1e-4), "threshold=-0.0001 must be >= 0.0"),
        (dict(patience=-1), "patience=-1 must be >= 0"),
        (dict(patience=2.5), "patience=2.5 must be an integer >= 0"),
        (dict(cooldown=-2), "cooldown=-2 must be >= 0"),
        (dict(min_lr=-1.0), "min_lr=-1.0 must be >= 0.0"),
        (
            dict(min_lr=[0.1, 0.2]),
            "ReduceLROnPlateau: min_lr=[0.1, 0.2] must be a number: it applies to every "
            "learning rate of the wrapped optimizer (per-group values are not supported)",
        ),
        (dict(eps="small"), "ReduceLROnPlateau: eps='small' must be a number"),
        (dict(every=0), "every=0 must be >= 1"),
    ],
)
def test_bad_arguments_of_ReduceLROnPlateau(kwargs, message):
    with pytest.raises(ValueError, match="^" + _escape(message) + "$"):
        ReduceLROnPlateau(jopt.torch.SGD(lr=LR), **kwargs)


def _escape(message: str) -> str:
    import re

    return re.escape(message)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (
            lambda: jopt.torch.SGD(lr=StepLR(0.1, step_size=10)),
            "ReduceLROnPlateau: lr of torch.SGD follows a schedule, which sets it at every "
            "step, so it cannot be reduced on plateau; build the optimizer with a constant lr",
        ),
        (
            lambda: jopt.with_hyperparams(
                lambda step_size: jopt.scale(-step_size), owner="my_sgd", step_size=0.1
            ),
            "ReduceLROnPlateau: the wrapped optimizer has no learning rate named lr or "
            "learning_rate in its state; its hyperparameters are ['step_size']",
        ),
        (
            lambda: optax.sgd(0.1),
            "ReduceLROnPlateau: the wrapped optimizer keeps no hyperparameters in its state "
            "(an optax optimizer?): wrap a jopt optimizer, or chain jopt.reduce_on_plateau "
            "after it, which scales the updates instead",
        ),
    ],
    ids=["scheduled", "no lr", "optax"],
)
def test_init_refuses_an_optimizer_whose_learning_rate_cannot_be_reduced(optimizer, message):
    tx = ReduceLROnPlateau(optimizer())
    with pytest.raises(ValueError, match="^" + _escape(message) + "$"):
        tx.init(jnp.zeros(2))


def test_bad_calls():
    params = jnp.zeros(2)
    with pytest.raises(
        TypeError, match=r"^ReduceLROnPlateau: int is not a gradient transformation$"
    ):
        ReduceLROnPlateau(42)
    tx = ReduceLROnPlateau(jopt.torch.SGD(lr=LR))
    state = tx.init(params)
    with pytest.raises(
        TypeError,
        match="^"
        + _escape(
            "ReduceLROnPlateau reads the monitored value: call update(..., value=loss) (or "
            "build it with every=None and call jopt.plateau_step once per epoch)"
        )
        + "$",
    ):
        tx.update(params, state, params)
    with pytest.raises(
        ValueError, match=r"^ReduceLROnPlateau: value must be a scalar, got shape \[2\]$"
    ):
        tx.update(params, state, params, value=jnp.ones(2))
    with pytest.raises(
        TypeError,
        match=r"^ReduceLROnPlateau\.update got a state that its init did not make: "
        r"HyperparamsState$",
    ):
        tx.update(params, state.inner_state, params, value=1.0)
    with pytest.raises(
        ValueError,
        match=r"^plateau_step: the state has no ReduceLROnPlateau "
        r"\(jopt\.torch\.lr_scheduler\) in it$",
    ):
        jopt.plateau_step(jopt.torch.SGD(lr=LR).init(params), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(factor=1.0), "factor=1.0 must be in (0.0, 1.0)"),
        (dict(rtol=1.5), "rtol=1.5 must be in [0.0, 1.0]"),
        (dict(atol=-1.0), "atol=-1.0 must be >= 0.0"),
        (dict(rtol=0.0, atol=0.0), "rtol=0.0 and atol=0.0: at least one of them must be positive"),
        (dict(patience=0), "patience=0 must be >= 1"),
        (dict(cooldown=-1), "cooldown=-1 must be >= 0"),
        (dict(accumulation_size=0), "accumulation_size=0 must be >= 1"),
        (dict(min_scale=-0.1), "min_scale=-0.1 must be >= 0.0"),
    ],
)
def test_bad_arguments_of_reduce_on_plateau(kwargs, message):
    with pytest.raises(ValueError, match="^" + _escape(message) + "$"):
        jopt.reduce_on_plateau(**kwargs)


def test_reduce_on_plateau_needs_the_value():
    tx = jopt.reduce_on_plateau()
    with pytest.raises(
        TypeError,
        match="^"
        + _escape("reduce_on_plateau reads the monitored value: call update(..., value=loss)")
        + "$",
    ):
        tx.update(jnp.zeros(2), tx.init(jnp.zeros(2)))
