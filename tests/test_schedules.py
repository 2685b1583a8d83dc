"""jopt.schedules against the real optax 0.2.8, value by value over 320 steps.

Each case is a builder ``lib -> schedule`` run with ``lib = jopt.schedules`` and with
``lib = optax.schedules`` (same names, same arguments). All counts are evaluated in one
``jax.vmap`` call per schedule. The oracle runs under standard dtype promotion; under x64
it gets int64 counts, so that its ``count / steps`` divisions are float64 too.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jopt import schedules

STEPS = 320

Builder = Callable[[Any], Callable[[Any], Any]]


def _case(case_id: str, build: Builder) -> Any:
    return pytest.param(build, id=case_id)


def _same(name: str, *args: Any, **kwargs: Any) -> Any:
    """A case calling ``lib.<name>(*args, **kwargs)`` in both libraries."""
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return _case(f"{name}({','.join(shown)})", lambda lib: getattr(lib, name)(*args, **kwargs))


CASES = [
    _same("constant_schedule", 0.25),
    *[
        _same("polynomial_schedule", 1.0, 0.01, power, 100, transition_begin=begin)
        for power, begin in itertools.product([1, 2, 0.5], [0, 17])
    ],
    _same("polynomial_schedule", 1.0, 0.01, 2, 0),  # optax: constant init_value
    _same("polynomial_schedule", 1.0, 0.01, 2, -5),  # optax: constant init_value
    _same("linear_schedule", 0.0, 1.0, 50),
    _same("linear_schedule", 1.0, 0.1, 300, transition_begin=5),
    *[
        _same(
            "exponential_decay",
            0.5,
            transition_steps=steps,
            decay_rate=rate,
            transition_begin=begin,
            staircase=staircase,
            end_value=None if not bounded else (0.1 if rate < 1 else 1.0),
        )
        for steps, rate, begin, staircase, bounded in itertools.product(
            [7, 50], [0.9, 1.05], [0, 13], [False, True], [False, True]
        )
    ],
    _same("exponential_decay", 0.5, 0, 0.9),  # optax: constant init_value
    _same("exponential_decay", 0.5, 10, 0.0),  # optax: constant init_value
    *[
        _same("cosine_decay_schedule", 0.3, steps, alpha=alpha, exponent=exponent)
        for steps, alpha, exponent in itertools.product([100, 250], [0.0, 0.1], [1.0, 2.0])
    ],
    *[
        _same("warmup_cosine_decay_schedule", 0.0, 1.0, warmup, 200, end, exponent)
        for warmup, end, exponent in itertools.product([0, 20], [0.0, 0.05], [1.0, 1.5])
    ],
    _same("warmup_cosine_decay_schedule", 0.1, 0.0, 10, 100),
    _same("warmup_constant_schedule", 0.0, 0.5, 30),
    _same("warmup_constant_schedule", 0.1, 0.5, 0),  # optax: constant init_value
    *[
        _same(
            "warmup_exponential_decay_schedule",
            0.0,
            1.0,
            10,
            20,
            0.5,
            transition_begin=begin,
            staircase=staircase,
            end_value=end,
        )
        for begin, staircase, end in itertools.product([0, 7], [False, True], [None, 0.05])
    ],
    _same("piecewise_constant_schedule", 0.1),
    _same("piecewise_constant_schedule", 0.1, {}),
    _same("piecewise_constant_schedule", 0.1, {150: 0.1, 50: 0.5, 100: 2.0}),
    _same("piecewise_constant_schedule", 0.1, {0: 3.0, 200: 0.0}),
    *[
        _same("piecewise_interpolate_schedule", kind, 0.1, table)
        for kind, table in itertools.product(
            ["linear", "cosine"],
            [None, {}, {120: 0.1, 50: 0.5, 250: 3.0}, {0: 2.0, 100: 0.5}],
        )
    ],
    _same("linear_onecycle_schedule", 300, 0.5),
    _same("linear_onecycle_schedule", 250, 1.0, 0.2, 0.6, 10.0, 100.0),
    _same("cosine_onecycle_schedule", 300, 0.5),
    _same("cosine_onecycle_schedule", 250, 1.0, 0.45, 10.0, 1e3),
    _case(
        "sgdr_schedule",
        lambda lib: lib.sgdr_schedule(
            [
                dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100),
                dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=120,
                     end_value=0.01),
                dict(init_value=0.0, peak_value=0.3, warmup_steps=5, decay_steps=150,
                     exponent=2.0),
            ]
        ),
    ),
    _case(
        "join_schedules",
        lambda lib: lib.join_schedules(
            [
                lib.constant_schedule(0.1),
                lib.linear_schedule(0.1, 0.5, 50),
                lib.cosine_decay_schedule(0.5, 100),
            ],
            [30, 100],
        ),
    ),
]  # fmt: skip


def _values(schedule: Callable[[Any], Any], counts: jax.Array) -> np.ndarray:
    """The schedule at ``counts``, compiled as users run it: one jitted ``vmap``."""
    return np.asarray(jax.jit(jax.vmap(lambda c: jnp.asarray(schedule(c))))(counts))


def _table(lib: Any, x64: bool) -> dict[str, np.ndarray]:
    """Every case's values at counts 0..STEPS-1, from one compiled call per library.

    One program for all cases keeps the suite fast (compiling ~90 small programs costs
    more than running them). jopt runs as users run it, jitted. optax runs with XLA's
    algebraic simplifier off: the simplifier turns ``x / T`` into ``x * (1 / T)``, which
    then fuses into an FMA, so jitted optax gives ``polynomial_schedule(1.0, 0.01, 0.5,
    100)(250) == 0.010148`` instead of eager optax's 0.01 (jopt writes that formula so
    that it is exact either way). Under x64 the oracle gets int64 counts, so that its
    ``count / steps`` divisions are float64 too.
    """
    ids = [case.id for case in CASES]
    with jax.enable_x64(x64), jax.numpy_dtype_promotion("standard"):
        fns = [case.values[0](lib) for case in CASES]
        program = jax.jit(lambda c: [jax.vmap(lambda k, f=f: jnp.asarray(f(k)))(c) for f in fns])
        is_optax = lib is optax.schedules
        counts = jnp.arange(STEPS, dtype=jnp.int64 if x64 and is_optax else jnp.int32)
        options = (
            {"xla_disable_hlo_passes": "algsimp", "xla_backend_optimization_level": 0}
            if is_optax
            else None
        )
        values = program.lower(counts).compile(compiler_options=options)(counts)
        return {i: np.asarray(v) for i, v in zip(ids, values, strict=True)}


@pytest.fixture(scope="module")
def tables() -> dict[tuple[str, bool], dict[str, np.ndarray]]:
    return {
        (side, x64): _table(schedules if side == "jopt" else optax.schedules, x64)
        for side in ("jopt", "optax")
        for x64 in (True, False)
    }


def _assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Relative error <= rtol, with a floor of rtol * max|expected| for values near 0.

    Schedules that decay to 0 (cosine with alpha=0, polynomial) cannot be compared
    relatively at the bottom: 1e-18 against 0 is a perfect match in absolute terms.
    """
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("build", CASES)
def test_matches_optax_float64(build: Builder, tables: Any, request: pytest.FixtureRequest) -> None:
    case_id = request.node.callspec.id
    ours, theirs = tables["jopt", True][case_id], tables["optax", True][case_id]
    assert ours.dtype == np.float64
    _assert_close(ours, np.broadcast_to(theirs, ours.shape), rtol=1e-10)


@pytest.mark.parametrize("build", CASES)
def test_matches_optax_float32(build: Builder, tables: Any, request: pytest.FixtureRequest) -> None:
    case_id = request.node.callspec.id
    ours, theirs = tables["jopt", False][case_id], tables["optax", False][case_id]
    assert ours.dtype == np.float32
    _assert_close(ours, np.broadcast_to(theirs, ours.shape), rtol=1e-5)


def test_jit_traced_count_compiles_once(tables: Any) -> None:
    fns = [case.values[0](schedules) for case in CASES]
    traces = 0

    @jax.jit
    def at(count: jax.Array) -> list[jax.Array]:
        nonlocal traces
        traces += 1
        return [f(count) for f in fns]

    for count in (5, 250):
        for case, value in zip(CASES, at(jnp.int32(count)), strict=True):
            assert value.shape == ()
            np.testing.assert_allclose(value, tables["jopt", False][case.id][count], rtol=1e-6)
    assert traces == 1


def test_python_int_and_traced_counts_agree() -> None:
    schedule = schedules.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
    for count in (0, 10, 55, 100, 1000):
        np.testing.assert_allclose(schedule(count), jax.jit(schedule)(jnp.int32(count)), rtol=1e-6)


def _bad(name: str, *args: Any, match: str, **kwargs: Any) -> Any:
    return pytest.param(lambda: getattr(schedules, name)(*args, **kwargs), match, id=match)


INVALID = [
    _bad("polynomial_schedule", 1.0, 0.0, 1, 10, -1, match="transition_begin=-1 must be >= 0"),
    _bad("polynomial_schedule", 1.0, 0.0, 1, 2.5, match="transition_steps=2.5 must be an integer"),
    _bad(
        "linear_schedule",
        1.0,
        0.0,
        10,
        transition_begin=-3,
        match="transition_begin=-3 must be >= 0",
    ),
    _bad("exponential_decay", 1.0, 10, -0.5, match="decay_rate=-0.5 must be >= 0"),
    _bad(
        "exponential_decay",
        1.0,
        10,
        0.5,
        transition_begin=-2,
        match="transition_begin=-2 must be >= 0",
    ),
    _bad(
        "exponential_decay",
        1.0,
        10,
        0.5,
        end_value=2.0,
        match=r"end_value=2.0 must be <= init_value=1.0 when decay_rate=0.5 < 1",
    ),
    _bad(
        "exponential_decay",
        1.0,
        10,
        2.0,
        end_value=0.5,
        match=r"end_value=0.5 must be >= init_value=1.0 when decay_rate=2.0 > 1",
    ),
    _bad("cosine_decay_schedule", 1.0, 0, match="decay_steps=0 must be > 0"),
    _bad("cosine_decay_schedule", 1.0, -5, match="decay_steps=-5 must be > 0"),
    _bad("cosine_decay_schedule", 1.0, 10, exponent=0.0, match="exponent=0.0 must be > 0"),
    _bad(
        "warmup_cosine_decay_schedule",
        0.0,
        1.0,
        10,
        10,
        match="decay_steps=10 must be > warmup_steps=10",
    ),
    _bad("warmup_cosine_decay_schedule", 0.0, 1.0, -1, 10, match="warmup_steps=-1 must be >= 0"),
    _bad("warmup_constant_schedule", 0.0, 1.0, -1, match="warmup_steps=-1 must be >= 0"),
    _bad(
        "warmup_exponential_decay_schedule",
        0.0,
        1.0,
        -2,
        10,
        0.5,
        match="warmup_steps=-2 must be >= 0",
    ),
    _bad(
        "piecewise_constant_schedule",
        1.0,
        {-1: 0.5},
        match="boundaries_and_scales key -1 must be an integer step >= 0",
    ),
    _bad(
        "piecewise_constant_schedule",
        1.0,
        {10: -0.5},
        match=r"boundaries_and_scales\[10\]=-0.5 must be >= 0",
    ),
    _bad(
        "piecewise_interpolate_schedule",
        "linear",
        1.0,
        {2.5: 0.5},
        match="boundaries_and_scales key 2.5 must be an integer step >= 0",
    ),
    _bad(
        "piecewise_interpolate_schedule",
        "quadratic",
        1.0,
        match="interpolate_type='quadratic' must be 'linear' or 'cosine'",
    ),
    _bad("linear_onecycle_schedule", 0, 1.0, match="transition_steps=0 must be > 0"),
    _bad(
        "linear_onecycle_schedule",
        100,
        1.0,
        pct_start=1.5,
        match=r"pct_start=1.5 must be in \[0, 1\]",
    ),
    _bad(
        "linear_onecycle_schedule",
        100,
        1.0,
        0.5,
        0.5,
        match=r"int\(pct_start \* transition_steps\)=50 < "
        r"int\(pct_final \* transition_steps\)=50 < transition_steps=100",
    ),
    _bad("linear_onecycle_schedule", 100, 1.0, div_factor=0.0, match="div_factor=0.0 must be > 0"),
    _bad(
        "cosine_onecycle_schedule",
        100,
        1.0,
        pct_start=1.0,
        match=r"int\(pct_start \* transition_steps\)=100 < transition_steps=100",
    ),
    _bad(
        "cosine_onecycle_schedule",
        100,
        1.0,
        final_div_factor=-1.0,
        match="final_div_factor=-1.0 must be > 0",
    ),
    _bad("sgdr_schedule", [], match="cosine_kwargs must hold at least one"),
    _bad("join_schedules", [], [], match="schedules must hold at least one schedule"),
    _bad(
        "join_schedules",
        [schedules.constant_schedule(1.0)] * 2,
        [1, 2],
        match=r"len\(boundaries\)=2 must be len\(schedules\) - 1 = 1",
    ),
    _bad(
        "join_schedules",
        [schedules.constant_schedule(1.0)] * 3,
        [10, 5],
        match=r"boundaries=\[10, 5\] must be strictly increasing",
    ),
    _bad(
        "join_schedules",
        [schedules.constant_schedule(1.0)] * 2,
        [-1],
        match=r"boundaries\[0\]=-1 must be >= 0",
    ),
    _bad("plot", schedules.constant_schedule(1.0), 0, match="steps=0 must be >= 1"),
]


@pytest.mark.parametrize(("make", "message"), INVALID)
def test_invalid_arguments_raise_naming_them(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: schedules.piecewise_constant_schedule(1.0, [(10, 0.5)]),
        lambda: schedules.join_schedules([1.0], []),
        lambda: schedules.sgdr_schedule([[("decay_steps", 10)]]),
    ],
    ids=["boundaries-not-a-dict", "schedule-not-callable", "cycle-not-a-dict"],
)
def test_wrong_types_raise_type_error(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError):
        make()


def test_integral_float_step_counts_are_accepted() -> None:
    np.testing.assert_array_equal(
        schedules.cosine_decay_schedule(1.0, 1e2)(30), schedules.cosine_decay_schedule(1.0, 100)(30)
    )


def test_array_values_set_the_dtype() -> None:
    with jax.enable_x64(True):
        schedule = schedules.linear_schedule(jnp.float32(1.0), 0.0, 10)
        assert schedule(3).dtype == jnp.float32
        assert schedules.linear_schedule(1.0, 0.0, 10)(3).dtype == jnp.float64


def test_traced_values_are_not_validated_and_work() -> None:
    @jax.jit
    def at(init: jax.Array, count: jax.Array) -> jax.Array:
        return schedules.exponential_decay(init, 10, 0.5, end_value=init / 4)(count)

    np.testing.assert_allclose(at(jnp.float32(2.0), jnp.int32(10)), 1.0)
    np.testing.assert_allclose(at(jnp.float32(2.0), jnp.int32(100)), 0.5)


def test_join_accepts_optax_pieces() -> None:
    with jax.numpy_dtype_promotion("standard"):
        joined = schedules.join_schedules(
            [optax.constant_schedule(1.0), schedules.linear_schedule(1.0, 0.0, 10)], [5]
        )
        expected = [1.0] * 6 + [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1] + [0.0] * 5
        np.testing.assert_allclose(_values(joined, jnp.arange(20)), expected, atol=1e-6)


@pytest.fixture
def agg() -> Any:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_draws_the_values(agg: Any) -> None:
    schedule = schedules.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
    ax = schedules.plot(schedule, 120, label="warmup cosine")
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(120))
    np.testing.assert_allclose(line.get_ydata(), _values(schedule, jnp.arange(120)), rtol=1e-6)
    assert ax.get_legend().get_texts()[0].get_text() == "warmup cosine"


def test_plot_reuses_the_axes_and_takes_constants(agg: Any) -> None:
    _, ax = agg.subplots()
    assert schedules.plot(schedules.constant_schedule(0.5), 5, ax=ax) is ax
    assert schedules.plot(optax.constant_schedule(0.25), 5, ax=ax) is ax
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), [0.25] * 5)
    assert ax.get_legend() is None


def test_plot_without_matplotlib_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install jopt\[examples\]"):
        schedules.plot(schedules.constant_schedule(1.0), 10)
