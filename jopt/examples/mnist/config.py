"""What a training run is: the `Config`, and the optimizer and schedule it names.

`Config` holds every choice of a run (the command line's flags, one field each) and
checks them when it is made: a bad value raises `ConfigError`, which names the field
(the command line turns it into the flag). `build_optimizer` turns a config into a
jopt `GradientTransformation`: the optimizer of either door, looked up by name in the
library (`OPTIMIZERS`), with its learning rate on a schedule (`SCHEDULES`), optionally
behind gradient clipping and inside gradient accumulation.

    >>> from jopt.examples.mnist.config import Config, build_optimizer
    >>> config = Config(optimizer="torch.SGD", lr=0.05, momentum=0.9, schedule="cosine")
    >>> tx = build_optimizer(config, steps_per_epoch=100)
    >>> Config(batch_size=0)
    Traceback (most recent call last):
    ...
    jopt.examples.mnist.config.ConfigError: batch_size=0: must be an integer >= 1
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

import jopt
import jopt.optimizers
import jopt.torch.optim
from jopt.base import GradientTransformation, ScalarOrSchedule

__all__ = [
    "DEFAULT_LR",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "Config",
    "ConfigError",
    "build_optimizer",
    "build_schedule",
    "fit",
    "optimizer_arguments",
]


def _optimizers() -> dict[str, Callable[..., GradientTransformation]]:
    """Every optimizer of both doors, from the modules that define them."""
    found: dict[str, Callable[..., GradientTransformation]] = {}
    for name in jopt.optimizers.__all__:
        found[name] = getattr(jopt.optimizers, name)
    for name in jopt.torch.optim.__all__:
        found[f"torch.{name}"] = getattr(jopt.torch.optim, name)
    return found


OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = _optimizers()
"""The optimizers ``--optimizer`` accepts: ``jopt.<name>`` as ``name`` (optax door) and
``jopt.torch.<Name>`` as ``torch.Name`` (torch door)."""

DEFAULT_LR: dict[str, float] = {
    "adam": 1e-3,
    "adamw": 1e-3,
    "amsgrad": 1e-3,
    "nadam": 1e-3,
    "nadamw": 1e-3,
    "rmsprop": 1e-3,
    "sgd": 0.1,
    "adagrad": 0.05,
    "adadelta": 1.0,
}
"""Learning rates used when none is given, for the optax door (whose functions have
no default; these suit this MLP on MNIST). The torch door uses torch's defaults."""

SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine", "warmup-cosine", "one-cycle")
"""The learning-rate schedules ``--schedule`` accepts (see `build_schedule`)."""

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

_TORCH_IGNORED = frozenset({"foreach", "fused", "capturable", "differentiable"})


class ConfigError(ValueError):
    """A configuration value that cannot work; ``field`` names the `Config` field.

    ``str(error)`` reads ``field=value: requirement``; `problem` is the part after the
    colon, for callers (the command line) that name the field their own way.
    """

    def __init__(self, field: str, value: Any, problem: str) -> None:
        super().__init__(f"{field}={value!r}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Config:
    """A training run: model, optimizer, schedule, data, checkpoints and output.

    Every field is a command-line flag of ``jopt-mnist`` (``batch_size`` is
    ``--batch-size``). The defaults are the reference run: Adam at 1e-3, batch 64,
    5 epochs, 784-128-128-10, float32. Each field is checked here; whether the
    optimizer fields fit the optimizer (``momentum`` for ``adam``) is checked by
    `optimizer_arguments`, which `train` calls first.

    Attributes:
        optimizer: a name in `OPTIMIZERS`: ``adam``, ``sgd``, ... or ``torch.Adam``, ...
        lr: the (peak) learning rate; ``None`` for the optimizer's default
            (`DEFAULT_LR` for the optax door, torch's for the torch door).
        momentum: passed as ``momentum`` to optimizers that take it.
        weight_decay: passed as ``weight_decay``.
        nesterov: passed as ``nesterov=True`` when set.
        betas: ``(b1, b2)``: torch's ``betas``, or optax's ``b1`` and ``b2``.
        eps: passed as ``eps``.
        options: any other keyword arguments of the optimizer, by name
            (``{"centered": True}``).
        schedule: a name in `SCHEDULES`.
        warmup: the fraction of the updates spent warming up (``warmup-cosine``,
            default 0.05) or rising (``one-cycle``'s ``pct_start``, default 0.25).
        step_size: ``step``: epochs between two decays (torch's ``StepLR.step_size``).
        gamma: ``step``: the decay factor.
        clip_norm: clip the gradients to this global norm (``jopt.clip_by_global_norm``).
        epochs: the number of passes over the training set (0 only evaluates).
        batch_size: examples per step (per micro-step with ``accumulate``).
        hidden: the hidden layer widths of the MLP.
        seed: seeds the initial weights and the data order of every epoch.
        accumulate: average the gradients of this many batches per update
            (``jopt.multi_steps``).
        precision: ``fp32``, or ``bf16``: bfloat16 compute, float32 master weights.
        loss_scale: dynamic loss scaling (``jopt.dynamic_loss_scale``, torch's
            ``GradScaler`` rule). Off by default, also for ``bf16``: bfloat16 has
            float32's exponent range, so its gradients do not underflow where float32
            ones would not; scaling exists for float16. Turning it on costs a finiteness
            check per step and skips steps with Inf or NaN gradients.
        data_dir: a folder with the four MNIST IDX files; ``None`` for the cache or a
            download (`jopt.examples.mnist.data.load_mnist`).
        checkpoint_dir: save a checkpoint here after every epoch.
        checkpoint_every: also save every this many steps.
        keep_checkpoints: how many checkpoints to keep (the newest).
        resume: continue from the newest checkpoint in ``checkpoint_dir``.
        metrics: append one JSON line per epoch to this file.
        devices: data parallel over this many local devices.
        flat: keep the parameters packed between steps (`jopt.flat`): the model reads
            them as views, the optimizer updates a few buffers instead of every leaf.
        quiet: print only the final line.

    Example:
        >>> from jopt.examples.mnist.config import Config
        >>> Config(hidden=[256], epochs=3).hidden
        (256,)
        >>> Config(optimizer="adamm")
        Traceback (most recent call last):
        ...
        jopt.examples.mnist.config.ConfigError: optimizer='adamm': unknown optimizer; \
choose from adadelta, adagrad, adam, adamw, amsgrad, nadam, nadamw, rmsprop, sgd, \
torch.Adadelta, torch.Adagrad, torch.Adam, torch.AdamW, torch.RMSprop, torch.SGD
    """

    optimizer: str = "adam"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool = False
    betas: tuple[float, float] | None = None
    eps: float | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schedule: str = "constant"
    warmup: float | None = None
    step_size: int = 1
    gamma: float = 0.7
    clip_norm: float | None = None
    epochs: int = 5
    batch_size: int = 64
    hidden: tuple[int, ...] = (128, 128)
    seed: int = 0
    accumulate: int = 1
    precision: str = "fp32"
    loss_scale: bool = False
    data_dir: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    resume: bool = False
    metrics: str | None = None
    devices: int = 1
    flat: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        hidden = _sequence("hidden", self.hidden)
        try:
            put("hidden", tuple(_integer("hidden", h, 1) for h in hidden))
        except ConfigError:
            raise ConfigError("hidden", hidden, "every width must be an integer >= 1") from None
        for name, low in (("epochs", 0), ("batch_size", 1), ("accumulate", 1), ("devices", 1)):
            put(name, _integer(name, getattr(self, name), low))
        put("step_size", _integer("step_size", self.step_size, 1))
        put("keep_checkpoints", _integer("keep_checkpoints", self.keep_checkpoints, 1))
        put("seed", _integer("seed", self.seed, 0))
        if self.checkpoint_every is not None:
            put("checkpoint_every", _integer("checkpoint_every", self.checkpoint_every, 1))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                "optimizer", self.optimizer, f"unknown optimizer; choose from {_names(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                "schedule", self.schedule, f"unknown schedule; choose from {', '.join(SCHEDULES)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", self.precision, f"choose from {', '.join(PRECISIONS)}")
        for name in ("lr", "momentum", "weight_decay", "eps"):
            if getattr(self, name) is not None:
                put(name, _real(name, getattr(self, name), ge=0.0))
        if self.clip_norm is not None:
            put("clip_norm", _real("clip_norm", self.clip_norm, gt=0.0))
        if self.warmup is not None:
            put("warmup", _real("warmup", self.warmup, ge=0.0, lt=1.0))
        put("gamma", _real("gamma", self.gamma, gt=0.0))
        if self.betas is not None:
            betas = _sequence("betas", self.betas)
            try:
                put("betas", tuple(_real("betas", b, ge=0.0, lt=1.0) for b in betas))
            except ConfigError:
                raise ConfigError("betas", betas, "each must be a number in [0, 1)") from None
            if len(betas) != 2:
                raise ConfigError("betas", betas, "must be two numbers, b1,b2")
        if not isinstance(self.options, Mapping):
            raise ConfigError("options", self.options, "must be a mapping of names to values")
        put("options", dict(self.options))
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("resume", True, "needs checkpoint_dir, the folder to resume from")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ConfigError(
                "checkpoint_every", self.checkpoint_every, "needs checkpoint_dir, where to save"
            )
        if self.batch_size % self.devices:
            raise ConfigError(
                "batch_size",
                self.batch_size,
                f"must be a multiple of devices={self.devices} (each device takes an equal "
                f"share of every batch)",
            )

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON values (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Config:
        """The inverse of `to_json`; unknown fields are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(values) - names):
            raise ConfigError("config", unknown, "unknown fields")
        values = dict(values)
        for name in ("betas", "hidden"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _names(table: Mapping[str, Any]) -> str:
    return ", ".join(sorted(table, key=lambda n: (n.startswith("torch."), n.lower())))


def _sequence(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(name, value, "must be a sequence of numbers")
    return tuple(value)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(name, value, f"must be an integer >= {low}")
    if value < low:
        raise ConfigError(name, value, f"must be an integer >= {low}")
    return int(value)


def _real(
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    wanted = " and ".join(
        f"{op} {bound:g}" for op, bound in ((">=", ge), (">", gt), ("<", lt)) if bound is not None
    )
    if ok and ge is not None and value < ge:
        ok = False
    if ok and gt is not None and value <= gt:
        ok = False
    if ok and lt is not None and value >= lt:
        ok = False
    if not ok:
        raise ConfigError(name, value, f"must be a number {wanted}".rstrip())
    return float(value)


# --- the optimizer ----------------------------------------------------------------------


def default_lr(name: str) -> float:
    """The learning rate `Config.lr` ``None`` stands for, for optimizer ``name``.

    Example:
        >>> from jopt.examples.mnist.config import default_lr
        >>> default_lr("adam"), default_lr("torch.SGD"), default_lr("torch.Adadelta")
        (0.001, 0.001, 1.0)
    """
    parameters = inspect.signature(OPTIMIZERS[name]).parameters
    if name in DEFAULT_LR:
        return DEFAULT_LR[name]
    for key in ("lr", "learning_rate"):
        if key in parameters and isinstance(parameters[key].default, (int, float)):
            return float(parameters[key].default)
    raise ConfigError("lr", None, f"{name} has no default learning rate; give one")


def _lr_argument(name: str) -> str:
    parameters = inspect.signature(OPTIMIZERS[name]).parameters
    return "learning_rate" if "learning_rate" in parameters else "lr"


def optimizer_arguments(
    config: Config, *, learning_rate: ScalarOrSchedule | None = None, strict: bool = True
) -> dict[str, Any]:
    """The keyword arguments `Config`'s optimizer fields give ``OPTIMIZERS[config.optimizer]``.

    ``lr`` goes to ``learning_rate`` (optax door) or ``lr`` (torch door); ``betas`` to
    ``betas`` or ``b1``/``b2``; the other fields to the argument of their name;
    ``options`` as they are. A field the optimizer has no argument for is a
    `ConfigError` listing the arguments it has, unless ``strict`` is false (then the
    field is left out: ``--compare`` runs optimizers that take different arguments).

    Args:
        config: the run.
        learning_rate: the learning rate (or schedule) to pass; default: the config's.
        strict: raise on fields that do not apply.

    Returns:
        The keyword arguments.

    Example:
        >>> from jopt.examples.mnist.config import Config, optimizer_arguments
        >>> optimizer_arguments(Config(optimizer="adam", betas=(0.8, 0.99)))
        {'learning_rate': 0.001, 'b1': 0.8, 'b2': 0.99}
        >>> optimizer_arguments(Config(optimizer="torch.Adam", betas=(0.8, 0.99)))
        {'lr': 0.001, 'betas': (0.8, 0.99)}
        >>> optimizer_arguments(Config(optimizer="adam", momentum=0.9))
        Traceback (most recent call last):
        ...
        jopt.examples.mnist.config.ConfigError: momentum=0.9: adam has no argument momentum; \
it takes learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype
    """
    name = config.optimizer
    parameters = inspect.signature(OPTIMIZERS[name]).parameters
    lr_name = _lr_argument(name)
    takes = ", ".join(p for p in parameters if p not in _TORCH_IGNORED)
    if learning_rate is None:
        learning_rate = config.lr if config.lr is not None else default_lr(name)
    arguments: dict[str, Any] = {lr_name: learning_rate}

    def put(field: str, key: str, value: Any) -> None:
        if key in parameters:
            arguments[key] = value
        elif strict:
            raise ConfigError(field, value, f"{name} has no argument {key}; it takes {takes}")

    if config.betas is not None:
        if "b1" in parameters and "b2" in parameters:
            put("betas", "b1", config.betas[0])
            put("betas", "b2", config.betas[1])
        else:
            put("betas", "betas", config.betas)
    for field in ("momentum", "weight_decay", "eps"):
        if getattr(config, field) is not None:
            put(field, field, getattr(config, field))
    if config.nesterov:
        put("nesterov", "nesterov", True)
    for key, value in config.options.items():
        if key in (lr_name, "lr", "learning_rate"):
            raise ConfigError("options", {key: value}, "give the learning rate as lr")
        if key not in parameters:
            if not strict:
                continue
            problem = f"{name} has no argument {key}; it takes {takes}"
            raise ConfigError("options", {key: value}, problem)
        arguments[key] = jnp.dtype(value) if key.endswith("_dtype") and value is not None else value
    return arguments


def fit(config: Config, optimizer: str) -> tuple[Config, list[str]]:
    """``config`` for ``optimizer``, without the optimizer fields it has no argument for.

    ``--compare`` shares its flags among optimizers that take different arguments
    (``--momentum`` means something to ``sgd``, nothing to ``adam``).

    Returns:
        The config and the names of the fields left out.

    Example:
        >>> from jopt.examples.mnist.config import Config, fit
        >>> config, dropped = fit(Config(momentum=0.9, eps=1e-6), "adam")
        >>> config.momentum, config.eps, dropped
        (None, 1e-06, ['momentum'])
    """
    config = config.replace(optimizer=optimizer)
    kept = optimizer_arguments(config, strict=False)
    names = {"betas": ("betas", "b1"), "nesterov": ("nesterov",)}
    changes: dict[str, Any] = {}
    for field in ("momentum", "weight_decay", "eps", "betas", "nesterov"):
        value = getattr(config, field)
        if value is None or value is False:
            continue
        if not any(key in kept for key in names.get(field, (field,))):
            changes[field] = False if field == "nesterov" else None
    options = {k: v for k, v in config.options.items() if k in kept}
    if len(options) != len(config.options):
        changes["options"] = options
    dropped = sorted(changes)
    return config.replace(**changes), dropped


def build_schedule(
    config: Config, lr: float, *, updates_per_epoch: float, total_updates: int
) -> ScalarOrSchedule:
    """The learning rate over the updates, as `Config.schedule` says (a jopt schedule).

    - ``constant``: ``lr``.
    - ``step``: ``lr * gamma ** (epoch // step_size)`` (torch's ``StepLR`` stepped per
      epoch), by `jopt.piecewise_constant_schedule`.
    - ``cosine``: half a cosine from ``lr`` to 0 over the run
      (`jopt.cosine_decay_schedule`).
    - ``warmup-cosine``: linear from 0 to ``lr`` over ``warmup`` of the run, then the
      cosine (`jopt.warmup_cosine_decay_schedule`).
    - ``one-cycle``: from ``lr / 25`` up to ``lr`` over ``warmup`` of the run and down to
      ``lr / 25e4`` along cosines (`jopt.cosine_onecycle_schedule`, Smith & Topin 2018).

    Args:
        config: the run.
        lr: the peak learning rate.
        updates_per_epoch: optimizer updates per epoch (steps / accumulate).
        total_updates: optimizer updates in the whole run.

    Returns:
        A float or a schedule ``count -> lr``.

    Example:
        >>> from jopt.examples.mnist.config import Config, build_schedule
        >>> config = Config(schedule="step", step_size=1, gamma=0.5)
        >>> schedule = build_schedule(config, 1.0, updates_per_epoch=10, total_updates=30)
        >>> [float(schedule(t)) for t in (0, 9, 10, 25)]
        [1.0, 1.0, 0.5, 0.25]
    """
    total = max(total_updates, 1)
    if config.schedule == "constant":
        return lr
    if config.schedule == "step":
        every = config.step_size * updates_per_epoch
        boundaries = {
            round(k * every): config.gamma for k in range(1, math.ceil(total / every) + 1)
        }
        return jopt.piecewise_constant_schedule(lr, boundaries)
    if config.schedule == "cosine":
        return jopt.cosine_decay_schedule(lr, total)
    if config.schedule == "warmup-cosine":
        warmup = round((0.05 if config.warmup is None else config.warmup) * total)
        return jopt.warmup_cosine_decay_schedule(0.0, lr, min(warmup, total - 1), total + 1)
    pct_start = 0.25 if config.warmup is None else config.warmup
    if total < 2 or int(pct_start * total) >= total:
        return lr  # too short a run for a cycle
    return jopt.cosine_onecycle_schedule(total, lr, pct_start=pct_start)


def total_updates(config: Config, steps_per_epoch: int) -> int:
    """The optimizer updates in the whole run: steps / accumulate, rounded up."""
    return math.ceil(config.epochs * steps_per_epoch / config.accumulate)


def build_optimizer(
    config: Config, steps_per_epoch: int, *, strict: bool = True
) -> GradientTransformation:
    """The run's gradient transformation: optimizer, schedule, clipping, accumulation.

    ``OPTIMIZERS[config.optimizer](**optimizer_arguments(config))`` with the learning
    rate replaced by `build_schedule`'s; with ``clip_norm``,
    ``jopt.chain(jopt.clip_by_global_norm(clip_norm), optimizer)``; with
    ``accumulate > 1``, all of it inside ``jopt.multi_steps(..., accumulate)``, so the
    schedule counts updates, not micro-steps; with ``loss_scale``, all of it inside
    ``jopt.dynamic_loss_scale(...)``, which unscales the gradients first.

    Args:
        config: the run.
        steps_per_epoch: batches per epoch.
        strict: see `optimizer_arguments`.

    Returns:
        The transformation.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.examples.mnist.config import Config, build_optimizer
        >>> tx = build_optimizer(Config(optimizer="sgd", lr=0.5, schedule="cosine"), 10)
        >>> state = tx.init(jnp.zeros(2))
        >>> float(jopt.hyperparams(state)["learning_rate"])
        0.5
    """
    lr = config.lr if config.lr is not None else default_lr(config.optimizer)
    schedule = build_schedule(
        config,
        lr,
        updates_per_epoch=steps_per_epoch / config.accumulate,
        total_updates=total_updates(config, steps_per_epoch),
    )
    arguments = optimizer_arguments(config, learning_rate=schedule, strict=strict)
    tx = OPTIMIZERS[config.optimizer](**arguments)
    if config.clip_norm is not None:
        tx = jopt.chain(_library("clip_by_global_norm", "clip_norm")(config.clip_norm), tx)
    if config.accumulate > 1:
        tx = _library("multi_steps", "accumulate")(tx, config.accumulate)
    if config.loss_scale:
        tx = _library("dynamic_loss_scale", "loss_scale")(tx)
    return tx


def _library(name: str, field: str) -> Callable[..., Any]:
    """``jopt.<name>``, or a `ConfigError` on ``field`` if this jopt lacks it."""
    found = getattr(jopt, name, None)
    if found is None:
        raise ConfigError(field, None, f"needs jopt.{name}, which this version of jopt lacks")
    return found


def learning_rate(opt_state: Any) -> float | None:
    """The learning rate the next update will use, read with `jopt.hyperparams`.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.examples.mnist.config import learning_rate
        >>> learning_rate(jopt.torch.SGD(lr=0.25).init(jnp.zeros(1)))
        0.25
    """
    values = jopt.hyperparams(opt_state)
    for name, value in values.items():
        if name.rsplit("/", 1)[-1] in ("learning_rate", "lr"):
            return float(value)
    return None
