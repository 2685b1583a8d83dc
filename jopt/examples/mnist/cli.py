"""``jopt-mnist``: train an MLP on MNIST with any jopt optimizer, from the command line.

    jopt-mnist                                   # Adam, lr 1e-3, batch 64, 5 epochs
    jopt-mnist --optimizer torch.SGD --lr 0.05 --momentum 0.9 --schedule cosine
    jopt-mnist --compare sgd,adam,rmsprop,adagrad,adadelta,adamw --plot curves.png

Also ``python -m jopt.examples.mnist``. Every flag is a field of
`jopt.examples.mnist.Config` (``--batch-size`` is ``batch_size``); ``--help`` lists
them. Errors in the flags name the flag and exit with status 2; a run that cannot
start (no data, a checkpoint of another run) exits with status 1.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from typing import Any

from jopt.examples.mnist.config import (
    DEFAULT_LR,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    Config,
    ConfigError,
)

__all__ = ["build_parser", "config_from_args", "main"]

_FLAG_OF = {"options": "--opt"}


def _flag(field: str) -> str:
    return _FLAG_OF.get(field, "--" + field.replace("_", "-"))


def _numbers(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {kind.__name__}s"
            ) from None

    parse.__name__ = f"list of {kind.__name__}s"
    return parse


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    lowered = raw.strip().lower()
    value: Any
    if lowered in ("true", "false"):
        value = lowered == "true"
    elif lowered in ("none", "null"):
        value = None
    else:
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()  # a string, e.g. a dtype name
    return key.strip(), value


def _names() -> str:
    optax = sorted(n for n in OPTIMIZERS if not n.startswith("torch."))
    torch = sorted(n for n in OPTIMIZERS if n.startswith("torch."))
    return ", ".join(optax) + "; torch door: " + ", ".join(torch)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``jopt-mnist``."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="jopt-mnist",
        description=(
            "Train a 784-128-128-10 MLP (flax NNX) on MNIST with a jopt optimizer: the "
            "PyTorch zero_grad/backward/step cycle as pure functions, jit-compiled."
        ),
        epilog=(
            "Examples:  jopt-mnist  |  jopt-mnist --batch-size 128 --schedule one-cycle "
            "--lr 3e-3 --epochs 4  |  jopt-mnist --compare sgd,adam,rmsprop,adagrad,"
            "adadelta,adamw --plot curves.png"
        ),
    )
    opt = parser.add_argument_group("optimizer")
    opt.add_argument(
        "--optimizer",
        default=defaults.optimizer,
        metavar="NAME",
        help=f"one of {_names()} (default: %(default)s)",
    )
    lrs = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    opt.add_argument(
        "--lr",
        type=float,
        help=f"(peak) learning rate; default: {lrs}; torch.* use torch's defaults",
    )
    opt.add_argument(
        "--momentum", type=float, metavar="M", help="momentum (sgd, rmsprop, torch.SGD, ...)"
    )
    opt.add_argument(
        "--weight-decay", type=float, metavar="WD", help="weight decay (adamw, torch.*, ...)"
    )
    opt.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    opt.add_argument(
        "--betas", type=_numbers(float), metavar="B1,B2", help="Adam's betas (b1 and b2)"
    )
    opt.add_argument("--eps", type=float, help="the optimizer's epsilon")
    opt.add_argument(
        "--opt",
        dest="options",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other argument of the optimizer, e.g. --opt centered=true (repeatable)",
    )
    sched = parser.add_argument_group("schedule and gradient processing")
    sched.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help="learning-rate schedule (default: %(default)s)",
    )
    sched.add_argument(
        "--warmup",
        type=float,
        metavar="FRACTION",
        help="warmup-cosine: fraction of the run warming up (0.05); one-cycle: rising (0.25)",
    )
    sched.add_argument(
        "--step-size",
        type=int,
        default=defaults.step_size,
        metavar="EPOCHS",
        help="step: epochs between decays (default: %(default)s)",
    )
    sched.add_argument(
        "--gamma",
        type=float,
        default=defaults.gamma,
        help="step: decay factor (default: %(default)s)",
    )
    sched.add_argument(
        "--clip-norm", type=float, metavar="NORM", help="clip gradients to this global norm"
    )
    sched.add_argument(
        "--accumulate",
        type=int,
        default=defaults.accumulate,
        metavar="K",
        help="average the gradients of K batches per update (default: %(default)s)",
    )
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    run.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        metavar="N",
        help="examples per step (default: %(default)s)",
    )
    run.add_argument(
        "--hidden",
        type=_numbers(int),
        default=defaults.hidden,
        metavar="W1,W2,...",
        help="hidden layer widths (default: 128,128; '' for none)",
    )
    run.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="bf16: bfloat16 compute, float32 master weights (default: %(default)s)",
    )
    run.add_argument(
        "--loss-scale",
        action="store_true",
        help="dynamic loss scaling (jopt.dynamic_loss_scale); bf16 does not need it",
    )
    run.add_argument(
        "--flat",
        action="store_true",
        help="keep the parameters packed in one buffer per dtype between steps (jopt.flat)",
    )
    run.add_argument(
        "--devices",
        type=int,
        default=defaults.devices,
        metavar="N",
        help="data parallel over N local devices (default: %(default)s)",
    )
    io = parser.add_argument_group("data and output")
    io.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the four MNIST IDX files (default: cache, else download)",
    )
    io.add_argument("--checkpoint-dir", metavar="DIR", help="save a checkpoint every epoch")
    io.add_argument(
        "--checkpoint-every", type=int, metavar="STEPS", help="also save every STEPS steps"
    )
    io.add_argument(
        "--keep-checkpoints",
        type=int,
        default=defaults.keep_checkpoints,
        metavar="N",
        help="keep the newest N checkpoints (default: %(default)s)",
    )
    io.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint, if any"
    )
    io.add_argument("--metrics", metavar="FILE", help="write one JSON line per epoch")
    io.add_argument("--quiet", action="store_true", help="print only the final line")
    comp = parser.add_argument_group("comparing optimizers")
    comp.add_argument(
        "--compare",
        type=lambda text: tuple(n.strip() for n in text.split(",") if n.strip()),
        metavar="NAMES",
        help="train each optimizer in turn (same seed and data order) and print a table",
    )
    comp.add_argument("--plot", metavar="FILE", help="with --compare: save the curves here")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The `Config` the parsed flags describe (raises `ConfigError`)."""
    return Config(
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
        betas=args.betas,
        eps=args.eps,
        options=dict(args.options),
        schedule=args.schedule,
        warmup=args.warmup,
        step_size=args.step_size,
        gamma=args.gamma,
        clip_norm=args.clip_norm,
        epochs=args.epochs,
        batch_size=args.batch_size,
        hidden=args.hidden,
        seed=args.seed,
        accumulate=args.accumulate,
        precision=args.precision,
        loss_scale=args.loss_scale,
        data_dir=args.data_dir,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        metrics=args.metrics,
        devices=args.devices,
        flat=args.flat,
        quiet=args.quiet,
    )


def _describe_error(error: ConfigError) -> str:
    value = error.value
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    if error.field == "options" and isinstance(value, dict):
        value = " ".join(f"{k}={v}" for k, v in value.items())
    shown = "" if value is None else f" {value}"
    return f"{_flag(error.field)}{shown}: {error.problem}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``jopt-mnist`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot and not args.compare:
        parser.error("--plot draws the curves of --compare: give --compare too")
    try:
        config = config_from_args(args)
        if args.compare:
            from jopt.examples.mnist.compare import compare

            compare(args.compare, config, plot=args.plot)
        else:
            from jopt.examples.mnist.train import train

            train(config)
    except ConfigError as e:
        parser.error(_describe_error(e))
    except KeyboardInterrupt:
        print("jopt-mnist: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:  # no data, a checkpoint of another run, ...
        print(f"jopt-mnist: error: {e}", file=sys.stderr)
        return 1
    return 0
