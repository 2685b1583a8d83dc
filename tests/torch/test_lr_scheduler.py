"""jopt.torch.lr_scheduler against the real torch.optim.lr_scheduler 2.13.

The oracle: ``torch.optim.SGD([Parameter(zeros(1))], lr=LR, momentum=0.9)`` with the
torch scheduler, ``optimizer.step(); scheduler.step()`` 300 times, recording
``get_last_lr()[0]`` (and the momentum) after each; with ``every=3`` torch is stepped at
every third count. jopt must give those values at counts 0..300. All jopt schedules are
evaluated by one compiled program per dtype (a jitted ``vmap`` over the counts each), as
compiling ~100 small programs would cost more than running them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jopt
import jopt.schedules
from jopt.torch import lr_scheduler as J

T = torch.optim.lr_scheduler
LR = 0.1
STEPS = 300
EVERY = (1, 3)


@dataclasses.dataclass(frozen=True)
class Sides:
    """A constructor argument that differs between the two sides (e.g. a lambda)."""

    jopt: Any
    torch: Any


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    jopt: Callable[[int], Any]  # every -> jopt schedule
    torch: Callable[[Any], Any]  # optimizer -> torch scheduler
    single: bool = True  # a basic scheduler (its recursion is checked on its own)


def _kwargs(kwargs: dict[str, Any], side: str) -> dict[str, Any]:
    return {k: getattr(v, side) if isinstance(v, Sides) else v for k, v in kwargs.items()}


def _shown(kwargs: dict[str, Any]) -> str:
    return ",".join(
        f"{k}={'fn' if isinstance(v, Sides) or callable(v) else v}" for k, v in kwargs.items()
    )


def same(name: str, label: str = "", **kwargs: Any) -> Case:
    """``J.<name>(LR, **kwargs)`` against ``T.<name>(optimizer, **kwargs)``."""
    return Case(
        f"{name}({label or _shown(kwargs)})",
        lambda every: getattr(J, name)(LR, **_kwargs(kwargs, "jopt"), every=every),
        lambda opt: getattr(T, name)(opt, **_kwargs(kwargs, "torch")),
    )


Member = tuple[str, dict[str, Any]]


def _jopt_members(members: list[Member]) -> list[Any]:
    return [getattr(J, name)(LR, **_kwargs(kw, "jopt")) for name, kw in members]


def _torch_members(opt: Any, members: list[Member]) -> list[Any]:
    return [getattr(T, name)(opt, **_kwargs(kw, "torch")) for name, kw in members]


def sequential(label: str, members: list[Member], milestones: list[int]) -> Case:
    return Case(
        f"SequentialLR({label})",
        lambda every: J.SequentialLR(_jopt_members(members), milestones, every=every),
        lambda opt: T.SequentialLR(opt, _torch_members(opt, members), milestones),
        single=False,
    )


def chained(label: str, members: list[Member], nest: int = 0) -> Case:
    """A ChainedScheduler; with ``nest``, its first ``nest`` members in an inner one."""

    def build_jopt(every: int) -> Any:
        built = _jopt_members(members)
        if nest:
            built = [J.ChainedScheduler(built[:nest]), *built[nest:]]
        return J.ChainedScheduler(built, every=every)

    def build_torch(opt: Any) -> Any:
        built = _torch_members(opt, members)
        if nest:
            built = [T.ChainedScheduler(built[:nest]), *built[nest:]]
        return T.ChainedScheduler(built)

    return Case(f"ChainedScheduler({label})", build_jopt, build_torch, single=False)


warmup = Sides(
    jopt=lambda epoch: jnp.minimum(1.0, (epoch + 1) / 10),
    torch=lambda epoch: min(1.0, (epoch + 1) / 10),
)

CASES = [
    *[same("StepLR", step_size=s, gamma=g) for s in (1, 7, 30) for g in (0.5, 0.1)],
    same("MultiStepLR", milestones=[10, 50, 120], gamma=0.5),
    same("MultiStepLR", milestones=[0, 30, 30, 200], gamma=0.3),
    same("MultiStepLR", milestones=[]),
    same("ConstantLR"),
    same("ConstantLR", factor=0.5, total_iters=40),
    same("ConstantLR", factor=1.0, total_iters=3),
    same("LinearLR"),
    same("LinearLR", start_factor=0.1, end_factor=1.0, total_iters=50),
    same("LinearLR", start_factor=1.0, end_factor=0.05, total_iters=100),
    same("LinearLR", start_factor=0.5, end_factor=0.0, total_iters=20),
    same("ExponentialLR", gamma=0.99),
    same("ExponentialLR", gamma=1.01),
    same("PolynomialLR"),
    same("PolynomialLR", total_iters=100, power=2.0),
    same("PolynomialLR", total_iters=250, power=0.5),
    same("PolynomialLR", total_iters=40, power=0.0),
    *[same("CosineAnnealingLR", T_max=t, eta_min=e) for t in (10, 100) for e in (0.0, 0.01)],
    same("CosineAnnealingLR", T_max=1),
    same("CosineAnnealingLR", T_max=7, eta_min=0.099),
    same("CosineAnnealingWarmRestarts", T_0=10),
    same("CosineAnnealingWarmRestarts", T_0=7, T_mult=2, eta_min=0.001),
    same("CosineAnnealingWarmRestarts", T_0=1, T_mult=3),
    same("CosineAnnealingWarmRestarts", T_0=50, T_mult=1, eta_min=0.02),
    same("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=20),
    same("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=15, step_size_down=25,
         mode="triangular2"),
    same("CyclicLR", base_lr=0.02, max_lr=0.2, step_size_up=10, mode="exp_range", gamma=0.99),
    same("CyclicLR", "scale_fn=0.5**cycle", base_lr=0.01, max_lr=0.1, step_size_up=12,
         scale_fn=lambda x: 0.5**x),
    same("CyclicLR", "scale_fn=0.999**iteration", base_lr=0.01, max_lr=0.1, step_size_up=12,
         scale_fn=lambda x: 0.999**x, scale_mode="iterations"),
    same("CyclicLR", base_lr=0.05, max_lr=0.1, step_size_up=7, cycle_momentum=False),
    same("CyclicLR", base_lr=0.05, max_lr=0.1, step_size_up=9, step_size_down=0),
    same("OneCycleLR", max_lr=1.0, total_steps=300),
    same("OneCycleLR", max_lr=1.0, total_steps=300, anneal_strategy="linear"),
    same("OneCycleLR", max_lr=1.0, total_steps=300, three_phase=True),
    same("OneCycleLR", max_lr=0.5, total_steps=300, pct_start=0.2, anneal_strategy="linear",
         three_phase=True, base_momentum=0.8, max_momentum=0.9),
    same("OneCycleLR", max_lr=1.0, epochs=30, steps_per_epoch=10, pct_start=0.25,
         div_factor=10.0, final_div_factor=100.0),
    same("OneCycleLR", max_lr=1.0, total_steps=300, cycle_momentum=False),
    same("LambdaLR", "0.95**epoch", lr_lambda=lambda epoch: 0.95**epoch),
    same("LambdaLR", "warmup", lr_lambda=warmup),
    same("MultiplicativeLR", "0.97", lr_lambda=lambda epoch: 0.97),
    same("MultiplicativeLR", "0.99**(epoch%5)", lr_lambda=lambda epoch: 0.99 ** (epoch % 5)),
    sequential(
        "Linear,Cosine",
        [("LinearLR", dict(start_factor=0.1, total_iters=20)),
         ("CosineAnnealingLR", dict(T_max=280))],
        [20],
    ),
    sequential(
        "Constant,Exponential,Step",
        [("ConstantLR", dict(factor=0.3, total_iters=10)), ("ExponentialLR", dict(gamma=0.98)),
         ("StepLR", dict(step_size=30, gamma=0.5))],
        [10, 100],
    ),
    sequential(
        "Linear,Multiplicative",
        [("LinearLR", dict(start_factor=0.5, total_iters=10)),
         ("MultiplicativeLR", dict(lr_lambda=lambda epoch: 0.97))],
        [50],
    ),
    sequential(
        "Cyclic,Step",
        [("CyclicLR", dict(base_lr=0.01, max_lr=0.2, step_size_up=10)),
         ("StepLR", dict(step_size=30, gamma=0.5))],
        [60],
    ),
    sequential(
        "Step,WarmRestarts",
        [("StepLR", dict(step_size=10, gamma=0.5)),
         ("CosineAnnealingWarmRestarts", dict(T_0=15, T_mult=2))],
        [40],
    ),
    sequential(
        "Lambda,Polynomial,Cosine",
        [("LambdaLR", dict(lr_lambda=lambda epoch: 0.95**epoch)),
         ("PolynomialLR", dict(total_iters=100, power=2.0)),
         ("CosineAnnealingLR", dict(T_max=30, eta_min=0.001))],
        [25, 150],
    ),
    chained(
        "Constant,Exponential",
        [("ConstantLR", dict(factor=0.5, total_iters=20)), ("ExponentialLR", dict(gamma=0.99))],
    ),
    chained(
        "Linear,Cosine",
        [("LinearLR", dict(start_factor=0.2, total_iters=30)),
         ("CosineAnnealingLR", dict(T_max=50, eta_min=0.001))],
    ),
    chained(
        "Cosine,Step",
        [("CosineAnnealingLR", dict(T_max=30)), ("StepLR", dict(step_size=50, gamma=0.5))],
    ),
    chained(
        "Exponential,WarmRestarts",
        [("ExponentialLR", dict(gamma=0.995)), ("CosineAnnealingWarmRestarts", dict(T_0=40))],
    ),
    chained(
        "Multiplicative,MultiStep",
        [("MultiplicativeLR", dict(lr_lambda=lambda epoch: 0.98)),
         ("MultiStepLR", dict(milestones=[50, 100], gamma=0.5))],
    ),
    chained(
        "Cyclic,Exponential",
        [("CyclicLR", dict(base_lr=0.05, max_lr=0.2, step_size_up=10)),
         ("ExponentialLR", dict(gamma=0.99))],
    ),
    chained(
        "(Step,Linear),Polynomial",
        [("StepLR", dict(step_size=7, gamma=0.5)),
         ("LinearLR", dict(start_factor=0.25, total_iters=20)),
         ("PolynomialLR", dict(total_iters=200, power=1.0))],
        nest=2,
    ),
]  # fmt: skip

MOMENTUM = [c for c in CASES if c.id.startswith(("CyclicLR", "OneCycleLR"))]
MOMENTUM = [c for c in MOMENTUM if "cycle_momentum=False" not in c.id]
CASE_PARAMS = [pytest.param(c, every, id=f"{c.id}-every{every}") for c in CASES for every in EVERY]
MOMENTUM_PARAMS = [
    pytest.param(c, every, id=f"{c.id}-every{every}") for c in MOMENTUM for every in EVERY
]


def _torch_run(case: Case, every: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's lr and momentum at counts 0..STEPS, stepping the scheduler every ``every``."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=LR, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = case.torch(opt)
        lrs, momenta = [scheduler.get_last_lr()[0]], [opt.param_groups[0]["momentum"]]
        for count in range(1, STEPS + 1):
            opt.step()
            if count % every == 0:
                scheduler.step()
            lrs.append(scheduler.get_last_lr()[0])
            momenta.append(opt.param_groups[0]["momentum"])
    return np.asarray(lrs, np.float64), np.asarray(momenta, np.float64)


def _jopt_run(x64: bool, recursion: bool = False) -> dict[tuple[str, str, int], np.ndarray]:
    """jopt's values for the comparisons, from one compiled program.

    Keys: ``("lr", case, every)`` and ``("momentum", case, every)``, compiled as users
    compile them; or, with ``recursion``, ``("recursion", case, 1)`` for the basic
    schedulers: torch's recursion run step by step (what a ChainedScheduler runs) instead
    of the closed form. That check is of the arithmetic, not of XLA's optimizations, so
    its program (45 loops, slow to optimize) is compiled at backend optimization level 0.
    """
    fns: dict[tuple[str, str, int], Callable[[jax.Array], Any]] = {}
    for case in CASES:
        if recursion:
            if case.single:
                fns["recursion", case.id, 1] = case.jopt(1)._emulate
            continue
        for every in EVERY if x64 else (1,):  # float32: every=1 is the long recursion
            schedule = case.jopt(every)
            fns["lr", case.id, every] = schedule
            if case in MOMENTUM:
                fns["momentum", case.id, every] = schedule.momentum
    options = {"xla_backend_optimization_level": 0} if recursion else None
    with jax.enable_x64(x64):
        counts = jnp.arange(STEPS + 1, dtype=jnp.int32)
        program = jax.jit(lambda c: {k: jax.vmap(f)(c) for k, f in fns.items()})
        values = program.lower(counts).compile(compiler_options=options)(counts)
        return {k: np.asarray(v) for k, v in values.items()}


@pytest.fixture(scope="module")
def oracle() -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    return {(c.id, every): _torch_run(c, every) for c in CASES for every in EVERY}


@pytest.fixture(scope="module")
def ours() -> dict[bool, dict[tuple[str, str, int], np.ndarray]]:
    return {x64: _jopt_run(x64) for x64 in (True, False)}


@pytest.fixture(scope="module")
def recursion() -> dict[tuple[str, str, int], np.ndarray]:
    return _jopt_run(x64=True, recursion=True)


def _assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Relative error <= rtol, with a floor of rtol * max|expected| for values near 0.

    Schedules that reach 0 (cosine to eta_min=0, polynomial) cannot be compared
    relatively there: 1e-18 against 0 is a perfect match in absolute terms.
    """
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize(("case", "every"), CASE_PARAMS)
def test_matches_torch_float64(case: Case, every: int, oracle: Any, ours: Any) -> None:
    values = ours[True]["lr", case.id, every]
    assert values.dtype == np.float64
    _assert_close(values, oracle[case.id, every][0], rtol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_torch_float32(case: Case, oracle: Any, ours: Any) -> None:
    values = ours[False]["lr", case.id, 1]
    assert values.dtype == np.float32
    _assert_close(values, oracle[case.id, 1][0], rtol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c.single], ids=lambda c: c.id)
def test_recursion_matches_torch(case: Case, oracle: Any, recursion: Any) -> None:
    _assert_close(recursion["recursion", case.id, 1], oracle[case.id, 1][0], rtol=1e-10)


@pytest.mark.parametrize(("case", "every"), MOMENTUM_PARAMS)
def test_momentum_matches_torch(case: Case, every: int, oracle: Any, ours: Any) -> None:
    _assert_close(ours[True]["momentum", case.id, every], oracle[case.id, every][1], rtol=1e-10)
    if every == 1:
        _assert_close(ours[False]["momentum", case.id, 1], oracle[case.id, 1][1], rtol=1e-5)


def test_no_momentum_without_cycle_momentum() -> None:
    assert J.CyclicLR(LR, 0.01, 0.1, cycle_momentum=False).momentum is None
    assert J.OneCycleLR(LR, 1.0, total_steps=10, cycle_momentum=False).momentum is None


def test_jit_traced_count_compiles_once(ours: Any) -> None:
    schedules = {case.id: case.jopt(3) for case in CASES}
    traces = 0

    @jax.jit
    def at(count: jax.Array) -> dict[str, jax.Array]:
        nonlocal traces
        traces += 1
        return {name: schedule(count) for name, schedule in schedules.items()}

    for count in (7, 299):
        for name, value in at(jnp.int32(count)).items():
            assert value.shape == ()
            expected = ours[True]["lr", name, 3][count]
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7)
    assert traces == 1


def test_python_ints_arrays_and_negative_counts() -> None:
    schedule = J.MultiplicativeLR(1.0, lambda epoch: 0.5, every=2)
    assert float(schedule(5)) == 0.25
    np.testing.assert_array_equal(schedule(jnp.arange(6)), [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    np.testing.assert_array_equal(schedule(jnp.array([[0, 4], [2, 6]])), [[1, 0.25], [0.5, 0.125]])
    assert float(schedule(-3)) == 1.0


def test_dtype_follows_x64() -> None:
    schedule = J.CosineAnnealingLR(LR, T_max=10)
    assert schedule(3).dtype == jnp.float32
    with jax.enable_x64(True):
        assert schedule(3).dtype == jnp.float64


def test_onecycle_holds_the_end_past_total_steps() -> None:
    schedule = J.OneCycleLR(LR, max_lr=1.0, total_steps=100, anneal_strategy="linear")
    lrs = jax.jit(schedule)(jnp.array([99, 101, 1000, 10**6]))
    np.testing.assert_array_equal(lrs, [np.float32(1.0 / 25.0 / 1e4)] * 4)
    momenta = jax.jit(schedule.momentum)(jnp.array([99, 101, 10**6]))
    np.testing.assert_array_equal(momenta, [np.float32(0.95)] * 3)


def test_usable_as_a_learning_rate() -> None:
    tx = jopt.scale_by_learning_rate(J.StepLR(1.0, step_size=1, gamma=0.5, every=2))
    state = tx.init(None)
    update = jax.jit(tx.update)
    steps = []
    for _ in range(5):
        delta, state = update(jnp.ones(1), state)
        steps.append(float(-delta[0]))
    assert steps == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_repr_shows_the_arguments_that_differ_from_the_defaults() -> None:
    assert repr(J.StepLR(0.1, 30)) == "StepLR(lr=0.1, step_size=30)"
    assert (
        repr(J.CosineAnnealingLR(0.1, T_max=100, every=390))
        == "CosineAnnealingLR(lr=0.1, T_max=100, every=390)"
    )
    assert repr(J.ChainedScheduler([J.ExponentialLR(0.1, 0.9)])) == (
        "ChainedScheduler(schedulers=(ExponentialLR(lr=0.1, gamma=0.9),))"
    )


def _bad(name: str, *args: Any, match: str, label: str = "", **kwargs: Any) -> Any:
    make = lambda: getattr(J, name)(*args, **kwargs)
    return pytest.param(make, match, id=f"{label}{match}")


def _step(lr: float = LR, **kwargs: Any) -> Any:
    return J.StepLR(lr, 10, **kwargs)


INVALID = [
    _bad("StepLR", -0.1, 10, match="lr=-0.1 must be >= 0"),
    _bad("StepLR", LR, 0, match="step_size=0 must be >= 1"),
    _bad("StepLR", LR, 2.5, match="step_size=2.5 must be an integer >= 1"),
    _bad("StepLR", LR, 10, gamma=0.0, match="gamma=0.0 must be > 0"),
    _bad("StepLR", LR, 10, last_epoch=5, match="last_epoch=5 must be -1"),
    *[
        _bad(name, LR, *args, every=0, match="every=0 must be >= 1", label=f"{name}: ")
        for name, args in [("StepLR", (10,)), ("CosineAnnealingLR", (10,)), ("LambdaLR", (abs,))]
    ],
    _bad("MultiStepLR", LR, [5, -1], match=r"milestones\[1\]=-1 must be >= 0"),
    _bad("ConstantLR", LR, factor=0.0, match=r"factor=0.0 must be in \(0, 1\]"),
    _bad("ConstantLR", LR, factor=1.5, match=r"factor=1.5 must be in \(0, 1\]"),
    _bad("ConstantLR", LR, total_iters=0, match="total_iters=0 must be >= 1"),
    _bad("LinearLR", LR, start_factor=0.0, match=r"start_factor=0.0 must be in \(0, 1\]"),
    _bad("LinearLR", LR, end_factor=1.5, match=r"end_factor=1.5 must be in \[0, 1\]"),
    _bad("LinearLR", LR, total_iters=0, match="total_iters=0 must be >= 1"),
    _bad("ExponentialLR", LR, -0.5, match="gamma=-0.5 must be > 0"),
    _bad("PolynomialLR", LR, total_iters=0, match="total_iters=0 must be >= 1"),
    _bad("PolynomialLR", LR, power=-1.0, match="power=-1.0 must be >= 0"),
    _bad("CosineAnnealingLR", LR, 0, match="T_max=0 must be >= 1"),
    _bad("CosineAnnealingLR", LR, 10, eta_min=-0.1, match="eta_min=-0.1 must be >= 0"),
    _bad("CosineAnnealingWarmRestarts", LR, 0, match="T_0=0 must be >= 1"),
    _bad("CosineAnnealingWarmRestarts", LR, 5, T_mult=0, match="T_mult=0 must be >= 1"),
    _bad("CosineAnnealingWarmRestarts", LR, 5, T_mult=1.5, match="T_mult=1.5 must be an integer"),
    _bad("LambdaLR", LR, [abs, abs], match="lr_lambda is a list of 2"),
    _bad("CyclicLR", LR, 0.01, 0.1, mode="sine", match="mode='sine' must be one of"),
    _bad("CyclicLR", LR, 0.01, 0.1, scale_mode="epoch", match="scale_mode='epoch' must be"),
    _bad("CyclicLR", LR, 0.01, 0.1, step_size_up=0, match="step_size_up=0 must be >= 1"),
    _bad("CyclicLR", LR, 0.01, 0.1, step_size_down=-1, match="step_size_down=-1 must be >= 0"),
    _bad("CyclicLR", LR, 0.01, [0.1, 0.2], match=r"max_lr=\[0.1, 0.2\] must be a number"),
    _bad("CyclicLR", LR, -0.01, 0.1, match="base_lr=-0.01 must be >= 0"),
    _bad("CyclicLR", LR, 0.01, 0.1, base_momentum=1.0,
         match=r"base_momentum=1.0 must be in \[0, 1\)"),
    _bad("CyclicLR", LR, 0.01, 0.1, gamma=0.0, match="gamma=0.0 must be > 0"),
    _bad("OneCycleLR", LR, 1.0, match="give total_steps, or epochs and steps_per_epoch"),
    _bad("OneCycleLR", LR, 1.0, epochs=10, match="give total_steps, or epochs and steps_per"),
    _bad("OneCycleLR", LR, 1.0, total_steps=0, match="total_steps=0 must be >= 1"),
    _bad("OneCycleLR", LR, 1.0, epochs=0, steps_per_epoch=5, match="epochs=0 must be >= 1"),
    _bad("OneCycleLR", LR, 1.0, 100, pct_start=1.5, match=r"pct_start=1.5 must be in \[0, 1\]"),
    _bad("OneCycleLR", LR, 1.0, 100, anneal_strategy="exp",
         match="anneal_strategy='exp' must be 'cos' or 'linear'"),
    _bad("OneCycleLR", LR, 1.0, 100, div_factor=0.0, match="div_factor=0.0 must be > 0"),
    _bad("OneCycleLR", LR, 1.0, 10, pct_start=0.1,
         match=r"pct_start=0.1 with total_steps=10 gives phases ending at steps \[0.0, 9\]"),
    _bad("OneCycleLR", LR, 1.0, 10, pct_start=0.6, three_phase=True,
         match=r"pct_start=0.6 with total_steps=10 and three_phase gives phases ending"),
    _bad("SequentialLR", [], [], match="SequentialLR needs at least one scheduler"),
    _bad("SequentialLR", [_step(), _step()], [5, 6],
         match=r"len\(milestones\)=2 must be len\(schedulers\) - 1 = 1"),
    _bad("SequentialLR", [_step()] * 3, [20, 10], match=r"milestones=\[20, 10\] must be strictly"),
    _bad("SequentialLR", [_step()] * 2, [0], match=r"milestones\[0\]=0 must be >= 1"),
    _bad("SequentialLR", [_step(), _step(every=3)], [5],
         match=r"schedulers\[1\].every=3 must be 1"),
    _bad("SequentialLR", [_step(), _step(0.2)], [5],
         match=r"schedulers\[1\].lr=0.2 must equal schedulers\[0\].lr=0.1"),
    _bad("SequentialLR", [_step(), J.ChainedScheduler([_step()])], [5],
         match=r"schedulers\[1\] is a ChainedScheduler, which SequentialLR does not take"),
    _bad("SequentialLR", [J.OneCycleLR(LR, 1.0, 10), _step()], [5],
         match=r"schedulers\[0\] is a OneCycleLR"),
    _bad("SequentialLR", [_step(), _step()], [5], last_epoch=3, match="last_epoch=3 must be -1"),
    _bad("ChainedScheduler", [], match="ChainedScheduler needs at least one scheduler"),
    _bad("ChainedScheduler", [_step(), _step(0.2)],
         match=r"schedulers\[1\].lr=0.2 must equal schedulers\[0\].lr=0.1"),
    _bad("ChainedScheduler", [_step(), J.SequentialLR([_step()], [])],
         match="ChainedScheduler does not take a SequentialLR"),
    _bad("ChainedScheduler", [_step()], every=0, match="every=0 must be >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), INVALID)
def test_invalid_arguments_raise_naming_them(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: J.LambdaLR(LR, 0.5),
        lambda: J.MultiplicativeLR(LR, "0.5"),
        lambda: J.CyclicLR(LR, 0.01, 0.1, scale_fn=2.0),
        lambda: J.SequentialLR([lambda count: 0.1], []),
        lambda: J.ChainedScheduler([jopt.schedules.constant_schedule(0.1)]),
    ],
    ids=["LambdaLR", "MultiplicativeLR", "CyclicLR.scale_fn", "SequentialLR", "ChainedScheduler"],
)
def test_wrong_types_raise_type_error(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError):
        make()
