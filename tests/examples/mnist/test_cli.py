"""Tests for the jopt-mnist command line (jopt.examples.mnist.cli, compare, __main__)."""

import json
import os
import subprocess
import sys

import pytest

from jopt.examples.mnist.cli import build_parser, config_from_args, main
from jopt.examples.mnist.config import Config
from tests.examples.mnist.synthetic import synthetic_mnist, write_mnist


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("idx"), synthetic_mnist(n_train=300, n_test=60))


def test_flags_become_the_config():
    args = build_parser().parse_args(
        [
            "--optimizer", "torch.SGD", "--lr", "0.05", "--momentum", "0.9", "--nesterov",
            "--weight-decay", "1e-4", "--opt", "dampening=0", "--schedule", "warmup-cosine",
            "--warmup", "0.1", "--clip-norm", "1", "--epochs", "3", "--batch-size", "128",
            "--hidden", "256,64", "--seed", "3", "--accumulate", "2", "--precision", "bf16",
            "--loss-scale", "--data-dir", "d", "--checkpoint-dir", "c", "--checkpoint-every",
            "100", "--resume", "--metrics", "m.jsonl", "--flat", "--quiet",
        ]
    )  # fmt: skip
    assert config_from_args(args) == Config(
        optimizer="torch.SGD",
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        options={"dampening": 0},
        schedule="warmup-cosine",
        warmup=0.1,
        clip_norm=1.0,
        epochs=3,
        batch_size=128,
        hidden=(256, 64),
        seed=3,
        accumulate=2,
        precision="bf16",
        loss_scale=True,
        data_dir="d",
        checkpoint_dir="c",
        checkpoint_every=100,
        resume=True,
        metrics="m.jsonl",
        flat=True,
        quiet=True,
    )


def test_no_flags_is_the_reference_run():
    assert config_from_args(build_parser().parse_args([])) == Config()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size 0: must be an integer >= 1"),
        (["--epochs", "-1"], "--epochs -1: must be an integer >= 0"),
        (["--hidden", "128,0"], "--hidden 128,0: every width must be an integer >= 1"),
        (
            ["--optimizer", "adamm"],
            "--optimizer adamm: unknown optimizer; choose from adadelta, adagrad, adam, adamw, "
            "amsgrad, nadam, nadamw, rmsprop, sgd, torch.Adadelta",
        ),
        (["--schedule", "linear"], "invalid choice: 'linear' (choose from 'constant', 'step'"),
        (["--momentum", "0.9"], "--momentum 0.9: adam has no argument momentum; it takes"),
        (["--opt", "centered"], "'centered' is not KEY=VALUE"),
        (["--opt", "centered=true"], "--opt centered=True: adam has no argument centered"),
        (["--plot", "x.png"], "--plot draws the curves of --compare"),
        (["--compare", "sgd,adamm"], "--compare adamm: unknown optimizer"),
        (["--devices", "64", "--batch-size", "64"], "--devices 64: only 1 cpu device"),
        (["--resume"], "--resume True: needs checkpoint_dir"),
        (["--betas", "0.9"], "--betas 0.9: must be two numbers"),
        (["--lr", "-1"], "--lr -1.0: must be a number >= 0"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "jopt-mnist: error:" in err
    assert message in err


def test_missing_data_explains_what_is_missing(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "lacks train-images-idx3-ubyte" in err and "each may also end in .gz" in err


def test_a_run_prints_a_line_per_epoch_and_a_final_line(data_dir, tmp_path, capsys):
    metrics = tmp_path / "m.jsonl"
    argv = ["--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "50", "--hidden", "32"]
    assert main([*argv, "--metrics", str(metrics)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("adam (lr 0.001, schedule constant) | MLP 784-32-10, fp32")
    assert "300 images, batch 50, 6 steps per epoch" in lines[0]
    assert lines[1].startswith("epoch 1/2: train loss ") and "steps/s" in lines[1]
    assert lines[2].startswith("epoch 2/2: ")
    assert lines[3].startswith("test accuracy ") and "after 2 epochs; wall time" in lines[3]
    assert len(lines) == 4
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert f"{100 * records[-1]['test_accuracy']:.2f}%" in lines[3]


def test_quiet_prints_only_the_final_line(data_dir, capsys):
    argv = ["--data-dir", str(data_dir), "--epochs", "1", "--hidden", "32", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and captured.out.startswith("test accuracy")
    assert "epoch 1/1" not in captured.err  # no progress bar either


def test_compare_prints_a_table_and_draws_the_curves(data_dir, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    argv = [
        "--compare", "sgd,adam", "--momentum", "0.9", "--plot", str(plot), "--epochs", "2",
        "--data-dir", str(data_dir), "--hidden", "32", "--batch-size", "50",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[adam] adam has no argument for --momentum: left out" in out
    table = out[out.index("optimizer  lr") :].splitlines()
    assert [row.split()[0] for row in table[2:4]] == ["sgd", "adam"]
    header = ["optimizer", "lr", "test", "acc", "best", "acc", "train", "loss", "s/epoch"]
    assert table[0].split() == [*header, "total", "s"]
    assert table[2].split()[1] == "0.1" and table[3].split()[1] == "0.001"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_and_plot_take_any_labels(data_dir, tmp_path):
    from jopt.examples.mnist import train
    from jopt.examples.mnist.compare import plot, table
    from jopt.examples.mnist.data import load_mnist
    from jopt.examples.mnist.report import Silent

    config = Config(optimizer="sgd", momentum=0.9, epochs=1, hidden=(16,), batch_size=50)
    history = train(config, data=load_mnist(str(data_dir)), reporter=Silent())
    rows = table({"SGD, momentum 0.9": history}).splitlines()
    assert rows[2].startswith("SGD, momentum 0.9  0.1  ")  # sgd's default lr
    plot({"SGD, momentum 0.9": history}, str(tmp_path / "c.png"), dpi=40)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_runs_the_command_line():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-m", "jopt.examples.mnist", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: jopt-mnist" in done.stdout and "torch.Adam" in done.stdout
