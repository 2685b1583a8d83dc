"""Tests for jopt.examples.mnist.train and .config: the training cycle and what drives it.

Runs train on a small synthetic dataset (tests/examples/mnist/synthetic.py) with a
small hidden layer; `test_real_mnist_one_epoch` alone trains on the real MNIST.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
import jopt.optimizers
import jopt.torch.optim
from jopt.examples.mnist import Config, ConfigError, train
from jopt.examples.mnist import model as mlp
from jopt.examples.mnist.config import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_schedule,
    default_lr,
    fit,
    optimizer_arguments,
)
from jopt.examples.mnist.report import Silent
from tests.examples.mnist.synthetic import synthetic_mnist

HIDDEN = (32,)


@pytest.fixture(scope="module")
def data():
    return synthetic_mnist(n_train=500, n_test=100)


@pytest.fixture(scope="module")
def adam_run(data, tmp_path_factory):
    metrics = tmp_path_factory.mktemp("metrics") / "run.jsonl"
    config = Config(epochs=2, batch_size=32, hidden=HIDDEN, metrics=str(metrics))
    return train(config, data=data, reporter=Silent()), metrics


def assert_trees_equal(a, b):
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        np.testing.assert_array_equal(
            np.asarray(x), np.asarray(y), err_msg=jopt.tree.key_path_str(path)
        )


# --- the training cycle -----------------------------------------------------------------


def test_train_learns_and_records_every_epoch(adam_run):
    history, _ = adam_run
    assert [r.epoch for r in history.epochs] == [1, 2]
    assert [r.step for r in history.epochs] == [16, 32]  # ceil(500 / 32) steps per epoch
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.test_accuracy > 0.9
    assert all(r.learning_rate == pytest.approx(1e-3) for r in history.epochs)
    steps = [s for s, _ in history.curve]
    assert steps == sorted(steps) and steps[-1] == 32
    assert all(math.isfinite(v) for _, v in history.curve)
    assert history.model()(jnp.zeros((1, 784))).shape == (1, 10)
    assert "test accuracy" in history.summary() and "wall time" in history.summary()


def test_metrics_file_has_one_json_line_per_epoch(adam_run):
    history, path = adam_run
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    wanted = {"step", "epoch", "train_loss", "test_loss", "test_accuracy", "learning_rate"}
    assert wanted | {"wall_time"} <= set(lines[0])
    assert lines[1]["test_accuracy"] == history.test_accuracy
    assert lines[0]["wall_time"] <= lines[1]["wall_time"]


def _reference_run(config, data):
    """The cycle written plainly, one jitted step per batch, no padding, no chunks."""
    n = len(data.train_labels)
    steps = -(-n // config.batch_size)
    apply, make = mlp.initializer(config.hidden)
    root = jax.random.key(config.seed)
    params = jax.jit(make)(jax.random.fold_in(root, 0))
    data_key = jax.random.fold_in(root, 1)
    tx = build_optimizer(config, steps)
    opt_state = tx.init(params)

    def loss_fn(params, images, labels):
        return mlp.cross_entropy(apply(params, images), labels)

    @jax.jit
    def step(params, opt_state, images, labels):
        grads = jax.grad(loss_fn)(params, images, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jopt.apply_updates(params, updates), opt_state

    images, labels = data.train_images, data.train_labels.astype(np.int32)
    for epoch in range(config.epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))
        for b in range(steps):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            params, opt_state = step(params, opt_state, images[index], labels[index])
    return params


def test_the_compiled_loop_equals_the_plain_cycle():
    # 100 examples in batches of 32: the last batch of each epoch has 4, padded to 32
    # with zero weights in the compiled loop, and short in the reference.
    subset = synthetic_mnist(n_train=100, n_test=20, seed=1)
    config = Config(
        optimizer="torch.SGD", lr=0.05, momentum=0.9, epochs=2, batch_size=32, hidden=HIDDEN
    )
    history = train(config, data=subset, reporter=Silent())
    expected = _reference_run(config, subset)
    for path, got in jax.tree_util.tree_leaves_with_path(history.params):
        want = expected
        for key in path:
            want = want[key.key]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=str(path))


def test_a_run_is_reproducible_from_its_seed(adam_run, data):
    history, _ = adam_run
    again = train(history.config.replace(metrics=None), data=data, reporter=Silent())
    assert_trees_equal(again.params, history.params)
    assert [r.train_loss for r in again.epochs] == [r.train_loss for r in history.epochs]


def test_a_transformation_passed_as_tx_replaces_the_configs(adam_run, data):
    history, _ = adam_run
    config = history.config.replace(metrics=None, optimizer="sgd", lr=0.5)  # not used
    custom = train(config, data=data, reporter=Silent(), tx=jopt.adam(1e-3))
    assert_trees_equal(custom.params, history.params)


def test_tx_must_be_a_gradient_transformation(data):
    with pytest.raises(TypeError, match="tx must be a GradientTransformation, got function"):
        train(Config(epochs=1, hidden=HIDDEN), data=data, reporter=Silent(), tx=jopt.adam)


def test_zero_epochs_only_evaluates(data):
    history = train(Config(epochs=0, hidden=HIDDEN), data=data, reporter=Silent())
    assert history.epochs == [] and history.curve == []
    assert "no epoch" in history.summary()


def test_one_cycle_schedule_reaches_the_optimizer(data):
    config = Config(schedule="one-cycle", lr=0.01, epochs=2, batch_size=50, hidden=HIDDEN)
    history = train(config, data=data, reporter=Silent())
    schedule = build_schedule(config, 0.01, updates_per_epoch=10, total_updates=20)
    for record in history.epochs:
        assert record.learning_rate == pytest.approx(float(schedule(record.step)), rel=1e-6)
    assert history.epochs[-1].learning_rate < 1e-5


@pytest.fixture(scope="module")
def bf16_run(data):
    config = Config(precision="bf16", epochs=2, batch_size=32, hidden=HIDDEN)
    return train(config, data=data, reporter=Silent())


def test_bf16_trains_with_float32_master_weights(bf16_run):
    assert bf16_run.test_accuracy > 0.9
    assert {p.dtype for p in jax.tree.leaves(bf16_run.params)} == {jnp.dtype(jnp.float32)}


def test_dynamic_loss_scaling_changes_nothing_when_nothing_overflows(bf16_run, data):
    # The scale is a power of two: scaling the loss and unscaling the gradients is exact.
    scaled = train(bf16_run.config.replace(loss_scale=True), data=data, reporter=Silent())
    assert float(jopt.loss_scale(scaled.opt_state)) == 65536.0
    assert int(jopt.skipped_steps(scaled.opt_state)) == 0
    for a, b in zip(jax.tree.leaves(bf16_run.params), jax.tree.leaves(scaled.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_accumulating_two_half_batches_equals_one_full_batch(data):
    # 512 examples: no short batch, so the mean of two means of 16 is the mean of 32.
    even = synthetic_mnist(n_train=512, n_test=64, seed=2)
    full = train(Config(batch_size=32, epochs=1, hidden=HIDDEN), data=even, reporter=Silent())
    halves = train(
        Config(batch_size=16, accumulate=2, epochs=1, hidden=HIDDEN), data=even, reporter=Silent()
    )
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(halves.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_clip_norm_clips(data):
    base = Config(optimizer="sgd", lr=0.1, epochs=1, batch_size=50, hidden=HIDDEN)
    plain = train(base, data=data, reporter=Silent())
    tight = train(base.replace(clip_norm=1e-3), data=data, reporter=Silent())
    pairs = zip(jax.tree.leaves(plain.params), jax.tree.leaves(tight.params), strict=True)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs) > 1e-3
    # A norm above the gradient's changes nothing.
    grads = {"w": jnp.array([3.0, 4.0])}
    for clip_norm, expected in ((5.0, [-0.3, -0.4]), (1.0, [-0.06, -0.08])):
        tx = build_optimizer(base.replace(clip_norm=clip_norm), steps_per_epoch=10)
        updates, _ = tx.update(grads, tx.init({"w": jnp.zeros(2)}))
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)


DATA_PARALLEL = textwrap.dedent(
    """
    import jax, numpy as np
    from jopt.examples.mnist import Config, train
    from jopt.examples.mnist.report import Silent
    from tests.examples.mnist.synthetic import synthetic_mnist

    assert len(jax.devices()) == 8
    data = synthetic_mnist(n_train=300, n_test=70)
    config = Config(epochs=2, batch_size=32, hidden=(32,))
    one = train(config, data=data, reporter=Silent())
    eight = train(config.replace(devices=8), data=data, reporter=Silent())
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params), strict=True):
        assert len(b.sharding.device_set) == 8 and b.sharding.is_fully_replicated
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert abs(one.test_accuracy - eight.test_accuracy) < 0.02
    print("OK", eight.devices)
    """
)


def test_data_parallel_over_eight_devices_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK 8" in done.stdout


def test_more_devices_than_there_are_is_an_error_naming_the_flag(data):
    wanted = len(jax.devices()) + 1
    with pytest.raises(ConfigError, match=r"devices=.*xla_force_host_platform_device_count"):
        train(Config(devices=wanted, batch_size=wanted), data=data, reporter=Silent())


# --- the configuration ------------------------------------------------------------------


def test_the_optimizers_are_those_of_the_library():
    expected = set(jopt.optimizers.__all__) | {f"torch.{n}" for n in jopt.torch.optim.__all__}
    assert set(OPTIMIZERS) == expected
    assert {"adam", "sgd", "adamw", "rmsprop", "adagrad", "adadelta", "torch.Adam"} <= expected


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_and_steps_with_its_default_lr(name):
    tx = build_optimizer(Config(optimizer=name), steps_per_epoch=10)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((p["w"] - 0.5) ** 2) + jnp.sum(p["b"] ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    new, state = step(params, state)
    assert float(jnp.sum((new["w"] - 0.5) ** 2)) < float(jnp.sum((params["w"] - 0.5) ** 2))
    assert dict(jopt.hyperparams(state)).keys() & {"learning_rate", "lr"}
    assert float(
        jopt.hyperparams(state).get("lr", jopt.hyperparams(state).get("learning_rate"))
    ) == (pytest.approx(default_lr(name)))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (Config(optimizer="adam", betas=(0.8, 0.9)), {"learning_rate": 1e-3, "b1": 0.8, "b2": 0.9}),
        (Config(optimizer="torch.Adam", betas=(0.8, 0.9)), {"lr": 1e-3, "betas": (0.8, 0.9)}),
        (
            Config(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True),
            {"learning_rate": 0.2, "momentum": 0.9, "nesterov": True},
        ),
        (
            Config(optimizer="torch.RMSprop", eps=1e-6, options={"centered": True, "alpha": 0.9}),
            {"lr": 0.01, "eps": 1e-6, "centered": True, "alpha": 0.9},
        ),
        (
            Config(optimizer="adamw", weight_decay=0.05),
            {"learning_rate": 1e-3, "weight_decay": 0.05},
        ),
    ],
)
def test_flags_map_to_each_doors_argument_names(config, expected):
    assert optimizer_arguments(config) == expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (Config(optimizer="adam", momentum=0.9), "momentum=0.9: adam has no argument momentum"),
        (Config(optimizer="torch.SGD", betas=(0.9, 0.99)), "torch.SGD has no argument betas"),
        (Config(optimizer="adam", weight_decay=0.1), "adam has no argument weight_decay"),
        (Config(optimizer="sgd", options={"centred": True}), "sgd has no argument centred"),
        (Config(options={"learning_rate": 0.1}), "give the learning rate as lr"),
    ],
)
def test_flags_an_optimizer_has_no_argument_for_are_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        optimizer_arguments(config)


def test_fit_leaves_out_what_an_optimizer_does_not_take():
    config, dropped = fit(Config(momentum=0.9, weight_decay=0.1, nesterov=True), "adamw")
    assert (config.optimizer, config.momentum, config.nesterov) == ("adamw", None, True)
    assert config.weight_decay == 0.1
    assert dropped == ["momentum"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size=0: must be an integer >= 1"),
        ({"epochs": -1}, "epochs=-1: must be an integer >= 0"),
        ({"hidden": (128, 0)}, r"hidden=\(128, 0\): every width must be an integer >= 1"),
        ({"optimizer": "adamm"}, "unknown optimizer; choose from adadelta, adagrad, adam, adamw"),
        ({"schedule": "linear"}, "unknown schedule; choose from constant, step, cosine"),
        ({"precision": "fp16"}, "choose from fp32, bf16"),
        ({"lr": -0.1}, r"lr=-0.1: must be a number >= 0"),
        ({"betas": (0.9, 1.0)}, r"each must be a number in \[0, 1\)"),
        ({"accumulate": 0}, "accumulate=0: must be an integer >= 1"),
        ({"clip_norm": 0.0}, r"clip_norm=0.0: must be a number > 0"),
        ({"resume": True}, "needs checkpoint_dir"),
        ({"devices": 3, "batch_size": 64}, "batch_size=64: must be a multiple of devices=3"),
        ({"warmup": 1.0}, r"warmup=1.0: must be a number >= 0 and < 1"),
    ],
)
def test_bad_settings_are_errors_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**changes)


def test_config_round_trips_through_json():
    config = Config(
        optimizer="torch.Adam", betas=(0.8, 0.9), hidden=(64, 32), options={"amsgrad": True}
    )
    assert Config.from_json(json.loads(json.dumps(config.to_json()))) == config


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_start_and_end_where_documented(schedule):
    config = Config(schedule=schedule, step_size=1, gamma=0.5)
    fn = build_schedule(config, 0.01, updates_per_epoch=100, total_updates=500)
    values = [float(fn(t)) if callable(fn) else fn for t in (0, 99, 100, 250, 499)]
    if schedule == "constant":
        assert values == [0.01] * 5
    elif schedule == "step":
        assert values == pytest.approx([0.01, 0.01, 0.005, 0.0025, 0.01 * 0.5**4])
    elif schedule == "cosine":
        assert values[0] == pytest.approx(0.01) and values[-1] < 1e-6
    elif schedule == "warmup-cosine":
        assert values[0] == 0.0 and max(values) <= 0.01 and values[-1] < 1e-6
    else:  # one-cycle: from lr / 25 up to lr at 25% of the run, then down
        assert values[0] == pytest.approx(0.01 / 25) and values[-1] < 1e-6
        assert float(fn(125)) == pytest.approx(0.01)


# --- the real data ----------------------------------------------------------------------


def test_real_mnist_one_epoch():
    """Trains the default model for one epoch on the real MNIST (cache or package index)."""
    history = train(Config(epochs=1), reporter=Silent())
    assert history.epochs[0].step == 938
    assert history.test_accuracy > 0.95
