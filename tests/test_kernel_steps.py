"""Plans (``jopt.kernel_steps``): the errors a misused plan gives. What plans compute is
checked through ``jopt.step`` in tests/test_stepping.py."""

from __future__ import annotations

import re

import jax.numpy as jnp
import pytest

import jopt
from jopt.kernel_steps import adagrad_plan, adam_plan, momentum_plan, rmsprop_plan


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
    with pytest.raises(ValueError, match="both nesterov and amsgrad"):
        adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, None, nesterov=True, amsgrad=True)


def test_an_amsgrad_plan_carries_the_three_states_and_rebuilds_their_state() -> None:
    state = jopt.scale_by_amsgrad().init(jnp.zeros(2)), ()
    torch_form = dict(amsgrad=True, max_before_bias_correction=True)
    plan = adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, 0.01, **torch_form)(state, None)
    assert plan.kernel.name == "amsgradw_raw" and plan.kernel.states == ("mu", "nu", "nu_max")
    new = plan.rebuild([jnp.ones(2), 2 * jnp.ones(2), 3 * jnp.ones(2)])[0]
    assert isinstance(new, jopt.transforms.adaptive.ScaleByAmsgradState)
    assert int(new.count) == 1 and new.nu_max.tolist() == [3.0, 3.0]
    with pytest.raises(TypeError, match="holds no ScaleByAmsgradState"):
        adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, None, **torch_form)(
            (jopt.scale_by_adam().init(jnp.zeros(2)), ()), None
        )
    optax_form = adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, None, amsgrad=True)
    assert optax_form(state, None).kernel.name == "amsgrad"
    with pytest.raises(ValueError, match="optax's AMSGrad kernel has no weight decay"):
        adam_plan(0.9, 0.999, 1e-8, 0.0, 0.1, 0.01, amsgrad=True)


def test_an_adagrad_plan_with_a_learning_rate_factor_steps_by_the_product() -> None:
    # torch's lr_decay: scale_by_schedule after the learning rate, at its count
    rss = jopt.scale_by_rss(eps_in_sqrt=False).init(jnp.zeros(2))
    counted = jopt.scale_by_schedule(lambda n: n).init(jnp.zeros(2))._replace(count=jnp.int32(3))
    plan = adagrad_plan(0.1, 1e-10, False, lr_factor=lambda n: 1 / (1 + n.astype(float) / 2))(
        (rss, (), counted), None
    )
    assert plan.coefficients.tolist()[-1] == pytest.approx(-0.1 / 2.5)
    rebuilt = plan.rebuild([jnp.ones(2)])
    assert int(rebuilt[2].count) == 4 and rebuilt[0].sum_of_squares.tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="holds no ScaleByScheduleState"):
        adagrad_plan(0.1, 1e-10, False, lr_factor=jnp.sqrt)((rss, ()), None)
