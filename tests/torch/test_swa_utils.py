"""The torch door to weight averaging: torch.optim.swa_utils.AveragedModel, EMA and SWA."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jopt
from jopt.torch import swa_utils
from tests.oracles import TOLERANCE, max_relative_error
from tests.problems import PROBLEMS
from tests.test_wrapping import run_steps

AVERAGES = {
    "ema_multi": (
        dict(multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9)),
        dict(multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9)),
    ),
    "swa_multi": (
        dict(multi_avg_fn=swa_utils.get_swa_multi_avg_fn()),
        dict(multi_avg_fn=torch.optim.swa_utils.get_swa_multi_avg_fn()),
    ),
    "default": (dict(), dict()),
    "ema_avg_fn": (
        dict(avg_fn=swa_utils.get_ema_avg_fn(0.8)),
        dict(avg_fn=torch.optim.swa_utils.get_ema_avg_fn(0.8)),
    ),
    "ema_multi_buffers": (
        dict(multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.6), use_buffers=True),
        dict(multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.6), use_buffers=True),
    ),
}


def _torch_averages(parameter_sequence, dtype, options):
    """torch's AveragedModel, ``update_parameters`` after each parameter set of the sequence."""
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    first = jax.tree.leaves(parameter_sequence[0])
    model = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.tensor(x, dtype=torch_dtype)) for x in first]
    )
    averaged = torch.optim.swa_utils.AveragedModel(model, **options)
    treedef = jax.tree.structure(parameter_sequence[0])
    out = []
    for params in parameter_sequence:
        with torch.no_grad():
            for p, x in zip(model.parameters(), jax.tree.leaves(params), strict=True):
                p.copy_(torch.tensor(x))
        averaged.update_parameters(model)
        leaves = [p.detach().numpy().copy() for p in averaged.module.parameters()]
        out.append(jax.tree.unflatten(treedef, leaves))
    return out


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(name, "float32") for name in AVERAGES] + [("ema_multi", "float64"), ("swa_multi", "float64")],
)
def test_averaged_model_matches_torch(name, dtype):
    """100 steps of an optimizer; torch averages the same parameter sequence every step."""
    ours_options, theirs_options = AVERAGES[name]
    problem = PROBLEMS[1]
    with jax.enable_x64(dtype == "float64"):
        tx = swa_utils.AveragedModel(jopt.torch.SGD(lr=0.0005), **ours_options)
        run, _ = run_steps(tx, problem, dtype, read=jopt.averaged_params)
    theirs = _torch_averages([p for p, _ in run], dtype, theirs_options)
    ours = [a for _, a in run]
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}: {error:.3g} at {where}"
    for a, b in zip(jax.tree.leaves(ours[0]), jax.tree.leaves(run[0][0]), strict=True):
        np.testing.assert_array_equal(a, b)  # the first update copies


def test_averaged_model_starts_from_the_initial_params_and_copies_the_first_update():
    tx = swa_utils.AveragedModel(jopt.sgd(1.0), multi_avg_fn=swa_utils.get_ema_multi_avg_fn())
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    np.testing.assert_array_equal(jopt.averaged_params(state)["w"], [1.0, 2.0])
    _, state = tx.update({"w": jnp.array([-4.0, 4.0])}, state, params)
    np.testing.assert_array_equal(jopt.averaged_params(state)["w"], [5.0, -2.0])
    assert int(state.n_averaged) == 1


def test_torch_door_signatures():
    ours = inspect.signature(swa_utils.AveragedModel).parameters
    theirs = inspect.signature(torch.optim.swa_utils.AveragedModel.__init__).parameters
    assert list(ours)[1:] == list(theirs)[2:]  # (self, model) -> (optimizer)
    for arg in list(ours)[1:]:
        assert ours[arg].default == theirs[arg].default, arg
    for name in [
        "get_ema_multi_avg_fn",
        "get_ema_avg_fn",
        "get_swa_multi_avg_fn",
        "get_swa_avg_fn",
    ]:
        ours_fn = inspect.signature(getattr(swa_utils, name)).parameters
        theirs_fn = inspect.signature(getattr(torch.optim.swa_utils, name)).parameters
        assert [(a, p.default) for a, p in ours_fn.items()] == [
            (a, p.default) for a, p in theirs_fn.items()
        ], name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: swa_utils.get_ema_multi_avg_fn(-0.1), "decay=-0.1 must be in [0, 1]"),
        (lambda: swa_utils.get_ema_avg_fn(2.0), "decay=2.0 must be in [0, 1]"),
        (
            lambda: swa_utils.AveragedModel(
                jopt.sgd(0.1),
                avg_fn=swa_utils.get_swa_avg_fn(),
                multi_avg_fn=swa_utils.get_swa_multi_avg_fn(),
            ),
            "AveragedModel: pass avg_fn or multi_avg_fn, not both",
        ),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[") + "$"):
        make()
