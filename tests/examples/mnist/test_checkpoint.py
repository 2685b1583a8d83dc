"""Tests for jopt.examples.mnist.checkpoint and resuming a run.

`test_sigkill_mid_epoch_then_resume_is_bit_for_bit` runs the command line in
subprocesses on synthetic IDX files, kills one with SIGKILL in the middle of an epoch,
resumes it, and compares its final parameters with those of an uninterrupted run.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jopt
from jopt.examples.mnist import Config, ResumeError, restore, train
from jopt.examples.mnist.checkpoint import CheckpointError, Checkpoints
from jopt.examples.mnist.report import Silent
from tests.examples.mnist.synthetic import synthetic_mnist, write_mnist

HIDDEN = (32,)


class Recorder(Silent):
    """A reporter that keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def assert_trees_equal(a, b):
    pairs = zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True)
    for (path, x), y in pairs:
        np.testing.assert_array_equal(x, y, err_msg=jopt.tree.key_path_str(path))


def without_times(records):
    drop = {"epoch_time", "steps_per_second", "wall_time"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@pytest.fixture(scope="module")
def data():
    return synthetic_mnist(n_train=320, n_test=64)  # batch 32: 10 steps per epoch


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """An uninterrupted two-epoch run with a checkpoint after each epoch."""
    folder = tmp_path_factory.mktemp("finished")
    config = Config(
        epochs=2,
        batch_size=32,
        hidden=HIDDEN,
        checkpoint_dir=str(folder / "ckpt"),
        metrics=str(folder / "metrics.jsonl"),
    )
    return train(config, data=data, reporter=Silent())


# --- the folder of checkpoints ----------------------------------------------------------


def test_checkpoints_round_trip_and_keep_the_newest(tmp_path):
    tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "n": np.int32(4)}
    with Checkpoints(tmp_path, keep=2) as checkpoints:
        assert checkpoints.latest() is None
        for step in (1, 2, 3):
            checkpoints.save(step, jax.tree.map(lambda x, s=step: x * s, tree), {"step": step})
    with Checkpoints(tmp_path) as checkpoints:
        assert checkpoints.steps() == [2, 3]
        state, meta = checkpoints.restore(3, tree)
        assert checkpoints.read_meta(2) == {"step": 2}
    np.testing.assert_array_equal(state["w"], 3 * tree["w"])
    assert meta == {"step": 3}


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    tree = {"w": np.ones(3, np.float32)}
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(5, tree, {"step": 5})
    # What a crash during the save of step 9 leaves: orbax's temporary folder.
    partial = tmp_path / "9.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\0" * 10)
    with Checkpoints(tmp_path) as checkpoints:
        assert checkpoints.latest() == 5
        state, _ = checkpoints.restore(5, tree)
    np.testing.assert_array_equal(state["w"], tree["w"])


def test_restoring_into_another_structure_names_the_checkpoint(tmp_path):
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(1, {"w": np.ones(3, np.float32)}, {})
        with pytest.raises(CheckpointError, match=r"does not fit this run's model"):
            checkpoints.restore(1, {"w": np.ones(3, np.float32), "b": np.zeros(2, np.float32)})


# --- training with checkpoints ----------------------------------------------------------


def test_train_saves_every_epoch_and_restore_reads_it_back(finished):
    folder = finished.config.checkpoint_dir
    with Checkpoints(folder) as checkpoints:
        assert checkpoints.steps() == [10, 20]
    restored = restore(folder)
    assert restored.config == finished.config
    assert_trees_equal(restored.params, finished.params)
    assert_trees_equal(restored.opt_state, finished.opt_state)
    assert restored.epochs == finished.epochs


def test_resume_mid_epoch_continues_bit_for_bit(finished, data, tmp_path):
    folder = tmp_path / "ckpt"
    metrics = tmp_path / "metrics.jsonl"
    config = finished.config.replace(
        checkpoint_dir=str(folder), checkpoint_every=3, keep_checkpoints=20, metrics=str(metrics)
    )
    train(config, data=data, reporter=Silent())
    # A crash after step 15 (mid-epoch 2): the later checkpoints never happened.
    for step in (18, 20):
        shutil.rmtree(folder / str(step))
    recorder = Recorder()
    resumed = train(config.replace(resume=True), data=data, reporter=recorder)
    assert any("resumed from" in m and "step 15" in m for m in recorder.messages)
    assert_trees_equal(resumed.params, finished.params)
    assert_trees_equal(resumed.opt_state, finished.opt_state)
    with open(finished.config.metrics) as f:
        expected = [json.loads(line) for line in f]
    got = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert without_times(got) == without_times(expected)


def test_flat_parameters_checkpoint_and_resume(finished, data, tmp_path):
    """``flat=True``: the trajectory of the tree run, and its checkpoints resume alike."""
    folder = tmp_path / "ckpt"
    config = finished.config.replace(
        checkpoint_dir=str(folder), checkpoint_every=3, keep_checkpoints=20, metrics=None, flat=True
    )
    flat = train(config, data=data, reporter=Silent())
    for x, y in zip(jax.tree.leaves(flat.params), jax.tree.leaves(finished.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    for step in (18, 20):
        shutil.rmtree(folder / str(step))
    resumed = train(config.replace(resume=True), data=data, reporter=Silent())
    assert_trees_equal(resumed.params, flat.params)
    assert_trees_equal(resumed.opt_state, flat.opt_state)
    assert_trees_equal(restore(folder).params, flat.params)  # unpacked, as the History's
    with pytest.raises(ResumeError, match=r"flat: True in the checkpoint, False now"):
        train(config.replace(resume=True, flat=False), data=data, reporter=Silent())


def test_resuming_another_run_names_what_differs(finished, data):
    other = finished.config.replace(hidden=(16,), optimizer="sgd", lr=0.1, resume=True)
    with pytest.raises(ResumeError) as caught:
        train(other, data=data, reporter=Silent())
    message = str(caught.value)
    assert "belongs to a different run" in message
    assert "hidden: [32] in the checkpoint, [16] now" in message
    assert "optimizer: 'adam' in the checkpoint, 'sgd' now" in message
    assert "lr: None in the checkpoint, 0.1 now" in message
    assert "batch_size" not in message


def test_resuming_with_another_dataset_is_refused(finished):
    bigger = synthetic_mnist(n_train=400, n_test=64)
    with pytest.raises(ResumeError, match="training set: 320 images in the checkpoint, 400 now"):
        train(finished.config.replace(resume=True), data=bigger, reporter=Silent())


def test_a_scheduled_run_cannot_change_its_length(finished, data):
    folder = finished.config.checkpoint_dir
    with pytest.raises(ResumeError, match="epochs: 2 in the checkpoint, 3 now"):
        train(
            finished.config.replace(schedule="cosine", epochs=3, resume=True),
            data=data,
            reporter=Silent(),
        )
    with Checkpoints(folder) as checkpoints:
        assert checkpoints.latest() == 20


def test_a_finished_run_resumes_to_nothing_or_to_more_epochs(finished, data, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(finished.config.checkpoint_dir, folder)
    config = finished.config.replace(checkpoint_dir=str(folder), metrics=None, resume=True)
    again = train(config, data=data, reporter=Silent())  # nothing left to do
    assert again.epochs == finished.epochs
    assert_trees_equal(again.params, finished.params)
    longer = train(config.replace(epochs=3), data=data, reporter=Silent())
    assert [r.epoch for r in longer.epochs] == [1, 2, 3]
    assert longer.epochs[:2] == finished.epochs
    with Checkpoints(folder) as checkpoints:
        assert checkpoints.latest() == 30


def test_checkpoints_are_not_overwritten_without_resume(finished, data):
    with pytest.raises(ResumeError, match=r"already holds checkpoints .*--resume"):
        train(finished.config, data=data, reporter=Silent())


def test_resume_without_a_checkpoint_starts_afresh(data, tmp_path):
    recorder = Recorder()
    config = Config(epochs=0, hidden=HIDDEN, checkpoint_dir=str(tmp_path / "none"), resume=True)
    train(config, data=data, reporter=recorder)
    assert any("starting afresh" in m for m in recorder.messages)


# --- SIGKILL ----------------------------------------------------------------------------


def _cli(data_dir, checkpoint_dir, *extra):
    return [
        sys.executable, "-m", "jopt.examples.mnist", "--data-dir", str(data_dir),
        "--checkpoint-dir", str(checkpoint_dir), "--epochs", "3", "--batch-size", "16",
        "--hidden", "32", "--seed", "7", "--quiet", *extra,
    ]  # fmt: skip


def _steps(folder):
    return (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []
    )


def test_sigkill_mid_epoch_then_resume_is_bit_for_bit(tmp_path):
    data_dir = write_mnist(tmp_path / "data", synthetic_mnist(n_train=256, n_test=64, seed=3))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    )
    # 16 steps per epoch. The uninterrupted run goes alongside the one to be killed,
    # which saves after every step (slow enough to be caught mid-epoch).
    reference = subprocess.Popen(
        _cli(data_dir, tmp_path / "reference"), env=env, stdout=subprocess.PIPE, text=True
    )
    killed_dir = tmp_path / "killed"
    every = ["--checkpoint-every", "1", "--keep-checkpoints", "2"]
    victim = subprocess.Popen(
        _cli(data_dir, killed_dir, *every), env=env, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not [s for s in _steps(killed_dir) if s >= 20] and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after step 20 within 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    with Checkpoints(killed_dir) as checkpoints:
        newest = checkpoints.latest()
    assert newest is not None and 20 <= newest < 32 and newest % 16 != 0  # mid-epoch 2
    resumed = subprocess.run(
        [*_cli(data_dir, killed_dir, *every), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test accuracy" in resumed.stdout
    assert reference.wait() == 0
    expected, got = restore(tmp_path / "reference"), restore(killed_dir)
    assert expected.epochs[-1].step == got.epochs[-1].step == 48
    assert_trees_equal(got.params, expected.params)
    assert_trees_equal(got.opt_state, expected.opt_state)
    assert without_times([r.to_json() for r in got.epochs]) == without_times(
        [r.to_json() for r in expected.epochs]
    )
