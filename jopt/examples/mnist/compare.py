"""Optimizers side by side: the same model, seed and data order, one after the other.

``jopt-mnist --compare sgd,adam,rmsprop,adagrad,adadelta,adamw --plot curves.png``
trains each optimizer with the run's other settings (flags that an optimizer has no
argument for, such as ``--momentum`` for ``adam``, are left out of its run, and a note
says so), prints a table of final accuracy and time per epoch, and draws the train
loss and test accuracy curves in one figure, as the PyTorch tutorials do.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from jopt.examples.mnist.config import OPTIMIZERS, Config, ConfigError, default_lr, fit
from jopt.examples.mnist.data import MNIST, load_mnist
from jopt.examples.mnist.report import Console
from jopt.examples.mnist.train import History, train

__all__ = ["compare", "plot", "table"]


def compare(
    names: Sequence[str],
    config: Config,
    *,
    plot: str | None = None,
    data: MNIST | None = None,
    stream: IO[str] | None = None,
) -> dict[str, History]:
    """Trains ``config`` with each optimizer in ``names``; prints the table, draws the plot.

    Every run uses ``config``'s seed, so all start from the same weights and see the
    batches in the same order. With ``checkpoint_dir``, each run keeps its checkpoints
    in a subfolder named after the optimizer; with ``metrics``, one file holds every
    run's lines, each with an ``"optimizer"`` field.

    Args:
        names: optimizer names (`jopt.examples.mnist.config.OPTIMIZERS`).
        config: the other settings.
        plot: save the figure (train loss and test accuracy per epoch) to this file.
        data: the dataset (default: loaded once, as ``config.data_dir`` says).
        stream: where the lines and the table go (default: stdout).

    Returns:
        Each optimizer's `History`, by name.
    """
    stream = stream if stream is not None else sys.stdout
    if not names:
        raise ConfigError("compare", "", "name at least one optimizer")
    if unknown := [n for n in names if n not in OPTIMIZERS]:
        raise ConfigError(
            "compare", ",".join(unknown), f"unknown optimizer; choose from {', '.join(OPTIMIZERS)}"
        )
    if len(set(names)) != len(names):
        raise ConfigError("compare", ",".join(names), "names an optimizer twice")
    runs = []
    for name in names:
        run, dropped = fit(config, name)
        folder = None if config.checkpoint_dir is None else str(Path(config.checkpoint_dir) / name)
        runs.append((name, run.replace(checkpoint_dir=folder, metrics=None), dropped))
    data = data if data is not None else load_mnist(config.data_dir)
    width = max(len(n) for n in names)
    histories: dict[str, History] = {}
    for name, run, dropped in runs:
        prefix = f"[{name:>{width}}] "
        reporter = Console(quiet=config.quiet, prefix=prefix, stream=stream)
        if dropped:
            flags = ", ".join("--" + d.replace("_", "-") for d in dropped)
            reporter.message(f"{name} has no argument for {flags}: left out")
        histories[name] = train(run, data=data, reporter=reporter)
    if config.metrics is not None:
        _write_metrics(config.metrics, histories)
    print(table(histories), file=stream, flush=True)
    if plot is not None:
        globals()["plot"](histories, plot)
        print(f"curves saved to {plot}", file=stream, flush=True)
    return histories


def table(histories: dict[str, History]) -> str:
    """The comparison as a text table: lr, final and best test accuracy, seconds per epoch.

    ``histories`` is keyed by a label per run (the optimizer's name, or any other).

    Seconds per epoch is the median epoch time (training and evaluation, compilation
    excluded); "total" is the run's wall time, setup and compilation included.
    """
    header = ("optimizer", "lr", "test acc", "best acc", "train loss", "s/epoch", "total s")
    rows = [header]
    for name, h in histories.items():
        lr = h.config.lr if h.config.lr is not None else default_lr(h.config.optimizer)
        if not h.epochs:
            rows.append((name, f"{lr:g}", "-", "-", "-", "-", f"{h.wall_time:.1f}"))
            continue
        last = h.epochs[-1]
        best = max(r.test_accuracy for r in h.epochs)
        per_epoch = statistics.median(r.epoch_time for r in h.epochs)
        rows.append(
            (
                name,
                f"{lr:g}",
                f"{100 * last.test_accuracy:.2f}%",
                f"{100 * best:.2f}%",
                f"{last.train_loss:.4f}",
                f"{per_epoch:.2f}",
                f"{h.wall_time:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(histories: dict[str, History], path: str, *, dpi: int = 120) -> Any:
    """Draws train loss (per chunk of steps) and test accuracy (per epoch) for each run.

    Args:
        histories: the runs, by name (the optimizer's, or any label).
        path: the image file to write (its extension picks the format).
        dpi: the image's resolution (a notebook may want less).

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg" and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, h in histories.items():
        steps = h.epochs[-1].step / h.epochs[-1].epoch if h.epochs else 1
        if h.curve:
            loss_ax.plot([s / steps for s, _ in h.curve], [v for _, v in h.curve], label=name)
        acc_ax.plot(
            [r.epoch for r in h.epochs],
            [100 * r.test_accuracy for r in h.epochs],
            marker="o",
            label=name,
        )
    loss_ax.set(xlabel="epoch", ylabel="train loss", yscale="log", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=dpi)
    return fig


def _write_metrics(path: str, histories: dict[str, History]) -> None:
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w") as f:
        for name, h in histories.items():
            for record in h.epochs:
                f.write(json.dumps({"optimizer": name, **record.to_json()}) + "\n")
