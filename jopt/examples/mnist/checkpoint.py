"""Checkpoints of a training run with orbax-checkpoint: saved atomically, resumed exactly.

A checkpoint is one folder ``<checkpoint_dir>/<step>/`` holding two items:

- ``state``: the arrays, ``{"params": ..., "opt_state": ..., "key": ...}`` (the
  parameters, the whole optimizer state with its step counts and hyperparameters,
  and the PRNG key that orders the data, as raw ``uint32`` key data);
- ``meta``: JSON, ``{"config": ..., "step": ..., "n_train": ..., "history": ...,
  "epoch": {...}}``: the run's `Config`, the step, the size of the training set, the
  epoch summaries so far and the running sums of the current epoch.

orbax writes a checkpoint into a temporary folder and renames it into place once every
file is written, so a crash (even SIGKILL) during a save leaves the previous checkpoints
intact and the half-written one is never read. Saves run in a background thread: the
arrays are copied to host memory first, so training continues at once.

`Resume` decides where `jopt.examples.mnist.train` starts: afresh, or from the newest
checkpoint, which must come from the same run (`check_resumable` lists every setting
that differs); `restore` reads a finished run back as a `History`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jopt.flat
from jopt.examples.mnist import model as mlp
from jopt.examples.mnist.config import Config, build_optimizer
from jopt.examples.mnist.report import EpochRecord, History, Reporter

__all__ = ["CheckpointError", "Checkpoints", "ResumeError", "restore"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, or of another run."""


def _quiet_orbax() -> None:
    # orbax logs every save at INFO through absl; keep the terminal for the progress bar.
    for name in ("absl", "orbax", "orbax.checkpoint"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Checkpoints:
    """The checkpoints in one folder: save, list, read back.

    Args:
        directory: the folder (created on the first save).
        keep: how many checkpoints to keep; older ones are deleted after a save.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from jopt.examples.mnist.checkpoint import Checkpoints
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with Checkpoints(d) as checkpoints:
        ...         checkpoints.save(7, {"w": np.arange(3.0)}, {"note": "hi"})
        ...     with Checkpoints(d) as checkpoints:
        ...         step = checkpoints.latest()
        ...         state, meta = checkpoints.restore(step, {"w": np.zeros(3)})
        >>> step, state["w"], meta
        (7, array([0., 1., 2.]), {'note': 'hi'})
    """

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 3) -> None:
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        self.directory = Path(directory).expanduser().absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Starts saving ``state`` (a pytree of arrays) and ``meta`` (JSON) as ``step``.

        The arrays are copied to host memory before this returns, so the caller may
        donate or overwrite them; the files are written in the background (a later
        save, `wait` or `close` waits for them).
        """
        host = jax.device_get(state)
        args = self._ocp.args.Composite(
            state=self._ocp.args.StandardSave(host), meta=self._ocp.args.JsonSave(dict(meta))
        )
        self._manager.save(step, args=args, force=True)

    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON saved with checkpoint ``step``."""
        try:
            restored = self._manager.restore(
                step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
            )
        except Exception as e:  # orbax raises many kinds; name the checkpoint
            raise CheckpointError(
                f"cannot read the metadata of the checkpoint {self.directory / str(step)}: {e}"
            ) from e
        return dict(restored["meta"])

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """Checkpoint ``step`` as ``(state, meta)``; ``state`` takes ``template``'s structure.

        ``template`` is a pytree like the saved state (arrays or
        ``jax.ShapeDtypeStruct``; their shardings place the restored arrays). A
        different tree (another model or optimizer) is a `CheckpointError` that names
        the first entries that differ.
        """
        abstract = jax.tree.map(_abstract, template)
        args = self._ocp.args.Composite(
            state=self._ocp.args.StandardRestore(abstract), meta=self._ocp.args.JsonRestore()
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:
            detail = " ".join(str(e).split())
            if len(detail) > 600:
                detail = detail[:600] + " ..."
            raise CheckpointError(
                f"the checkpoint {self.directory / str(step)} does not fit this run's model and "
                f"optimizer state: {detail}"
            ) from e
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves, then releases orbax's threads."""
        self._manager.wait_until_finished()
        self._manager.close()


def _abstract(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, np.ndarray | np.generic):
        return np.zeros(np.shape(leaf), np.asarray(leaf).dtype)
    return leaf


# --- resuming a run -------------------------------------------------------------------------

# Fields that may change between a checkpoint and the run that resumes it: they do not
# change the trajectory (``epochs`` only extends it, checked separately).
FREE_ON_RESUME = frozenset(
    {
        "epochs",
        "data_dir",
        "checkpoint_dir",
        "checkpoint_every",
        "keep_checkpoints",
        "resume",
        "metrics",
        "devices",
        "quiet",
    }
)


class ResumeError(CheckpointError):
    """A checkpoint folder that this run cannot continue from (or must not overwrite)."""


def check_resumable(meta: dict[str, Any], config: Config, n_train: int, where: str) -> None:
    """Raises `ResumeError` naming every field in which ``config`` differs from ``meta``."""
    saved = meta.get("config", {})
    current = config.to_json()
    free = set(FREE_ON_RESUME)
    if config.schedule not in ("constant", "step"):
        free.discard("epochs")  # the schedule's length is the run's
    differ = [
        f"  {name}: {saved.get(name)!r} in the checkpoint, {current[name]!r} now"
        for name in current
        if name not in free and saved.get(name) != current[name]
    ]
    if meta.get("n_train") != n_train:
        differ.append(
            f"  training set: {meta.get('n_train')} images in the checkpoint, {n_train} now"
        )
    if differ:
        raise ResumeError(
            f"cannot resume from {where}: it belongs to a different run:\n"
            + "\n".join(differ)
            + "\nresume with the checkpoint's settings, or use another checkpoint directory"
        )


def template(params: Any, opt_state: Any, key_data: Any) -> dict[str, Any]:
    """The tree a checkpoint's ``state`` item holds."""
    return {"params": params, "opt_state": opt_state, "key": key_data}


EMPTY_SUMS: dict[str, Any] = {"loss": 0.0, "hits": 0.0, "steps": 0, "examples": 0, "time": 0.0}
"""The running sums of an epoch, saved with a mid-epoch checkpoint."""


@dataclasses.dataclass
class Resume:
    """Where a run starts: afresh, or from the newest checkpoint of the same run.

    `open` checks the checkpoint's metadata (before anything is compiled, so a
    mismatch fails fast); `restore` reads its arrays into the fresh run's structure.
    """

    step: int = 0
    history: list[EpochRecord] = dataclasses.field(default_factory=list)
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    sums: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(EMPTY_SUMS))
    elapsed_before: float = 0.0
    checkpoints: Checkpoints | None = None
    latest: int | None = None

    @classmethod
    def open(cls, config: Config, n_train: int, reporter: Reporter) -> Resume:
        """Reads and checks the newest checkpoint's metadata (raises `ResumeError`)."""
        if config.checkpoint_dir is None:
            return cls()
        checkpoints = Checkpoints(config.checkpoint_dir, keep=config.keep_checkpoints)
        try:
            latest = checkpoints.latest()
            if latest is None:
                if config.resume:
                    reporter.message(f"no checkpoint in {checkpoints.directory}: starting afresh")
                return cls(checkpoints=checkpoints)
            if not config.resume:
                raise ResumeError(
                    f"{checkpoints.directory} already holds checkpoints (newest: step {latest}); "
                    f"resume from it (--resume), or choose another checkpoint directory"
                )
            meta = checkpoints.read_meta(latest)
            check_resumable(meta, config, n_train, str(checkpoints.directory / str(latest)))
        except BaseException:
            checkpoints.close()
            raise
        return cls(
            step=int(meta["step"]),
            history=[EpochRecord(**r) for r in meta["history"]],
            curve=[(int(s), float(v)) for s, v in meta["curve"]],
            sums={**EMPTY_SUMS, **meta["epoch"]},
            elapsed_before=float(meta["elapsed"]),
            checkpoints=checkpoints,
            latest=latest,
        )

    def restore(self, fresh: tuple[Any, Any, Any], steps: int, reporter: Reporter) -> tuple:
        """The checkpoint's ``(params, opt_state, key_data)``, or ``fresh`` when starting."""
        if self.latest is None:
            return fresh
        assert self.checkpoints is not None
        try:
            state, _ = self.checkpoints.restore(self.latest, template(*fresh))
        except BaseException:
            self.checkpoints.close()
            raise
        where = self.checkpoints.directory / str(self.latest)
        reporter.message(f"resumed from {where} (epoch {self.step // steps + 1}, step {self.step})")
        return state["params"], state["opt_state"], state["key"]

    def close(self) -> None:
        """Waits for the checkpoint saves in flight."""
        if self.checkpoints is not None:
            self.checkpoints.close()


def restore(checkpoint_dir: str | os.PathLike[str]) -> History:
    """The newest checkpoint in ``checkpoint_dir`` as a `History` (no training, no data).

    The run's `Config`, the epoch summaries and the loss curve are read from the
    checkpoint's metadata, the parameters and optimizer state from its arrays.

    Args:
        checkpoint_dir: a folder written by `train`.

    Returns:
        The `History` as of the checkpoint: ``params``, ``opt_state``, ``epochs``.
    """
    with Checkpoints(checkpoint_dir) as checkpoints:
        latest = checkpoints.latest()
        if latest is None:
            raise CheckpointError(f"no checkpoint in {checkpoints.directory}")
        meta = checkpoints.read_meta(latest)
        config = Config.from_json(meta["config"])
        steps = -(-int(meta["n_train"]) // config.batch_size)
        dtype = jnp.bfloat16 if config.precision == "bf16" else None
        apply, params = mlp.init(config.hidden, 0, dtype=dtype)  # a template: overwritten
        if config.flat:
            params = jopt.flat.flatten(params)
        tx = build_optimizer(config, steps)
        key_data = jax.random.key_data(jax.random.key(0))
        state, meta = checkpoints.restore(latest, template(params, tx.init(params), key_data))
    params = state["params"]
    return History(
        config=config,
        epochs=[EpochRecord(**r) for r in meta["history"]],
        curve=[(int(s), float(v)) for s, v in meta["curve"]],
        params=jopt.flat.unflatten(params) if config.flat else params,
        opt_state=state["opt_state"],
        apply=apply,
        wall_time=float(meta["elapsed"]),
        setup_time=0.0,
        compile_time=0.0,
        devices=config.devices,
    )
