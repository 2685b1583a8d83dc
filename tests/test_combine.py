"""Combinators: parameter groups, masks and freezing against optax 0.2.8 and torch param groups."""

from __future__ import annotations

import collections
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jopt
from tests.oracles import (
    DECAY_RATE,
    TOLERANCE,
    decaying,
    max_relative_error,
    run_jax,
    run_optax,
    run_torch,
    standard_promotion,
)
from tests.problems import PROBLEMS, Problem

# Paths of the problems: quadratic a/0, a/1; rosenbrock xy/0, xy/1/y;
# mlp layers/{0,1}/{b,w}. Every problem has a "body" and a "head"; the mlp has biases.
GROUPS = jopt.labels_by_path({"**/b": "no_decay", "*/1/**": "head"}, default="body")


def head_mask(params):
    return jax.tree.map(lambda label: label == "head", GROUPS(params))


def decay_mask(params):
    return jax.tree.map(lambda label: label != "no_decay", GROUPS(params))


def even_prefix(params):
    """A prefix of the params: one bool per element of the top-level list."""
    return {key: [i % 2 == 0 for i in range(len(value))] for key, value in params.items()}


def parity(make, problem, dtype, lr=0.01, strict=True):
    """Runs ``make(jopt, lr)`` and ``make(optax, lr)`` and returns the error and where.

    ``strict=False`` runs ours under standard promotion too (it holds optax members).
    """
    lr = lr * problem.lr_scale
    with jax.enable_x64(dtype == "float64"):
        ours = run_jax(make(jopt, lr), problem, dtype, strict=strict)
        with standard_promotion():
            reference = make(optax, lr)
        theirs = run_optax(reference, problem, dtype)
    return max_relative_error(ours, theirs)


# -- parity with optax ----------------------------------------------------------------

PARTITIONS = {
    # four groups, one of them unused (optax allows it, so do we)
    "sgd|adam-schedule|adamw|unused": lambda lib, lr: lib.partition(
        {
            "body": lib.sgd(lr, momentum=0.9),
            "head": lib.adam(decaying(2 * lr)),
            "no_decay": lib.adamw(2 * lr, weight_decay=0.1),
            "unused": lib.rmsprop(lr),
        },
        GROUPS,
    ),
    "frozen|nesterov|rmsprop": lambda lib, lr: lib.partition(
        {
            "body": lib.set_to_zero(),
            "head": lib.sgd(lr, momentum=0.9, nesterov=True),
            "no_decay": lib.rmsprop(lr / 10, momentum=0.5),
        },
        GROUPS,
    ),
    "prefix-labels": lambda lib, lr: lib.partition(
        {"even": lib.adam(2 * lr), "odd": lib.sgd(lr, momentum=0.9)},
        lambda p: jax.tree.map(lambda even: "even" if even else "odd", even_prefix(p)),
    ),
    "optax-inside-jopt": lambda lib, lr: lib.partition(
        {"body": optax.adam(2 * lr), "head": lib.sgd(lr), "no_decay": optax.sgd(lr)}, GROUPS
    ),
}

MASKS = {
    "masked-adam": lambda lib, lr: lib.chain(
        lib.masked(lib.scale_by_adam(), head_mask), lib.scale_by_learning_rate(lr)
    ),
    "masked-decay+freeze": lambda lib, lr: lib.chain(
        lib.masked(lib.add_decayed_weights(0.1), decay_mask),
        lib.sgd(lr, momentum=0.9),
        lib.freeze(head_mask),
    ),
    "masked-prefix": lambda lib, lr: lib.chain(
        lib.masked(lib.scale_by_adam(b1=0.8), even_prefix), lib.scale_by_learning_rate(lr)
    ),
}

# (name, problem, dtype): each combinator on the problem whose tree exercises it (the mlp
# has leaves in every group; rosenbrock's prefix covers a dict inside a list), in both dtypes.
PROBLEM = {p.name: p for p in PROBLEMS}
PARTITION_CASES = [
    ("sgd|adam-schedule|adamw|unused", "mlp", "float32"),
    ("sgd|adam-schedule|adamw|unused", "mlp", "float64"),
    ("sgd|adam-schedule|adamw|unused", "rosenbrock", "float32"),
    ("frozen|nesterov|rmsprop", "quadratic", "float64"),
    ("prefix-labels", "rosenbrock", "float32"),
    ("optax-inside-jopt", "mlp", "float32"),
]
MASK_CASES = [
    ("masked-adam", "mlp", "float64"),
    ("masked-adam", "quadratic", "float32"),
    ("masked-decay+freeze", "mlp", "float32"),
    ("masked-prefix", "rosenbrock", "float32"),
]


@pytest.mark.parametrize(("name", "problem", "dtype"), PARTITION_CASES)
def test_partition_matches_optax(name, problem, dtype):
    strict = name != "optax-inside-jopt"
    error, where = parity(PARTITIONS[name], PROBLEM[problem], dtype, strict=strict)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}: {error:.3g} at {where}"


@pytest.mark.parametrize(("name", "problem", "dtype"), MASK_CASES)
def test_masks_match_optax(name, problem, dtype):
    error, where = parity(MASKS[name], PROBLEM[problem], dtype)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}: {error:.3g} at {where}"


def test_frozen_and_unselected_leaves():
    params = {"body": jnp.ones(2), "head": jnp.ones(2)}
    grads = {"body": jnp.full(2, 3.0), "head": jnp.full(2, 3.0)}
    tx = jopt.partition(
        {"train": jopt.sgd(0.1), "frozen": jopt.set_to_zero()}, {"body": "frozen", "head": "train"}
    )
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["body"], 0.0)
    np.testing.assert_allclose(updates["head"], -0.3)
    tx = jopt.masked(jopt.scale(2.0), {"body": False, "head": True})
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["body"], 3.0)  # passed through unchanged
    np.testing.assert_array_equal(updates["head"], 6.0)


# -- torch param groups -----------------------------------------------------------------

TORCH_LABELS = jopt.labels_by_path({"**/b": "second", "*/1/**": "second"}, default="first")

# name -> (torch class, defaults, per-group overrides, scheduled)
TORCH_GROUPS = {
    "SGD-lr-and-no-decay": (
        "SGD",
        dict(lr=0.01, momentum=0.9),
        {"first": dict(lr=0.1), "second": dict(weight_decay=0.0)},
        False,
    ),
    "SGD-nesterov-decay": (
        "SGD",
        dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
        {"first": dict(), "second": dict(lr=0.05, weight_decay=0.0)},
        False,
    ),
    "SGD-scheduled": (
        "SGD",
        dict(lr=0.01, momentum=0.9, dampening=0.1),
        {"first": dict(lr=0.1), "second": dict(weight_decay=0.01)},
        True,
    ),
    "Adam-groups": (
        "Adam",
        dict(lr=0.02),
        {"first": dict(weight_decay=0.01), "second": dict(lr=0.005, betas=(0.8, 0.99))},
        False,
    ),
}


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("SGD-lr-and-no-decay", "float32"),
        ("SGD-lr-and-no-decay", "float64"),
        ("SGD-nesterov-decay", "float64"),
        ("SGD-scheduled", "float32"),
        ("Adam-groups", "float32"),
        ("Adam-groups", "float64"),
    ],
)
def test_partition_matches_torch_param_groups(name, dtype):
    cls, defaults, groups, scheduled = TORCH_GROUPS[name]
    problem = PROBLEMS[2]  # the mlp: weights and biases
    labels = jax.tree.leaves(TORCH_LABELS(problem.params("float32")))  # same in float64

    def make_torch(tensors):
        param_groups = [
            {"params": [t for t, label in zip(tensors, labels, strict=True) if label == group]}
            | overrides
            for group, overrides in groups.items()
        ]
        return getattr(torch.optim, cls)(param_groups, **defaults)

    def make_jopt():
        transforms = {}
        for group, overrides in groups.items():
            options = defaults | overrides
            if scheduled:
                options["lr"] = decaying(options["lr"])
            transforms[group] = getattr(jopt.torch, cls)(**options)
        return jopt.partition(transforms, TORCH_LABELS)

    make_scheduler = None
    if scheduled:
        make_scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda epoch: DECAY_RATE**epoch
        )
    with jax.enable_x64(dtype == "float64"):
        ours = run_jax(make_jopt(), problem, dtype)
        theirs = run_torch(make_torch, problem, dtype, make_scheduler=make_scheduler)
    error, where = max_relative_error(ours, theirs)
    assert error <= TOLERANCE[jnp.dtype(dtype)], f"{name}: {error:.3g} at {where}"


# -- jit ----------------------------------------------------------------------------------

JITTED = {
    "partition-in-chain": lambda: jopt.chain(
        jopt.scale(1.0), PARTITIONS["sgd|adam-schedule|adamw|unused"](jopt, 0.01)
    ),
    "masked": lambda: MASKS["masked-decay+freeze"](jopt, 0.01),
}


@pytest.mark.parametrize("name", list(JITTED))
def test_jit_does_not_recompile(name):
    """Two jitted steps, with hyperparameters set by group in between: one trace."""
    problem = PROBLEMS[2]
    tx = JITTED[name]()
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(jax.grad(problem.loss)(params), state, params)
        return jopt.apply_updates(params, updates), state

    params = problem.params("float32")
    initial = tx.init(params)
    params, state = step(params, initial)
    if name.startswith("partition"):
        state = jopt.set_hyperparams(state, {"body/learning_rate": 0.5})
        assert float(jopt.hyperparams(state)["body/learning_rate"]) == 0.5
    params, state = step(params, state)
    assert len(traces) == 1
    assert jax.tree.structure(state) == jax.tree.structure(initial)
    for path, new, old in zip(
        jopt.tree.paths(state), jax.tree.leaves(state), jax.tree.leaves(initial), strict=True
    ):
        assert (new.shape, new.dtype) == (old.shape, old.dtype), path


def test_inner_fuse_packs_only_its_group():
    params = PROBLEMS[2].params("float32")  # layers/0: w (4, 8), b (8); layers/1: w (8, 1), b (1)
    tx = jopt.partition(
        {"body": jopt.adam(0.1), "head": jopt.adam(0.1), "no_decay": jopt.sgd(0.1)}, GROUPS
    )
    state = tx.init(params)
    for group, size in (("body", 32), ("head", 8)):
        fused = state.inner_states[group].inner_state
        assert isinstance(fused, jopt.FusedState)
        assert [shape for _, shape, _ in fused.layout.buffers] == [(size,)], group
        assert fused.inner_state[0].mu["<packed float32>"].shape == (size,), group
    # the other groups' leaves are empty subtrees in the view, so the layout's tree has holes
    body_view = jax.tree.unflatten(state.inner_states["body"].inner_state.layout.treedef, [0])
    assert body_view == {"layers": [{"b": None, "w": 0}, {"b": None, "w": None}]}


# -- hyperparameters by group ---------------------------------------------------------------


def _floats(values):
    return {k: np.round(np.asarray(v, np.float64), 6).tolist() for k, v in values.items()}


TWO_GROUPS = {"body": jnp.ones(2), "head": jnp.ones(2)}
GRADS = {"body": jnp.ones(2), "head": jnp.ones(2)}


def _two_group_tx():
    return jopt.partition(
        {"body": jopt.sgd(0.1, momentum=0.9), "head": jopt.adam(0.01)},
        {"body": "body", "head": "head"},
    )


def test_hyperparams_qualifies_clashing_names_by_group():
    state = _two_group_tx().init(TWO_GROUPS)
    assert _floats(jopt.hyperparams(state)) == {
        "body/learning_rate": 0.1,
        "momentum": 0.9,
        "head/learning_rate": 0.01,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 0.0,
        "eps_root": 0.0,
    }


def test_set_hyperparams_sets_one_group_by_label_and_all_by_plain_name():
    tx = _two_group_tx()
    state = jopt.set_hyperparams(tx.init(TWO_GROUPS), {"head/learning_rate": 0.5})
    updates, _ = tx.update(GRADS, state, TWO_GROUPS)
    np.testing.assert_allclose(updates["head"], -0.5, rtol=1e-4)  # adam's first step: -lr
    np.testing.assert_allclose(updates["body"], -0.1, rtol=1e-6)
    state = jopt.set_hyperparams(state, learning_rate=0.2)
    assert _floats(jopt.hyperparams(state))["body/learning_rate"] == 0.2
    assert _floats(jopt.hyperparams(state))["head/learning_rate"] == 0.2
    updates, _ = tx.update(GRADS, state, TWO_GROUPS)
    np.testing.assert_allclose(updates["head"], -0.2, rtol=1e-4)
    np.testing.assert_allclose(updates["body"], -0.2, rtol=1e-6)


def test_torch_groups_qualify_every_shared_name():
    tx = jopt.partition(
        {"a": jopt.torch.SGD(lr=0.1, momentum=0.9), "b": jopt.torch.SGD(lr=0.01, momentum=0.9)},
        {"body": "a", "head": "b"},
    )
    state = jopt.set_hyperparams(tx.init(TWO_GROUPS), {"b/lr": 0.05})
    assert _floats(jopt.hyperparams(state)) == {
        "a/lr": 0.1,
        "a/momentum": 0.9,
        "a/dampening": 0.0,
        "a/weight_decay": 0.0,
        "b/lr": 0.05,
        "b/momentum": 0.9,
        "b/dampening": 0.0,
        "b/weight_decay": 0.0,
    }


def test_group_names_do_not_change_when_the_partition_is_wrapped():
    tx = jopt.chain(jopt.scale(1.0), _two_group_tx())
    state = tx.init(TWO_GROUPS)
    assert {"body/learning_rate", "head/learning_rate"} <= set(jopt.hyperparams(state))
    state = jopt.set_hyperparams(state, {"1/head/learning_rate": 0.3})  # the full path works too
    assert _floats(jopt.hyperparams(state))["head/learning_rate"] == 0.3
    # a clash between the partition and another chain member keeps the whole path
    tx = jopt.chain(_two_group_tx(), jopt.sgd(1.0))
    names = set(jopt.hyperparams(tx.init(TWO_GROUPS)))
    assert {"0/body/learning_rate", "0/head/learning_rate", "1/learning_rate"} <= names


def test_set_hyperparams_unknown_group():
    state = _two_group_tx().init(TWO_GROUPS)
    with pytest.raises(
        KeyError, match=re.escape("unknown hyperparameter(s) ['tail/learning_rate']")
    ):
        jopt.set_hyperparams(state, {"tail/learning_rate": 0.1})


# -- labels_by_path ------------------------------------------------------------------------


def _tree_at(path):
    """A one-leaf tree whose leaf sits at ``path`` (components as dict keys)."""
    tree = 0.0
    for part in reversed(path.split("/")):
        tree = {part: tree}
    return tree


GLOBS = [
    # (pattern, path, matches)
    ("head/**", "head", True),  # '**' at the end matches zero components
    ("head/**", "head/w", True),
    ("head/**", "head/a/b", True),
    ("head/**", "header/w", False),
    ("head/**", "x/head/w", False),
    ("**/bias", "bias", True),  # '**' at the start matches zero components
    ("**/bias", "a/b/bias", True),
    ("**/bias", "a/unbias", False),
    ("**/bias", "a/bias/x", False),
    ("a/**/w", "a/w", True),  # '**' in the middle
    ("a/**/w", "a/x/y/w", True),
    ("a/**/w", "b/a/w", False),
    ("a/**/**/w", "a/w", True),
    ("**", "a/b/c", True),
    ("layers/*/w", "layers/0/w", True),
    ("layers/*/w", "layers/0/sub/w", False),
    ("layers/*/w", "layers/w", False),
    ("*", "w", True),
    ("*", "a/w", False),
    ("a*b", "axyb", True),
    ("a*b", "a/b", False),
    ("layers/1?/w", "layers/12/w", True),
    ("layers/1?/w", "layers/1/w", False),
    ("block.0/w", "block.0/w", True),  # literal dot
    ("block.0/w", "blockX0/w", False),
    ("w[0]+", "w[0]+", True),  # regex characters are literal
    ("w[0]+", "w0", False),
]


@pytest.mark.parametrize(("pattern", "path", "matches"), GLOBS)
def test_glob_semantics(pattern, path, matches):
    labels = jopt.labels_by_path({pattern: "hit"}, default="miss")(_tree_at(path))
    assert jax.tree.leaves(labels) == ["hit" if matches else "miss"]


class Linear(NamedTuple):
    w: jax.Array
    b: jax.Array


def test_labels_for_indices_and_attributes_first_match_wins():
    params = {"layers": [Linear(jnp.ones(2), jnp.ones(1)), Linear(jnp.ones(2), jnp.ones(1))]}
    labels = jopt.labels_by_path({"**/b": "no_decay", "layers/1/**": "head"}, default="body")
    assert labels(params) == {"layers": [Linear("body", "no_decay"), Linear("head", "no_decay")]}


def test_labels_keep_none_subtrees():
    labels = jopt.labels_by_path({"a": "x"}, default="y")
    assert labels({"a": 1.0, "frozen": None}) == {"a": "x", "frozen": None}


def test_unmatched_path_without_default():
    labels = jopt.labels_by_path({"head/**": "head", "**/bias": "no_decay"})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "labels_by_path: no pattern matches 'body/w' and there is no default; "
            "patterns: ['head/**', '**/bias']"
        ),
    ):
        labels({"body": {"w": 0.0}, "head": {"w": 0.0}})


@pytest.mark.parametrize(
    ("patterns", "error", "message"),
    [
        ({"head/": "x"}, ValueError, "pattern 'head/' has an empty path component"),
        ({"/head": "x"}, ValueError, "pattern '/head' has an empty path component"),
        ({"a//b": "x"}, ValueError, "pattern 'a//b' has an empty path component"),
        ({"a**": "x"}, ValueError, "pattern 'a**': '**' must be a whole path component"),
        ({"**b/c": "x"}, ValueError, "pattern '**b/c': '**' must be a whole path component"),
        ({3: "x"}, TypeError, "labels_by_path: pattern 3 must be a str"),
        (["a"], TypeError, "patterns must be a mapping from glob pattern to label, got list"),
    ],
)
def test_bad_patterns_fail_at_construction(patterns, error, message):
    with pytest.raises(error, match=re.escape(message)):
        jopt.labels_by_path(patterns)


def test_labels_by_path_works_with_optax_partition():
    problem = PROBLEMS[2]
    with standard_promotion():
        tx = optax.partition(
            {"body": optax.adam(0.02), "head": optax.sgd(0.01), "no_decay": optax.set_to_zero()},
            GROUPS,
        )
    params = problem.params("float32")
    trajectory = run_optax(tx, problem, "float32", steps=5)
    np.testing.assert_array_equal(trajectory[-1]["layers"][0]["b"], params["layers"][0]["b"])
    assert not np.array_equal(trajectory[-1]["layers"][0]["w"], params["layers"][0]["w"])


# -- flax nnx --------------------------------------------------------------------------------


def _nnx_problem():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(4, 8, rngs=rngs)
            self.out = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(32, 1))), jnp.float32)
    model = MLP(nnx.Rngs(0))
    graphdef, _ = nnx.split(model, nnx.Param)

    def loss(params):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    return Problem("nnx-mlp", lambda dtype: nnx.state(model, nnx.Param), loss, lr_scale=1.0)


NNX_LABELS = jopt.labels_by_path({"**/bias": "no_decay"}, default="decay")


def test_flax_nnx_model_without_decay_on_biases():
    from flax import nnx

    problem = _nnx_problem()
    params = problem.params("float32")
    labels = NNX_LABELS(params)
    assert jax.tree.structure(labels) == jax.tree.structure(params)
    assert dict(zip(jopt.tree.paths(params), jax.tree.leaves(labels), strict=True)) == {
        "hidden/bias": "no_decay",
        "hidden/kernel": "decay",
        "out/bias": "no_decay",
        "out/kernel": "decay",
    }
    # the same labels for the pure-array state that nnx.Optimizer passes to update
    assert jax.tree.leaves(NNX_LABELS(nnx.as_pure(params))) == jax.tree.leaves(labels)

    def make(lib):
        return lib.partition(
            {"decay": lib.adamw(0.01, weight_decay=0.1), "no_decay": lib.adam(0.01)}, NNX_LABELS
        )

    ours = run_jax(make(jopt), problem, "float32")
    with standard_promotion():
        reference = make(optax)
    error, where = max_relative_error(ours, run_optax(reference, problem, "float32"))
    assert error <= 1e-5, f"{error:.3g} at {where}"

    # with a zero gradient only the kernels move (decay), the biases stay
    tx = make(jopt)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    for path, update in zip(jopt.tree.paths(updates), jax.tree.leaves(updates), strict=True):
        assert np.any(update != 0) == ("kernel" in path), path


# -- mask_compatible_extra_args --------------------------------------------------------------


def _add_tags(seen):
    """Adds the ``tags`` extra argument to the updates; records the paths of the tags."""

    def update(updates, state, params=None, *, tags=None, **extra):
        seen.append(jopt.tree.paths(tags))
        return jax.tree.map(lambda u, t: u + t, updates, tags), state

    return jopt.GradientTransformation(lambda params: jopt.EmptyState(), update)


TAGS = {"body": jnp.full(2, 10.0), "head": jnp.full(2, 20.0)}


@pytest.mark.parametrize("combinator", ["partition", "masked"])
def test_extra_args_shaped_like_the_updates_are_cut_to_the_group(combinator):
    seen = []
    if combinator == "partition":
        tx = jopt.partition(
            {"a": _add_tags(seen), "b": jopt.identity()},
            {"body": "b", "head": "a"},
            mask_compatible_extra_args=True,
        )
    else:
        tx = jopt.masked(
            _add_tags(seen), {"body": False, "head": True}, mask_compatible_extra_args=True
        )
    updates, _ = tx.update(GRADS, tx.init(TWO_GROUPS), TWO_GROUPS, tags=TAGS, loss=1.0)
    assert seen == [["head"]]
    np.testing.assert_array_equal(updates["body"], 1.0)
    np.testing.assert_array_equal(updates["head"], 21.0)


def test_extra_args_pass_whole_without_the_flag():
    seen = []
    tx = jopt.masked(_add_tags(seen), True)
    updates, _ = tx.update(GRADS, tx.init(TWO_GROUPS), TWO_GROUPS, tags=TAGS)
    assert seen == [["body", "head"]]
    np.testing.assert_array_equal(updates["head"], 21.0)


# -- errors ------------------------------------------------------------------------------------


def _sgd_groups(labels):
    return jopt.partition({"body": jopt.sgd(0.1), "head": jopt.sgd(0.1)}, labels)


PARAMS = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2), "b": jnp.ones(1)}}


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (
            {"body": {"w": "body"}, "head": {"w": "haed", "b": "head"}},
            ValueError,
            "partition: the parameter at 'head/w' has label 'haed', which has no "
            "transformation; transforms has ['body', 'head']",
        ),
        (
            {"body": "body", "head": "tail"},  # a prefix: names the first leaf under it
            ValueError,
            "partition: the parameter at 'head/b' has label 'tail', which has no transformation",
        ),
        (
            jopt.labels_by_path({"body/**": "body"}),
            ValueError,
            "labels_by_path: no pattern matches 'head/b' and there is no default; "
            "patterns: ['body/**']",
        ),
        (
            {"body": "body"},
            jopt.TreeMismatchError,
            "labels has no entry for 'head/b', which params has",
        ),
        (
            {"body": "body", "head": "head", "tail": "head"},
            jopt.TreeMismatchError,
            "labels has 'tail', which params does not have",
        ),
        (
            {"body": {"w": {"x": "body"}}, "head": "head"},
            jopt.TreeMismatchError,
            "labels has a subtree at 'body/w' (e.g. 'body/w/x') where params has a leaf",
        ),
        (
            {"body": collections.OrderedDict(w="body"), "head": "head"},
            jopt.TreeMismatchError,
            "labels and params differ in their containers",
        ),
        (
            {"body": np.array("body"), "head": "head"},
            TypeError,
            "partition: the label at 'body' must be hashable, got array('body'",
        ),
        (
            {"body": jnp.asarray(0), "head": "head"},
            TypeError,
            "partition: the label at 'body' must be hashable, got Array(0",
        ),
    ],
)
def test_partition_label_errors(labels, error, message):
    with pytest.raises(error, match=re.escape(message)):
        _sgd_groups(labels).init(PARAMS)


def test_partition_construction_and_state_errors():
    with pytest.raises(TypeError, match=re.escape("transforms must be a mapping from label")):
        jopt.partition([jopt.sgd(0.1)], {"w": 0})
    with pytest.raises(
        TypeError, match=re.escape("partition: transforms['head'] is a float, not a gradient")
    ):
        jopt.partition({"head": 0.1}, {"w": "head"})
    tx = _sgd_groups({"body": "body", "head": "head"})
    with pytest.raises(
        TypeError,
        match=re.escape("partition.update got a tuple, not the state its init made (groups"),
    ):
        tx.update(PARAMS, (), PARAMS)
    other = jopt.partition({"body": jopt.sgd(0.1)}, {"body": "body", "head": "body"})
    with pytest.raises(
        TypeError, match=re.escape("got a PartitionState with groups ['body'], not the state")
    ):
        tx.update(PARAMS, other.init(PARAMS), PARAMS)


def test_update_structure_errors_name_the_path():
    tx = _sgd_groups({"body": "body", "head": "head"})
    state = tx.init(PARAMS)
    grads = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
    with pytest.raises(
        jopt.TreeMismatchError, match=re.escape("params has 'head/b', which updates does not have")
    ):
        tx.update(grads, state, PARAMS)
    tx = jopt.masked(jopt.sgd(0.1), {"body": True, "head": {"w": True, "b": False}})
    with pytest.raises(
        jopt.TreeMismatchError, match=re.escape("mask has 'head/b', which updates does not have")
    ):
        tx.update(grads, tx.init(PARAMS), PARAMS)


def test_inner_result_of_the_wrong_structure_names_the_group():
    broken = jopt.GradientTransformation(
        lambda params: jopt.EmptyState(), lambda updates, state, params=None: ({"x": 1.0}, state)
    )
    tx = jopt.partition({"body": broken, "head": jopt.sgd(0.1)}, {"body": "body", "head": "head"})
    with pytest.raises(jopt.TreeMismatchError, match=re.escape("group 'body''s result")):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)


@pytest.mark.parametrize(
    ("mask", "error", "message"),
    [
        (
            {"body": True},
            jopt.TreeMismatchError,
            "mask has no entry for 'head/b', which params has",
        ),
        (
            {"body": {"w": True}, "head": {"w": True, "b": 1}},
            TypeError,
            "masked: the mask at 'head/b' must be a bool, got 1",
        ),
        (
            {"body": True, "head": jnp.ones(2, bool)},
            TypeError,
            "masked: the mask at 'head' must be a bool, got Array([ True,  True]",
        ),
        (
            lambda params: {"body": True, "head": {"w": True, "c": False}},
            jopt.TreeMismatchError,
            "mask has no entry for 'head/b', which params has",
        ),
    ],
)
def test_mask_errors_name_the_path(mask, error, message):
    with pytest.raises(error, match=re.escape(message)):
        jopt.masked(jopt.sgd(0.1), mask).init(PARAMS)


def test_traced_mask_is_rejected():
    tx = jopt.freeze(lambda params: jax.tree.map(lambda p: jnp.all(p > 0), params))
    with pytest.raises(
        TypeError, match=re.escape("masked: the mask at 'body/w' is a traced value")
    ):
        jax.jit(lambda p: tx.update(p, tx.init(p), p))(PARAMS)


def test_masked_state_and_inner_errors():
    with pytest.raises(TypeError, match=re.escape("masked: inner is a str, not a gradient")):
        jopt.masked("sgd", {"w": True})
    tx = jopt.masked(jopt.sgd(0.1), True)
    with pytest.raises(
        TypeError, match=re.escape("masked.update got a tuple, not the MaskedState its init made")
    ):
        tx.update(PARAMS, (), PARAMS)


@pytest.mark.parametrize("frozen", [True, False])
def test_freeze_with_one_bool(frozen):
    tx = jopt.freeze(frozen)
    updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    for path, update in zip(jopt.tree.paths(updates), jax.tree.leaves(updates), strict=True):
        np.testing.assert_array_equal(update, 0.0 if frozen else 1.0, err_msg=path)


def test_concrete_bool_arrays_are_masks():
    tx = jopt.masked(jopt.scale(2.0), {"body": jnp.asarray(True), "head": np.bool_(False)})
    updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["body"]["w"], 2.0)
    np.testing.assert_array_equal(updates["head"]["w"], 1.0)
