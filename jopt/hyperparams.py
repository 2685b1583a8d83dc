"""Hyperparameters carried in the optimizer state: read them, change them, no recompile.

optax keeps hyperparameters in closures, so a new learning rate is a new program and
reading the current one needs a wrapper. jopt keeps them in the state, as data:

    >>> import jax.numpy as jnp
    >>> import jopt
    >>> tx = jopt.adam(1e-3)
    >>> state = tx.init({"w": jnp.zeros(3)})
    >>> round(float(jopt.hyperparams(state)["learning_rate"]), 6)
    0.001
    >>> state = jopt.set_hyperparams(state, learning_rate=1e-4)
    >>> round(float(jopt.hyperparams(state)["learning_rate"]), 6)
    0.0001

A value given as a schedule is evaluated each step; the state holds the value the
*next* update will use (what torch's ``param_groups[i]["lr"]`` shows). Structural
values that were compiled out at construction (a weight decay of exactly 0 that
removes the decay term, an initial accumulator value that only matters in ``init``)
are reported but cannot be set.

Every optimizer of both doors is built with :func:`with_hyperparams`, which is also
the tool for writing new ones: it takes a ``build(**hyperparams)`` function that
returns the transformation for given (possibly traced) values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt import stepping
from jopt import tree as jtree
from jopt.base import GradientTransformation, OptState, Params, Updates

__all__ = [
    "HyperparamsState",
    "Interval",
    "check_hyperparam",
    "hyperparams",
    "set_hyperparams",
    "with_hyperparams",
]


@dataclasses.dataclass(frozen=True)
class Interval:
    """An allowed range for a hyperparameter, printed the way error messages need it.

    Example:
        >>> from jopt.hyperparams import Interval
        >>> str(Interval(0.0, 1.0, high_open=True))
        'in [0, 1)'
        >>> Interval(0.0, None).contains(-1.0)
        False
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (NaN never does)."""
        if math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def __str__(self) -> str:
        def fmt(x: float) -> str:
            return f"{x:g}"

        if self.high is None and self.low is not None:
            return f"{'>' if self.low_open else '>='} {fmt(self.low)}"
        if self.low is None and self.high is not None:
            return f"{'<' if self.high_open else '<='} {fmt(self.high)}"
        if self.low is None and self.high is None:
            return "any number"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{fmt(self.low)}, {fmt(self.high)}{right}"  # type: ignore[arg-type]


NONNEGATIVE = Interval(0.0, None)
POSITIVE = Interval(0.0, None, low_open=True)
UNIT = Interval(0.0, 1.0)
UNIT_OPEN = Interval(0.0, 1.0, high_open=True)


def _is_concrete(value: Any) -> bool:
    return not jtree.is_traced(value)


def check_hyperparam(name: str, value: Any, interval: Interval) -> None:
    """Raises ``ValueError`` naming ``name``, its value and the range if out of range.

    Traced values (inside ``jit``) cannot be checked and pass. Tuples and arrays are
    checked element by element (``betas[1]=1.5 must be in [0, 1)``).

    Example:
        >>> from jopt.hyperparams import check_hyperparam, UNIT_OPEN
        >>> check_hyperparam("b1", 1.5, UNIT_OPEN)
        Traceback (most recent call last):
        ...
        ValueError: b1=1.5 must be in [0, 1)
    """
    if not _is_concrete(value):
        return
    if isinstance(value, jtree.SplitScalar):
        value = np.asarray(value.hi, np.float64) + np.asarray(value.lo, np.float64)
    array = np.asarray(value)
    if array.ndim == 0:
        number = float(array)
        if not interval.contains(number):
            raise ValueError(f"{name}={_fmt(value)} must be {_range_words(interval)}")
        return
    for i, element in enumerate(array.reshape(-1)):
        if not interval.contains(float(element)):
            raise ValueError(
                f"{name}[{i}]={_fmt(element)} must be {_range_words(interval)} "
                f"(got {name}={_fmt(value)})"
            )


def _check_owned(owner: str, name: str, value: Any, interval: Interval) -> None:
    """:func:`check_hyperparam`, with the optimizer's name leading the message."""
    try:
        check_hyperparam(name, value, interval)
    except ValueError as error:
        raise ValueError(f"{owner}: {error}") from None


def _range_words(interval: Interval) -> str:
    return str(interval)


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    array = np.asarray(value)
    if array.ndim == 0:
        number = array.item()
        return repr(number) if isinstance(value, (int, float)) else f"{number!r}"
    return _fmt(tuple(array.tolist()))


@dataclasses.dataclass(frozen=True)
class HyperSpec:
    """Static description of the values in a :class:`HyperparamsState` (no arrays)."""

    owner: str
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    scheduled: frozenset[str]
    fixed: tuple[tuple[str, Any], ...]
    bounds: tuple[tuple[str, Interval], ...]

    def offsets(self) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = (start, size)
            start += max(size, 1)
        return out


jax.tree_util.register_static(HyperSpec)


class HyperparamsState(NamedTuple):
    """State of an optimizer built by :func:`with_hyperparams`.

    Attributes:
        count: int32 number of updates taken; drives scheduled hyperparameters.
        values: all numeric hyperparameters packed in one vector (one buffer to pass
            through ``jit`` instead of one per value), each as a ``hi`` part and the
            ``lo`` part that rounding to the storage dtype lost (see
            :class:`jopt.tree.SplitScalar`); read them by name with :func:`hyperparams`.
        inner_state: the state of the transformation built from those values.
        spec: static names, sizes, schedules and bounds.
    """

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as in optax)
    values: jax.Array
    inner_state: OptState
    spec: HyperSpec


def _hyper_dtype() -> np.dtype:
    return jnp.dtype(jnp.asarray(0.0).dtype)  # float64 when jax_enable_x64 is on


def _split(value: Any, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``value`` as ``hi + lo`` in ``dtype``; ``lo`` keeps what rounding to ``dtype`` lost.

    Only values known on the host (Python numbers, concrete arrays) have a ``lo``;
    a traced value is already rounded, so its ``lo`` is 0.
    """
    if _is_concrete(value):
        exact = np.asarray(value, np.float64)
        rounded = exact.astype(dtype)
        error = (exact - rounded.astype(np.float64)).astype(dtype)
        return jnp.asarray(rounded), jnp.asarray(error)
    hi = jnp.asarray(value).astype(dtype)
    return hi, jnp.zeros_like(hi)


def _total(spec: HyperSpec) -> int:
    return sum(max(size, 1) for size in spec.sizes)


def _pack(spec: HyperSpec, parts: Mapping[str, tuple[jax.Array, jax.Array]], dtype: Any):
    """One vector: every ``hi`` in name order, then every ``lo``."""
    if not spec.names:
        return jnp.zeros((0,), dtype)
    his, los = [], []
    for name, size in zip(spec.names, spec.sizes, strict=True):
        hi, lo = parts[name]
        his.append(jnp.reshape(hi.astype(dtype), (max(size, 1),)))
        los.append(jnp.reshape(lo.astype(dtype), (max(size, 1),)))
    return jnp.concatenate(his + los)


def _unpack(spec: HyperSpec, values: jax.Array) -> dict[str, jtree.SplitScalar]:
    out = {}
    total = _total(spec)
    for name, (start, size) in spec.offsets().items():
        if size == 0:
            out[name] = jtree.SplitScalar(values[start], values[total + start])
        else:
            out[name] = jtree.SplitScalar(
                values[start : start + size], values[total + start : total + start + size]
            )
    return out


def with_hyperparams(
    build: Callable[..., GradientTransformation],
    /,
    *,
    owner: str,
    bounds: Mapping[str, Interval] | None = None,
    fixed: Mapping[str, Any] | None = None,
    **hyperparams: Any,
) -> GradientTransformation:
    """Builds a transformation whose numeric hyperparameters live in its state.

    ``build(**values)`` must return a :class:`~jopt.GradientTransformation` for the
    given values, which are jax scalars (tuples become 1-D arrays) and may be traced:
    ``build`` must not branch on them. It is called once per ``init`` and once per
    traced ``update``. Each hyperparameter is a number, a tuple of numbers (e.g.
    torch's ``betas``) or a schedule ``count -> value``; a schedule is evaluated at
    the number of updates taken so far. Values in ``fixed`` are passed to ``build``
    as they are (Python values), are reported by :func:`hyperparams`, and cannot be
    changed: use it for values that shape the program (a zero weight decay).

    Values are validated against ``bounds`` now (a schedule at step 0) and whenever
    :func:`set_hyperparams` changes them.

    Args:
        build: returns the transformation for given hyperparameter values.
        owner: a short name used in error messages, e.g. ``"adam"`` or ``"torch.SGD"``.
        bounds: the allowed range of each hyperparameter, by name.
        fixed: values compiled into the program, by name.
        **hyperparams: the hyperparameters, by the names ``build`` takes.

    Returns:
        A transformation whose state is a :class:`HyperparamsState`.

    Example: an SGD whose step size can be changed while training.

        >>> import jax.numpy as jnp
        >>> import jopt
        >>> from jopt.hyperparams import NONNEGATIVE
        >>> tx = jopt.with_hyperparams(
        ...     lambda step_size: jopt.scale(-step_size),
        ...     owner="my_sgd", bounds={"step_size": NONNEGATIVE}, step_size=0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> tx.update(jnp.ones(2), state)[0]
        Array([-0.1, -0.1], dtype=float32)
        >>> state = jopt.set_hyperparams(state, step_size=0.5)
        >>> tx.update(jnp.ones(2), state)[0]
        Array([-0.5, -0.5], dtype=float32)
    """
    bounds = dict(bounds or {})
    fixed = dict(fixed or {})
    schedules: dict[str, Callable[[jax.Array], Any]] = {}
    sizes = []
    for name, value in hyperparams.items():
        if callable(value):
            schedules[name] = value
            sizes.append(0)
            initial = value(jnp.zeros((), jnp.int32))
        else:
            initial = value
            shape = np.shape(value)
            if len(shape) > 1:
                raise ValueError(f"{owner}: hyperparameter {name} must be a scalar or a 1-D tuple")
            sizes.append(0 if shape == () else shape[0])
        if name in bounds:
            _check_owned(owner, name, initial, bounds[name])
    for name, value in fixed.items():
        if name in bounds:
            _check_owned(owner, name, value, bounds[name])
    spec = HyperSpec(
        owner=owner,
        names=tuple(hyperparams),
        sizes=tuple(sizes),
        scheduled=frozenset(schedules),
        fixed=tuple(fixed.items()),
        bounds=tuple(bounds.items()),
    )

    def evaluate(count: jax.Array, current: jax.Array | None) -> jax.Array:
        dtype = _hyper_dtype() if current is None else current.dtype
        old = None if current is None else _unpack(spec, current)
        parts = {}
        for name in spec.names:
            if name in schedules:
                parts[name] = _split(schedules[name](count), dtype)
            elif old is not None:
                parts[name] = (old[name].hi, old[name].lo)
            else:
                parts[name] = _split(hyperparams[name], dtype)
        return _pack(spec, parts, dtype)

    def init(params: Params) -> HyperparamsState:
        count = jnp.zeros((), jnp.int32)
        values = evaluate(count, None)
        inner = build(**_unpack(spec, values), **fixed)
        return HyperparamsState(count, values, inner.init(params), spec)

    def inner_of(state: Any, what: str) -> GradientTransformation:
        if not isinstance(state, HyperparamsState) or state.spec != spec:
            raise TypeError(
                f"{owner}.{what} got a state that {owner}.init did not make: {type(state).__name__}"
            )
        return build(**_unpack(spec, state.values), **fixed)

    def advanced(state: HyperparamsState, inner_state: OptState) -> HyperparamsState:
        count = jtree.safe_increment(state.count)
        values = evaluate(count, state.values) if schedules else state.values
        return HyperparamsState(count, values, inner_state, spec)

    def update(
        updates: Updates, state: HyperparamsState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, HyperparamsState]:
        inner = inner_of(state, "update")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        return updates, advanced(state, inner_state)

    def step(
        grads: Updates,
        state: HyperparamsState,
        params: Params,
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[Params, HyperparamsState]:
        inner = inner_of(state, "step")
        params, inner_state = stepping.step_scaled(
            inner, grads, state.inner_state, params, grad_scale, extra
        )
        return params, advanced(state, inner_state)

    return stepping.with_step(GradientTransformation(init, update), step)


def _is_hyper(x: Any) -> bool:
    return isinstance(x, HyperparamsState)


def _find(state: OptState, prefix: tuple = ()) -> list[tuple[str, str, HyperparamsState]]:
    """Every HyperparamsState in ``state`` (nested ones too) with its short and full path."""
    found = []
    flat, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_hyper)
    for path, node in flat:
        if _is_hyper(node):
            full_path = prefix + tuple(path)
            short = [e for e in full_path if not isinstance(e, jax.tree_util.GetAttrKey)]
            found.append((jtree.key_path_str(short), jtree.key_path_str(full_path), node))
            inner_path = (*full_path, jax.tree_util.GetAttrKey("inner_state"))
            found.extend(_find(node.inner_state, inner_path))
    return found


def _replace_nodes(state: OptState, replace: Callable[[HyperparamsState], HyperparamsState]) -> Any:
    """Applies ``replace`` to every HyperparamsState, in the order :func:`_find` lists them."""

    def visit(node: Any) -> Any:
        if not _is_hyper(node):
            return node
        node = replace(node)
        return node._replace(inner_state=_replace_nodes(node.inner_state, replace))

    return jax.tree.map(visit, state, is_leaf=_is_hyper)


def _qualified_names(found: list[tuple[str, str, HyperparamsState]]) -> list[dict[str, str]]:
    """For each node, a map from its own hyperparameter names to the names users see.

    A clashing name is qualified by the node's path with the components that every
    node's path starts with left out (but never all of a node's path), so the names
    do not change when the whole optimizer is wrapped, e.g. in a chain after clipping:
    the groups of ``chain(clip, partition(...))`` are ``"head/..."``, not ``"1/head/..."``.
    """
    counts: dict[str, int] = {}
    for _, _, node in found:
        for name in _all_names(node.spec):
            counts[name] = counts.get(name, 0) + 1
    shorts = [short for short, _, _ in found]
    split = [short.split("/") if short else [] for short in shorts]
    limit = min((len(parts) for parts in split), default=1) - 1
    shared = 0
    while shared < limit and len({parts[shared] for parts in split}) == 1:
        shared += 1
    out = []
    for short, parts, (_, full, node) in zip(shorts, split, found, strict=True):
        qualifier = "/".join(parts[shared:]) if shorts.count(short) == 1 else full
        out.append(
            {
                name: (name if counts[name] == 1 or not qualifier else f"{qualifier}/{name}")
                for name in _all_names(node.spec)
            }
        )
    return out


def _all_names(spec: HyperSpec) -> list[str]:
    return list(spec.names) + [name for name, _ in spec.fixed]


def hyperparams(state: OptState) -> dict[str, Any]:
    """The current hyperparameters of every jopt optimizer inside ``state``, by name.

    Scheduled values are those the next update will use. A name that occurs in more
    than one optimizer of a chain or a partition is qualified by where that optimizer
    sits: its position in a chain (``"1/learning_rate"``) or its group label in
    :func:`jopt.partition` (``"head/learning_rate"``). The part of that path which all
    the optimizers in ``state`` share is left out, so wrapping the whole optimizer
    (``chain(clip, partition(...))``) renames nothing. Fixed values are returned as
    Python numbers; the others as jax arrays (scalars, or 1-D for tuples such as
    torch's ``betas``).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> state = jopt.torch.SGD(lr=0.1, momentum=0.9).init(jnp.zeros(2))
        >>> {k: round(float(v), 4) for k, v in jopt.hyperparams(state).items()}
        {'lr': 0.1, 'momentum': 0.9, 'dampening': 0.0, 'weight_decay': 0.0}
    """
    found = _find(state)
    out: dict[str, Any] = {}
    for (_, _, node), names in zip(found, _qualified_names(found), strict=True):
        values = _unpack(node.spec, node.values)
        for name in node.spec.names:
            out[names[name]] = values[name].hi
        for name, value in node.spec.fixed:
            out[names[name]] = value
    return out


def set_hyperparams(
    state: OptState, values: Mapping[str, Any] | None = None, /, **kwargs: Any
) -> OptState:
    """Returns ``state`` with some hyperparameters changed; the program is unchanged.

    Names are those :func:`hyperparams` reports. An unqualified name that several
    optimizers share sets it in all of them (as setting ``lr`` in every torch param
    group does); a qualified one (``"head/learning_rate"``, passed in the ``values``
    mapping) sets one; a name qualified by the optimizer's whole path
    (``"1/head/learning_rate"`` in ``chain(clip, partition(...))``) is accepted too.
    New values are validated against the optimizer's bounds and cast to the stored
    dtype, so a jitted step taking the new state does not recompile. Scheduled and
    fixed hyperparameters cannot be set.

    Args:
        state: a state containing one or more jopt optimizers.
        values: names (possibly with ``/``) to new values.
        **kwargs: more names to new values.

    Returns:
        The new state.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> state = jopt.sgd(0.1).init(jnp.zeros(2))
        >>> jopt.set_hyperparams(state, learning_rate=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: sgd: learning_rate=-1.0 must be >= 0

    Parameter groups: one group by its label, or all of them by the plain name.

        >>> params = {"body": jnp.zeros(2), "head": jnp.zeros(2)}
        >>> tx = jopt.chain(
        ...     jopt.scale(1.0),
        ...     jopt.partition({"body": jopt.sgd(0.1), "head": jopt.sgd(0.1)},
        ...                    {"body": "body", "head": "head"}))
        >>> state = jopt.set_hyperparams(tx.init(params), {"head/learning_rate": 0.5})
        >>> {k: round(float(v), 4) for k, v in jopt.hyperparams(state).items()}
        {'body/learning_rate': 0.1, 'head/learning_rate': 0.5}
        >>> state = jopt.set_hyperparams(state, learning_rate=0.01)
        >>> {k: round(float(v), 4) for k, v in jopt.hyperparams(state).items()}
        {'body/learning_rate': 0.01, 'head/learning_rate': 0.01}
    """
    wanted = dict(values or {})
    wanted.update(kwargs)
    found = _find(state)
    qualified = _qualified_names(found)
    available = sorted({q for names in qualified for q in names.values()})
    used: set[str] = set()
    replacements: dict[int, HyperparamsState] = {}
    for index, ((short, full, node), names) in enumerate(zip(found, qualified, strict=True)):
        spec = node.spec
        current = _unpack(spec, node.values)
        changed = False
        new_parts = {name: (v.hi, v.lo) for name, v in current.items()}
        for own, public in names.items():
            keys = [k for k in (public, own, f"{short}/{own}", f"{full}/{own}") if k in wanted]
            if not keys:
                continue
            key = keys[0]
            used.add(key)
            value = wanted[key]
            if own in dict(spec.fixed):
                raise ValueError(
                    f"{spec.owner}: {public} is fixed at {dict(spec.fixed)[own]!r}: it shaped "
                    f"the program at construction; build the optimizer with the value you want"
                )
            if own in spec.scheduled:
                raise ValueError(
                    f"{spec.owner}: {public} follows a schedule; build the optimizer with a "
                    f"different schedule (or a constant) to change it"
                )
            bound = dict(spec.bounds).get(own)
            if bound is not None:
                _check_owned(spec.owner, public, value, bound)
            old = current[own].hi
            if np.shape(value) != np.shape(old):
                raise ValueError(
                    f"{spec.owner}: {public} must have shape {list(np.shape(old))}, "
                    f"got {list(np.shape(value))}"
                )
            new_parts[own] = _split(value, old.dtype)
            changed = True
        if changed:
            packed = _pack(spec, new_parts, node.values.dtype)
            replacements[index] = node._replace(values=packed)
    unused = sorted(set(wanted) - used)
    if unused:
        raise KeyError(f"unknown hyperparameter(s) {unused}; this state has {available or 'none'}")

    counter = iter(range(len(found)))
    return _replace_nodes(state, lambda node: replacements.get(next(counter), node))
