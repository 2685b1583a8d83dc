"""State dicts: an optimizer state as a flat ``{key path: numpy array}`` mapping, and back.

``state_dict(state)`` is what torch's ``optimizer.state_dict()`` is for a jopt state:
a flat mapping that ``numpy.savez``, orbax or any key-value store can write, with
readable keys. ``load_state_dict(template, d)`` puts the values back into a state that
``tx.init`` (or ``jax.eval_shape(tx.init, params)``) made, and refuses anything that
does not fit, listing every problem at once.

**Keys.** A key is the ``/``-joined path to the value in the state
(:func:`jopt.tree.key_path_str`): NamedTuple fields by name, tuple and list entries by
index, dict entries by key, so ``state.inner_state.inner_state[0].mu`` is reached by
keys starting ``inner_state/inner_state/0/mu``. Structural field names are kept: they
make keys unambiguous by construction (dropping them collides as soon as a wrapper
and the block it wraps both have a ``count``), and a key tells you where the value
lives. Two values are keyed by what they mean rather than by how they are stored:

- Fused buffers (:func:`jopt.fuse`) are unpacked to the parameters' key paths:
  ``inner_state/inner_state/0/mu/layers/0/w``, not ``.../mu/<packed float32>``. The
  keys do not change when a leaf crosses ``max_leaf_size`` or the packing changes.
- The hyperparameter vector of :func:`jopt.with_hyperparams` is keyed by name:
  ``values/lr``, ``values/betas``. Each entry stacks the stored value and the part
  that rounding it lost (``[hi, lo]``, shape ``(2,)``, or ``(2, n)`` for a tuple such
  as ``betas``; see :class:`jopt.tree.SplitScalar`), so a trajectory continues bit for
  bit. Loading a state saved from an optimizer with other hyperparameter names (a
  ``jopt.adam`` state into a ``jopt.torch.Adam``) is an error that says so, never a
  reinterpretation of the packed vector.

Static parts of the state (``HyperSpec``, ``Layout``: jax static pytree nodes) hold no
arrays and are not in the dict; they come from the template.

**Values** are numpy arrays: fresh, writable host copies. A state dict is a snapshot,
not a view of device buffers that the next donated step would invalidate, and it is
ready for ``numpy.savez``. bfloat16 entries come back from ``numpy.load`` as raw
2-byte voids (``|V2``); :func:`load_state_dict` reads those as the template's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np

from jopt import tree as jtree
from jopt.base import OptState
from jopt.fused import FusedState, Layout
from jopt.hyperparams import HyperparamsState, HyperSpec, _find, _total, check_hyperparam

__all__ = ["IncompatibleKeys", "StateDictError", "load_state_dict", "state_dict"]

ROOT_KEY = "<root>"
"""The key of a state that is a single array (its key path is empty)."""


class StateDictError(ValueError):
    """A state dict does not fit the template; the message lists every problem.

    Attributes:
        missing_keys: keys the template has and the state dict lacks.
        unexpected_keys: keys the state dict has and the template lacks.
        mismatched_keys: keys whose shape, dtype or hyperparameter value is wrong.
    """

    def __init__(
        self,
        problems: list[str],
        missing_keys: list[str],
        unexpected_keys: list[str],
        mismatched_keys: list[str],
    ):
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"the state dict does not match the template ({count}):\n{lines}")
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.mismatched_keys = mismatched_keys


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` skipped (torch's ``_IncompatibleKeys``).

    Example: momentum added since the state was saved; the new buffer starts afresh.

        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"w": jnp.zeros(2)}
        >>> d = jopt.state_dict(jopt.sgd(0.1).init(params))
        >>> template = jopt.sgd(0.1, momentum=0.9).init(params)
        >>> state, skipped = jopt.load_state_dict(template, d, strict=False)
        >>> skipped.missing_keys
        ['values/momentum', 'inner_state/inner_state/0/count', 'inner_state/inner_state/0/trace/w']
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


# -- the view: the state with fused buffers unpacked and hyperparameters by name -----


def _is_special(node: Any) -> bool:
    return isinstance(node, (HyperparamsState, FusedState))


def _is_buffers(layout: Layout, node: Any) -> bool:
    """Whether ``node`` is a dict of fused buffers of ``layout`` (a moment, a trace, ...)."""
    if not isinstance(node, dict) or not layout.buffers or len(node) != len(layout.buffers):
        return False
    for key, shape, _ in layout.buffers:
        if key not in node or tuple(getattr(node[key], "shape", (None,))) != tuple(shape):
            return False
    return True


def _unpack_buffers(layout: Layout, buffers: dict[str, Any]) -> Any:
    """The buffers as a tree shaped like the parameters (numpy arrays or tracers)."""
    leaves = []
    for (key, offset), shape in zip(layout.slots, layout.shapes, strict=True):
        buffer = buffers[key]
        if key in layout.packed:
            size = int(np.prod(shape, dtype=np.int64))
            leaves.append(buffer[offset : offset + size].reshape(shape))
        else:
            leaves.append(buffer)
    return jax.tree.unflatten(layout.treedef, leaves)


def _pack_buffers(layout: Layout, tree: Any) -> dict[str, np.ndarray]:
    """The inverse of :func:`_unpack_buffers`, on the host."""
    pieces: dict[str, list[np.ndarray]] = {key: [] for key, _, _ in layout.buffers}
    for leaf, (key, _) in zip(layout.treedef.flatten_up_to(tree), layout.slots, strict=True):
        leaf = np.asarray(leaf)
        pieces[key].append(leaf.reshape(-1) if key in layout.packed else leaf)
    return {
        key: parts[0] if len(parts) == 1 and key not in layout.packed else np.concatenate(parts)
        for key, parts in pieces.items()
    }


def _hyper_index(spec: HyperSpec) -> dict[str, np.ndarray]:
    """For each hyperparameter, the positions of its ``hi`` and ``lo`` parts: ``(2, ...)``."""
    total = _total(spec)
    out = {}
    for name, (start, size) in spec.offsets().items():
        positions = np.arange(start, start + max(size, 1))
        index = np.stack([positions, positions + total])
        out[name] = index if size else index[:, 0]
    return out


def _view(state: OptState) -> Any:
    """``state`` with fused buffers unpacked and hyperparameter vectors as dicts by name.

    Works on numpy leaves and on tracers (``jax.eval_shape(_view, template)``).
    """

    def visit(node: Any) -> Any:
        if isinstance(node, HyperparamsState):
            # the view holds a dict where the state holds the packed vector
            named: Any = {name: node.values[i] for name, i in _hyper_index(node.spec).items()}
            return node._replace(values=named, inner_state=_view(node.inner_state))
        if isinstance(node, FusedState):
            layout = node.layout
            inner = jax.tree.map(
                lambda x: _unpack_buffers(layout, x) if _is_buffers(layout, x) else x,
                _view(node.inner_state),
                is_leaf=lambda x: _is_buffers(layout, x),
            )
            return node._replace(inner_state=inner)
        return node

    return jax.tree.map(visit, state, is_leaf=_is_special)


def _unview(template: OptState, view: Any) -> Any:
    """The inverse of :func:`_view`: a state structured like ``template``, numpy leaves."""

    def visit(t: Any, v: Any) -> Any:
        if isinstance(t, HyperparamsState):
            values: Any = np.zeros(t.values.shape, t.values.dtype)  # placed on device later
            for name, index in _hyper_index(t.spec).items():
                values[index] = v.values[name]
            return t._replace(
                count=v.count, values=values, inner_state=_unview(t.inner_state, v.inner_state)
            )
        if isinstance(t, FusedState):
            layout = t.layout
            middle = jax.eval_shape(_view, t.inner_state)  # the inner view, buffers packed
            inner = jax.tree.map(
                lambda m, x: _pack_buffers(layout, x) if _is_buffers(layout, m) else x,
                middle,
                v.inner_state,
                is_leaf=lambda m: _is_buffers(layout, m),
            )
            return t._replace(inner_state=_unview(t.inner_state, inner))
        return v

    return jax.tree.map(visit, template, view, is_leaf=_is_special)


def _keyed(view: Any) -> tuple[list[str], list[Any], Any]:
    """Keys, leaves and treedef of a view; raises if two paths render to the same key."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(view)
    keys = [jtree.key_path_str(path) or ROOT_KEY for path, _ in flat]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(
            f"state_dict: key paths {dupes} occur twice (a dict key containing '/'?); "
            "rename the parameters so that their '/'-joined paths are unique"
        )
    return keys, [leaf for _, leaf in flat], treedef


def _host_copy(state: OptState) -> Any:
    """Every leaf as a fresh numpy array; device-to-host transfers start together."""
    leaves, treedef = jax.tree.flatten(state)
    for leaf in leaves:
        if isinstance(leaf, jax.Array):
            leaf.copy_to_host_async()
    return jax.tree.unflatten(treedef, [np.array(leaf) for leaf in leaves])


def state_dict(state: OptState) -> dict[str, np.ndarray]:
    """The arrays of an optimizer state as a flat dict keyed by readable ``/`` paths.

    Keys are the paths to the values in the state, with fused buffers unpacked to the
    parameters' paths and hyperparameters keyed by name (see :mod:`jopt.state`); the
    values are fresh numpy arrays (host copies). Static parts of the state are not in
    the dict: :func:`load_state_dict` takes them from its template.

    Args:
        state: any optimizer state (jopt's, optax's, a mix in a ``chain``).

    Returns:
        A dict from key to numpy array, in the order of the state's leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> state = jopt.sgd(0.1, momentum=0.9).init({"w": jnp.zeros(2)})
        >>> d = jopt.state_dict(state)
        >>> list(d)
        ['count', 'values/learning_rate', 'values/momentum', 'inner_state/inner_state/0/count',
         'inner_state/inner_state/0/trace/w']
        >>> d["values/learning_rate"]  # the stored value and what rounding to float32 lost
        array([ 1.0000000e-01, -1.4901161e-09], dtype=float32)
    """
    keys, leaves, _ = _keyed(_view(_host_copy(state)))
    return dict(zip(keys, leaves, strict=True))


def _describe(x: Any) -> str:
    """``float32[2, 3]``: the dtype and shape of an array or a ``ShapeDtypeStruct``."""
    return f"{np.dtype(x.dtype).name}{list(x.shape)}"


def _as_template_dtype(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Reads raw voids (how ``numpy.save`` stores bfloat16) as ``dtype`` of the same size."""
    if (
        value.dtype.type is np.void
        and value.dtype.fields is None
        and dtype.type is not np.void
        and value.dtype.itemsize == dtype.itemsize
    ):
        return value.view(dtype)
    return value


class _HyperCheck(NamedTuple):
    renamed: list[str]  # one line per optimizer whose hyperparameter names differ
    renamed_keys: set[str]  # the keys those lines cover
    out_of_bounds: list[str]
    out_of_bounds_keys: list[str]


def _check_hyperparams(
    template: OptState, d: Mapping[str, Any], given: dict[str, np.ndarray], mismatched: list[str]
) -> _HyperCheck:
    """Hyperparameter names that differ from the template's, and values out of bounds."""
    check = _HyperCheck([], set(), [], [])
    for _, full, node in _find(template):
        spec = node.spec
        prefix = f"{full}/values/" if full else "values/"
        saved = [
            k[len(prefix) :]
            for k in d
            if isinstance(k, str) and k.startswith(prefix) and "/" not in k[len(prefix) :]
        ]
        if saved and sorted(saved) != sorted(spec.names):
            check.renamed.append(
                f"'{prefix}*': hyperparameters {sorted(saved)} in the state dict, "
                f"{sorted(spec.names)} in the template ({spec.owner}): the state dict was "
                "saved from a different optimizer"
            )
            check.renamed_keys.update(prefix + n for n in (*saved, *spec.names))
            continue
        bounds = dict(spec.bounds)
        for name in spec.names:
            key = prefix + name
            value = given.get(key)
            if name not in bounds or value is None or key in mismatched:
                continue
            exact = value[0].astype(np.float64) + value[1].astype(np.float64)
            try:
                check_hyperparam(name, exact if exact.ndim else float(exact), bounds[name])
            except ValueError as error:
                check.out_of_bounds.append(f"'{key}': {error} ({spec.owner})")
                check.out_of_bounds_keys.append(key)
    return check


@overload
def load_state_dict(
    template: OptState, state_dict: Mapping[str, Any], strict: Literal[True] = True
) -> OptState: ...


@overload
def load_state_dict(
    template: OptState, state_dict: Mapping[str, Any], strict: Literal[False]
) -> tuple[OptState, IncompatibleKeys]: ...


def load_state_dict(template: OptState, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
    """A state with the template's structure and static parts and the state dict's values.

    Every key of the template must be in ``state_dict`` with the same shape and dtype,
    and ``state_dict`` must have no other key; hyperparameters must have the
    template's names and lie in its optimizer's bounds. Otherwise one
    :class:`StateDictError` lists every problem. The arrays are placed like the
    template's leaves (the same sharding, committed or not), so a jitted step taking
    the loaded state does not recompile.

    With ``strict=False`` (torch's ``load_state_dict(..., strict=False)``), missing keys
    keep the template's values and unexpected keys are ignored, and both are returned;
    shapes, dtypes and hyperparameter bounds are still checked. A hyperparameter whose
    name the template lacks is then an unexpected key (it is never loaded into another
    hyperparameter's slot). dtypes are never converted: cast the dict yourself if a
    float64 state should continue in float32.

    Args:
        template: a state of the target optimizer, e.g. ``tx.init(params)``, or its
            abstract form ``jax.eval_shape(tx.init, params)`` (with ``strict=False``,
            only a concrete template can fill missing keys).
        state_dict: a mapping from key to array, as :func:`state_dict` returns (the
            ``NpzFile`` that ``numpy.load`` returns works as it is).
        strict: refuse missing and unexpected keys.

    Returns:
        The state; with ``strict=False``, ``(state, IncompatibleKeys(missing_keys,
        unexpected_keys))``.

    Raises:
        StateDictError: listing missing, unexpected and mismatched keys.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import jopt
        >>> params = {"w": jnp.zeros(2)}
        >>> d = jopt.state_dict(jopt.sgd(0.1, momentum=0.9).init(params))
        >>> state = jopt.load_state_dict(jopt.sgd(0.5, momentum=0.9).init(params), d)
        >>> round(float(jopt.hyperparams(state)["learning_rate"]), 6)  # the saved one
        0.1
        >>> jopt.load_state_dict(jopt.torch.SGD(lr=0.1, momentum=0.9).init(params), d)
        Traceback (most recent call last):
        ...
        jopt.state.StateDictError: the state dict does not match the template (1 problem):
          'values/*': hyperparameters ['learning_rate', 'momentum'] in the state dict,
          ['dampening', 'lr', 'momentum'] in the template (torch.SGD): the state dict was
          saved from a different optimizer
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict: state_dict must be a mapping from key to array, got "
            f"{type(state_dict).__name__}"
        )
    expected = jax.eval_shape(_view, template)
    keys, specs, treedef = _keyed(expected)
    by_key = dict(zip(keys, specs, strict=True))
    given: dict[str, np.ndarray] = {}
    mismatched: list[str] = []
    for key, spec in by_key.items():
        if key in state_dict:
            value = _as_template_dtype(np.asarray(state_dict[key]), np.dtype(spec.dtype))
            given[key] = value
            if value.shape != tuple(spec.shape) or value.dtype != spec.dtype:
                mismatched.append(key)
    missing = [k for k in keys if k not in state_dict]
    unexpected = sorted((k for k in state_dict if k not in by_key), key=str)

    hyper = _check_hyperparams(template, state_dict, given, mismatched)
    problems: list[str] = []
    if strict:
        problems += hyper.renamed
        problems += [
            f"missing '{k}': expected {_describe(by_key[k])}"
            for k in missing
            if k not in hyper.renamed_keys
        ]
        problems += [
            f"unexpected '{k}': {_describe(np.asarray(state_dict[k]))}"
            for k in unexpected
            if k not in hyper.renamed_keys
        ]
    problems += hyper.out_of_bounds
    problems += [
        f"'{k}': expected {_describe(by_key[k])}, got {_describe(given[k])}" for k in mismatched
    ]
    if problems:
        raise StateDictError(
            problems,
            missing if strict else [],
            [str(k) for k in unexpected] if strict else [],
            mismatched + hyper.out_of_bounds_keys,
        )

    if missing:
        if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(template)):
            raise StateDictError(
                [f"missing '{k}': an abstract template cannot fill it" for k in missing],
                missing,
                [],
                [],
            )
        fill_keys, fill_leaves, _ = _keyed(_view(_host_copy(template)))
        fill = dict(zip(fill_keys, fill_leaves, strict=True))
        given.update({k: fill[k] for k in missing})
    view = jax.tree.unflatten(treedef, [given[k] for k in keys])
    state = _place(template, _unview(template, view))
    return state if strict else (state, IncompatibleKeys(missing, unexpected))


def _place(template: OptState, host: OptState) -> OptState:
    """Moves host arrays to where the template's leaves live.

    A leaf committed to a sharding (or an abstract one that names one) gets that
    sharding; others stay uncommitted, as ``tx.init`` leaves them: jit's cache tells the
    two apart, and the loaded state must hit the same compiled step.
    """

    def put(t: Any, x: Any) -> jax.Array:
        if isinstance(t, jax.Array) and t.committed:
            return jax.device_put(x, t.sharding)
        if isinstance(t, jax.ShapeDtypeStruct) and t.sharding is not None:
            return jax.device_put(x, t.sharding)
        return jnp.asarray(x)

    return jax.tree.map(put, template, host)
