"""Plans (``jopt.kernel_steps``): the errors a misused plan gives. What plans compute is
checked through ``jopt.step`` in tests/test_stepping.py."""

from __future__ import annotations

import re

import jax.numpy as jnp
import pytest

import jopt
from jopt.kernel_steps import adam_plan, momentum_plan, rmsprop_plan


def test_a_plan_names_the_state_it_did_not_find() -> None:
    adam_state = jopt.scale_by_adam().init(jnp.zeros(2)), ()
    with pytest.raises(TypeError, match=re.escape("momentum step got a tuple that holds no")):
        momentum_plan(0.1, 0.9)(adam_state, None)


def test_the_torch_doors_steps_before_the_rule_are_skipped() -> None:
    state = ((), (), jopt.trace(0.9).init(jnp.zeros(2)), ())  # maximize, decay, trace, lr
    plan = momentum_plan(0.1, 0.9, l2=0.01, maximize=True)(state, jnp.float32(0.5))
    assert plan.kernel.name == "momentum_l2"
    assert plan.coefficients.tolist()[:2] == [-0.5, pytest.approx(0.01)]
    rebuilt = plan.rebuild([plan.trees[0]])
    assert rebuilt[:2] == ((), ()) and rebuilt[3] == () and int(rebuilt[2].count) == 1


def test_coupled_decay_where_no_kernel_has_it_is_an_error() -> None:
    with pytest.raises(ValueError, match="rmsprop kernel has no variant with coupled"):
        rmsprop_plan(0.1, 0.9, 1e-8, eps_in_sqrt=True, l2=0.01)
    with pytest.raises(ValueError, match="exclude each other"):
        adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, 0.01, l2=0.01)
