"""What a training run shows and returns: progress, epoch summaries, the `History`.

`jopt.examples.mnist.train` returns a `History` of `EpochRecord`s and calls a
`Reporter` at each stage; `Console` is the one the
command line uses (a tqdm bar per epoch with loss, accuracy and steps/s, one line per
epoch, one final line), and `Silent` shows nothing. Write your own to log elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import IO, Any

from jopt.examples.mnist import model as mlp
from jopt.examples.mnist.config import Config

__all__ = ["Console", "EpochRecord", "History", "Reporter", "Silent"]


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """The summary of one epoch (one line of ``--metrics``)."""

    epoch: int
    epochs: int
    step: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    learning_rate: float | None
    epoch_time: float
    steps_per_second: float
    wall_time: float

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class History:
    """What `train` returns: the epoch summaries, the loss curve, the trained parameters.

    Attributes:
        config: the run.
        epochs: one `EpochRecord` per epoch, resumed ones included.
        curve: ``(step, train loss)`` points, each the mean loss of the steps since the
            previous point (about 20 per epoch).
        params: the final parameters (a dict of arrays).
        opt_state: the final optimizer state.
        apply: the model as a pure function, ``apply(params, images) -> logits``.
        wall_time: seconds from the start of `train` to its end (plus, after a resume,
            the time the earlier runs had spent).
        setup_time: seconds from the start of `train` to the first step (loading the
            data, building and compiling).
        compile_time: seconds spent compiling (in threads that overlap the setup).
        devices: the number of devices the batches were split across.
    """

    config: Config
    epochs: list[EpochRecord]
    curve: list[tuple[int, float]]
    params: Any
    opt_state: Any
    apply: mlp.Functional
    wall_time: float
    setup_time: float
    compile_time: float
    devices: int

    @property
    def test_accuracy(self) -> float:
        """The test accuracy after the last epoch (NaN if no epoch ran)."""
        return self.epochs[-1].test_accuracy if self.epochs else math.nan

    def model(self) -> Any:
        """The trained model as a flax NNX module."""
        return self.apply.module(self.params)

    def summary(self) -> str:
        """The final line: test accuracy, epochs and wall time."""
        if not self.epochs:
            return f"no epoch trained; wall time {self.wall_time:.1f} s"
        last = self.epochs[-1]
        return (
            f"test accuracy {100 * last.test_accuracy:.2f}% (loss {last.test_loss:.4f}) after "
            f"{last.epoch} epochs; wall time {self.wall_time:.1f} s (setup and compilation "
            f"{self.setup_time:.1f} s)"
        )


class Reporter:
    """Receives a run's events, and by default ignores them: override what you need.

    The order: ``start`` once the run is set up, then per epoch ``epoch_start``,
    ``progress`` after every chunk of steps and ``epoch_end``; ``finish`` at the end;
    ``message`` for notes at any time.
    """

    def start(self, text: str) -> None:
        """The run's description, once it is set up (and compiled)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        """Epoch ``epoch`` (from 1) of ``epochs`` begins with ``done`` of ``steps`` taken."""

    def progress(self, done: int, loss: float, accuracy: float) -> None:
        """``done`` steps of the epoch are taken; running train loss and accuracy."""

    def epoch_end(self, record: Any) -> None:
        """The epoch's `EpochRecord`."""

    def finish(self, history: Any) -> None:
        """The run's `History`."""

    def message(self, text: str) -> None:
        """A note (resuming, starting afresh, ...)."""


class Silent(Reporter):
    """A `Reporter` that shows nothing."""


class Console(Reporter):
    """A `Reporter` for terminals and notebooks: tqdm bars and one line per epoch.

    Args:
        quiet: print only the final line (no bars, no epoch lines).
        prefix: put before every line (``--compare`` names the optimizer).
        stream: where lines go (bars go to stderr, as tqdm's do).
    """

    def __init__(self, quiet: bool = False, prefix: str = "", stream: IO[str] | None = None):
        self.quiet = quiet
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stdout
        self._bar: Any = None

    def _print(self, text: str) -> None:
        print(f"{self.prefix}{text}", file=self.stream, flush=True)

    def start(self, text: str) -> None:
        """Prints the run's description unless quiet."""
        if not self.quiet:
            self._print(text)

    def message(self, text: str) -> None:
        """Prints a note unless quiet."""
        if not self.quiet:
            self._print(text)

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        """Opens the epoch's progress bar."""
        if self.quiet:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=steps,
            initial=done,
            desc=f"{self.prefix}epoch {epoch}/{epochs}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def progress(self, done: int, loss: float, accuracy: float) -> None:
        """Moves the bar to ``done`` and shows the running loss and accuracy."""
        if self._bar is None:
            return
        self._bar.set_postfix_str(f"loss {loss:.4f}, accuracy {100 * accuracy:.2f}%", refresh=False)
        self._bar.update(done - self._bar.n)

    def epoch_end(self, record: Any) -> None:
        """Closes the bar and prints the epoch's summary line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.quiet:
            return
        r = record
        lr = "" if r.learning_rate is None else f" | lr {r.learning_rate:.3g}"
        self._print(
            f"epoch {r.epoch}/{r.epochs}: train loss {r.train_loss:.4f}, accuracy "
            f"{100 * r.train_accuracy:.2f}% | test loss {r.test_loss:.4f}, accuracy "
            f"{100 * r.test_accuracy:.2f}%{lr} | {r.epoch_time:.2f} s, "
            f"{r.steps_per_second:.0f} steps/s"
        )

    def finish(self, history: Any) -> None:
        """Prints the final line: test accuracy and wall time."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._print(history.summary())
