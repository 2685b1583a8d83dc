"""jopt.state_dict / jopt.load_state_dict: keys, bit-for-bit resumption, every error."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.torch import lr_scheduler
from tests.oracles import decaying
from tests.problems import PROBLEMS

MLP = PROBLEMS[2]
PARAMS = {"layers": [{"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}], "head": jnp.ones(4)}


def only_weights(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jopt.tree.key_path_str(path).endswith("w"), params
    )


# Both doors, fused and unfused state, schedules, chains (with an optax member), groups.
OPTIMIZERS = {
    "adam": lambda: jopt.adam(0.02),
    "adam[schedule]": lambda: jopt.adam(decaying(0.02)),
    "sgd": lambda: jopt.sgd(0.05),
    "adamw[mask]": lambda: jopt.adamw(0.02, weight_decay=0.1, mask=only_weights),
    "fuse[max_leaf_size=8]": lambda: jopt.chain(
        jopt.fuse(jopt.scale_by_adam(), max_leaf_size=8), jopt.scale_by_learning_rate(0.01)
    ),
    "torch.SGD[momentum,dampening]": lambda: jopt.torch.SGD(lr=0.05, momentum=0.9, dampening=0.1),
    "torch.AdamW[StepLR]": lambda: jopt.torch.AdamW(lr=lr_scheduler.StepLR(0.02, step_size=30)),
    "chain[optax.clip,torch.RMSprop]": lambda: jopt.chain(
        optax.clip_by_global_norm(1.0), jopt.torch.RMSprop(lr=0.001, momentum=0.5)
    ),
    "partition": lambda: jopt.partition(
        {"head": jopt.torch.Adam(lr=0.01), "body": jopt.torch.SGD(lr=0.05, momentum=0.9)},
        lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: (
                "head" if jopt.tree.key_path_str(path).startswith("layers/1") else "body"
            ),
            params,
        ),
    ),
    "torch.ReduceLROnPlateau": lambda: lr_scheduler.ReduceLROnPlateau(
        jopt.torch.SGD(lr=0.05, momentum=0.9), patience=2, threshold=0.05
    ),
}


def _stepper(tx):
    def step(params, state):
        loss, grads = jax.value_and_grad(MLP.loss)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return jopt.apply_updates(params, updates), state

    return jax.jit(step)


def _run(step, params, state, steps):
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def _assert_identical(a, b):
    a_flat, a_def = jax.tree_util.tree_flatten_with_path(a)
    b_leaves, b_def = jax.tree.flatten(b)
    assert a_def == b_def
    for (path, x), y in zip(a_flat, b_leaves, strict=True):
        where = jopt.tree.key_path_str(path)
        assert np.asarray(x).dtype == np.asarray(y).dtype, f"dtype differs at {where}"
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"at {where}")


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_round_trip_through_savez_continues_the_trajectory_bit_for_bit(make, tmp_path):
    tx = make()
    init = jax.jit(tx.init)  # tx.init, compiled once instead of op by op
    params = MLP.params("float32")
    step = _stepper(tx)
    straight = _run(step, params, init(params), 100)

    halfway, state = _run(step, params, init(params), 50)
    np.savez(tmp_path / "opt.npz", **jopt.state_dict(state))
    compiled = step._cache_size()
    restored = jopt.load_state_dict(init(params), np.load(tmp_path / "opt.npz"))
    _assert_identical(restored, state)
    resumed = _run(step, halfway, restored, 50)

    _assert_identical(resumed, straight)
    assert step._cache_size() == compiled, "the restored state recompiled the step"


def test_keys_are_paths_with_fused_buffers_by_parameter_and_hyperparameters_by_name():
    d = jopt.state_dict(jopt.torch.Adam(lr=0.1, weight_decay=0.01).init(PARAMS))
    inner = "inner_state/inner_state/1"  # chain: [weight decay, moments, lr]
    assert {k: v.shape for k, v in d.items()} == {
        "count": (),
        "values/betas": (2, 2),
        "values/eps": (2,),
        "values/lr": (2,),
        "values/weight_decay": (2,),
        f"{inner}/count": (),
        f"{inner}/mu/head": (4,),
        f"{inner}/mu/layers/0/b": (3,),
        f"{inner}/mu/layers/0/w": (2, 3),
        f"{inner}/nu/head": (4,),
        f"{inner}/nu/layers/0/b": (3,),
        f"{inner}/nu/layers/0/w": (2, 3),
    }
    assert all(type(v) is np.ndarray for v in d.values())
    np.testing.assert_array_equal(d["values/betas"][0], np.float32([0.9, 0.999]))
    # an optax state: its own field names
    assert list(jopt.state_dict(optax.adam(0.1).init({"w": jnp.zeros(2)}))) == [
        "0/count",
        "0/mu/w",
        "0/nu/w",
    ]


def test_keys_and_values_do_not_depend_on_how_leaves_are_packed():
    grads = jax.tree.map(lambda x: x + 0.5, PARAMS)

    def run(max_leaf_size):
        tx = jopt.fuse(jopt.scale_by_adam(), max_leaf_size=max_leaf_size)
        _, state = jax.jit(tx.update)(grads, jax.jit(tx.init)(PARAMS))
        return tx, state

    _, packed_state = run(1 << 16)  # all leaves in one buffer
    own_tx, own_state = run(0)  # a buffer per leaf
    assert set(packed_state.inner_state.mu) == {"<packed float32>"}
    packed, own = jopt.state_dict(packed_state), jopt.state_dict(own_state)
    moments = [
        f"inner_state/{m}/{p}" for m in ("mu", "nu") for p in ("head", "layers/0/b", "layers/0/w")
    ]
    assert list(packed) == list(own) == ["inner_state/count", *moments]
    for key in packed:
        np.testing.assert_array_equal(packed[key], own[key], err_msg=key)
    # a state saved with one packing loads into the other
    _assert_identical(jopt.load_state_dict(own_tx.init(PARAMS), packed), own_state)


def test_values_are_host_copies():
    state = jopt.sgd(0.1, momentum=0.9).init({"w": jnp.zeros(2)})
    d = jopt.state_dict(state)
    d["inner_state/inner_state/0/trace/w"][:] = 7.0  # writable, and not the state's buffer
    assert float(jnp.sum(state.inner_state.inner_state[0].trace["<packed float32>"])) == 0.0


def test_bfloat16_state_survives_savez(tmp_path):
    tx = jopt.adam(0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    init = jax.jit(tx.init)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, PARAMS), init(PARAMS), PARAMS)
    np.savez(tmp_path / "opt.npz", **jopt.state_dict(state))
    loaded = np.load(tmp_path / "opt.npz")
    assert loaded["inner_state/inner_state/0/mu/head"].dtype == np.dtype("V2")  # numpy's view
    _assert_identical(jopt.load_state_dict(init(PARAMS), loaded), state)


def test_an_abstract_template_from_eval_shape():
    tx = jopt.torch.SGD(lr=0.1, momentum=0.9)
    _, state = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    template = jax.eval_shape(tx.init, PARAMS)
    _assert_identical(jopt.load_state_dict(template, jopt.state_dict(state)), state)


def test_a_flax_nnx_model_state_as_params(tmp_path):
    from flax import nnx

    rng = np.random.default_rng(0)

    def normal(key, shape, dtype):  # numpy, not jax.random: no eager programs to compile
        return jnp.asarray(rng.normal(size=shape) * 0.5, dtype)

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(3, 8, kernel_init=normal, rngs=rngs)
            self.out = nnx.Linear(8, 1, kernel_init=normal, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    model = Model(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)

    def loss(p):
        return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

    tx = jopt.adamw(0.01)

    @jax.jit
    def step(p, state):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return jopt.apply_updates(p, updates), state

    init = jax.jit(tx.init)
    straight = _run(step, params, init(params), 20)
    halfway, state = _run(step, params, init(params), 10)
    d = jopt.state_dict(state)
    assert "inner_state/inner_state/0/mu/hidden/kernel/value" in d
    np.savez(tmp_path / "opt.npz", **d)
    restored = jopt.load_state_dict(init(params), np.load(tmp_path / "opt.npz"))
    _assert_identical(_run(step, halfway, restored, 10), straight)


def _message(*lines: str) -> str:
    count = f"{len(lines)} problem{'s' if len(lines) != 1 else ''}"
    body = "\n".join(f"  {line}" for line in lines)
    return "^" + re.escape(f"the state dict does not match the template ({count}):\n{body}") + "$"


def test_one_error_lists_missing_unexpected_and_mismatched_keys():
    tx = jopt.sgd(0.1, momentum=0.9)
    d = jopt.state_dict(tx.init(PARAMS))
    trace = "inner_state/inner_state/0/trace"
    del d[f"{trace}/head"]
    d["extra"] = np.zeros(3, np.float32)
    d[f"{trace}/layers/0/w"] = np.zeros((3, 2), np.float32)
    d["count"] = np.zeros((), np.float32)
    with pytest.raises(
        jopt.StateDictError,
        match=_message(
            f"missing '{trace}/head': expected float32[4]",
            "unexpected 'extra': float32[3]",
            "'count': expected int32[], got float32[]",
            f"'{trace}/layers/0/w': expected float32[2, 3], got float32[3, 2]",
        ),
    ) as info:
        jopt.load_state_dict(tx.init(PARAMS), d)
    assert isinstance(info.value, ValueError)
    assert info.value.missing_keys == [f"{trace}/head"]
    assert info.value.unexpected_keys == ["extra"]
    assert info.value.mismatched_keys == ["count", f"{trace}/layers/0/w"]


def test_hyperparameters_of_another_optimizer_are_refused():
    """Equal packed sizes (10): a reinterpretation would load b1 into betas[0], ..."""
    d = jopt.state_dict(jopt.adam(0.1).init(PARAMS))
    line = (
        "'values/*': hyperparameters ['b1', 'b2', 'eps', 'eps_root', 'learning_rate'] in the "
        "state dict, ['betas', 'eps', 'lr', 'weight_decay'] in the template (torch.Adam): the "
        "state dict was saved from a different optimizer"
    )
    with pytest.raises(jopt.StateDictError, match="\n  " + re.escape(line) + "\n") as info:
        jopt.load_state_dict(jopt.torch.Adam(lr=0.1, weight_decay=0.1).init(PARAMS), d)
    assert str(info.value).splitlines()[1] == "  " + line  # first, then the moments' keys


def test_same_shapes_under_other_names_are_one_problem():
    """jopt.sgd and jopt.torch.SGD states have equal shapes: only the names tell them apart."""
    d = jopt.state_dict(jopt.sgd(0.1).init(PARAMS))
    with pytest.raises(
        jopt.StateDictError,
        match=_message(
            "'values/*': hyperparameters ['learning_rate'] in the state dict, ['lr'] in the "
            "template (torch.SGD): the state dict was saved from a different optimizer"
        ),
    ):
        jopt.load_state_dict(jopt.torch.SGD(lr=0.1).init(PARAMS), d)


def test_a_hyperparameter_out_of_bounds_is_refused():
    d = jopt.state_dict(jopt.adam(0.1).init(PARAMS))
    d["values/learning_rate"] = np.float32([-1.0, 0.0])
    with pytest.raises(
        jopt.StateDictError,
        match=_message("'values/learning_rate': learning_rate=-1.0 must be >= 0 (adam)"),
    ):
        jopt.load_state_dict(jopt.adam(0.1).init(PARAMS), d)


def test_a_float64_state_does_not_load_into_float32():
    with jax.enable_x64(True):
        d = jopt.state_dict(jopt.sgd(0.1).init({"w": jnp.zeros(2)}))
    with pytest.raises(
        jopt.StateDictError,
        match=_message("'values/learning_rate': expected float32[2], got float64[2]"),
    ):
        jopt.load_state_dict(jopt.sgd(0.1).init({"w": jnp.zeros(2)}), d)


def test_not_strict_fills_missing_keys_and_reports_what_it_skipped():
    params = {"w": jnp.ones(2)}
    old = jopt.torch.SGD(lr=0.5, momentum=0.9)
    _, saved_state = old.update(params, old.init(params), params)
    d = {**jopt.state_dict(saved_state), "extra": np.zeros(1)}
    del d["inner_state/inner_state/0/trace/w"]
    template = old.init(params)
    state, skipped = jopt.load_state_dict(template, d, strict=False)
    assert skipped == jopt.IncompatibleKeys(["inner_state/inner_state/0/trace/w"], ["extra"])
    assert int(state.count) == 1  # loaded
    _assert_identical(
        state.inner_state.inner_state[0].trace, template.inner_state.inner_state[0].trace
    )

    # other hyperparameter names are only missing / unexpected, never reinterpreted
    state, skipped = jopt.load_state_dict(jopt.sgd(0.1).init(params), d, strict=False)
    assert skipped.missing_keys == ["values/learning_rate"]
    assert round(float(jopt.hyperparams(state)["learning_rate"]), 6) == 0.1

    # shapes are still checked
    d["count"] = np.zeros(2, np.int32)
    with pytest.raises(
        jopt.StateDictError, match=_message("'count': expected int32[], got int32[2]")
    ):
        jopt.load_state_dict(template, d, strict=False)


def test_not_strict_with_an_abstract_template_cannot_fill_missing_keys():
    tx = jopt.sgd(0.1)
    d = jopt.state_dict(tx.init(PARAMS))
    del d["count"]
    with pytest.raises(
        jopt.StateDictError, match=_message("missing 'count': an abstract template cannot fill it")
    ):
        jopt.load_state_dict(jax.eval_shape(tx.init, PARAMS), d, strict=False)


def test_bad_arguments():
    template = jopt.sgd(0.1).init(PARAMS)
    with pytest.raises(
        TypeError,
        match=r"^load_state_dict: state_dict must be a mapping from key to array, got list$",
    ):
        jopt.load_state_dict(template, [])
    clash = {"a/b": jnp.zeros(1), "a": {"b": jnp.zeros(1)}}
    message = (
        "state_dict: key paths ['inner_state/inner_state/0/trace/a/b'] occur twice (a dict key "
        "containing '/'?); rename the parameters so that their '/'-joined paths are unique"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        jopt.state_dict(jopt.sgd(0.1, momentum=0.9).init(clash))
