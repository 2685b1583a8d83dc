"""The torch door: every ``jopt.torch`` optimizer against the real torch.optim 2.13."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import torch

import jopt
from tests.oracles import (
    DECAY_RATE,
    TOLERANCE,
    decaying,
    max_relative_error,
    negated,
    run_jax,
    run_torch,
)
from tests.problems import ALL_THREE

# name -> option sets; "schedule" drives lr with an exponential decay in both libraries.
CASES = {
    "SGD": [
        dict(),
        dict(momentum=0.9),
        dict(momentum=0.9, dampening=0.5),
        dict(momentum=0.9, nesterov=True),
        dict(weight_decay=0.01, momentum=0.5),
        dict(maximize=True, momentum=0.9),
        dict(schedule=True, momentum=0.9),
    ],
    "Adam": [
        dict(),
        dict(betas=(0.8, 0.99), eps=1e-6),
        dict(weight_decay=0.01),
        dict(amsgrad=True),
        dict(maximize=True),
        dict(decoupled_weight_decay=True, weight_decay=0.1),
        dict(schedule=True, amsgrad=True),
    ],
    "AdamW": [
        dict(),
        dict(weight_decay=0.1),
        dict(amsgrad=True, betas=(0.85, 0.995)),
        dict(maximize=True),
        dict(schedule=True),
    ],
    "RMSprop": [
        dict(),
        dict(alpha=0.9, eps=1e-6),
        dict(centered=True),
        dict(momentum=0.9),
        dict(momentum=0.5, centered=True),
        dict(weight_decay=0.01),
        dict(maximize=True),
        dict(schedule=True, momentum=0.9),
    ],
    "Adagrad": [
        dict(),
        dict(lr_decay=0.01),
        dict(initial_accumulator_value=0.1, eps=1e-8),
        dict(weight_decay=0.01),
        dict(maximize=True),
        dict(schedule=True, lr_decay=0.05),
    ],
    "Adadelta": [
        dict(),
        dict(rho=0.95, eps=1e-5),
        dict(weight_decay=0.01),
        dict(maximize=True),
        dict(schedule=True),
    ],
}
LEARNING_RATES = {
    "SGD": 0.01,
    "Adam": 0.02,
    "AdamW": 0.02,
    "RMSprop": 0.001,
    "Adagrad": 0.03,
    "Adadelta": 1.0,
}


def _cases():
    for name, options in CASES.items():
        for i, opts in enumerate(options):
            label = ",".join(f"{k}={v}" for k, v in opts.items())
            yield pytest.param(name, opts, id=f"{name}[{label or 'default'}]-{i}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("problem", [ALL_THREE], ids=lambda p: p.name)
@pytest.mark.parametrize(("name", "options"), list(_cases()))
def test_matches_torch(name, options, problem, dtype):
    options = dict(options)
    scheduled = options.pop("schedule", False)
    lr = options.pop("lr", LEARNING_RATES[name]) * problem.lr_scale
    if options.get("maximize"):
        problem = negated(problem)
    make_scheduler = None
    if scheduled:
        make_scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda epoch: DECAY_RATE**epoch
        )
    with jax.enable_x64(dtype == "float64"):
        ours = run_jax(
            getattr(jopt.torch, name)(lr=decaying(lr) if scheduled else lr, **options),
            problem,
            dtype,
        )
        theirs = run_torch(
            lambda params: getattr(torch.optim, name)(params, lr=lr, **options),
            problem,
            dtype,
            make_scheduler=make_scheduler,
        )
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}{options}: {error:.3g} at {where}"


@pytest.mark.parametrize("name", list(CASES))
def test_defaults_match_torch(name):
    """Every constructor default is torch's (read from torch's own signature)."""
    import inspect

    ours = inspect.signature(getattr(jopt.torch, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
    for arg, parameter in theirs.items():
        if arg in ("self", "params"):
            continue
        assert arg in ours, f"{name} lacks torch's argument {arg}"
        assert ours[arg].default == parameter.default, f"{name}.{arg}"
        assert ours[arg].kind == parameter.kind, f"{name}.{arg} kind"
