"""Combinators: transformations built from other transformations.

``chain`` runs transformations in sequence. ``partition`` gives each group of
parameters its own transformation (torch's parameter groups), ``masked`` applies one
to some leaves only, and ``freeze`` / ``set_to_zero`` stop updates. ``labels_by_path``
names the groups with glob patterns on key paths.

Inner view. A transformation inside ``partition`` or ``masked`` sees the parameter
tree with every leaf outside its group replaced by ``None``, which jax treats as an
empty subtree. The view has the containers and key paths of the full tree, is built
the same way in ``init`` and ``update`` (so :func:`jopt.fuse` inside an inner
optimizer finds the layout it planned), and its leaves are exactly the group's
leaves, so the inner state holds nothing for the other groups.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

from jopt import stepping
from jopt import tree as jtree
from jopt.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    accepts_extra_args,
    call_update,
    stateless,
)

__all__ = [
    "MaskedState",
    "PartitionState",
    "chain",
    "freeze",
    "labels_by_path",
    "masked",
    "partition",
    "set_to_zero",
]

Mask = Any
"""A pytree of bools with the structure of the params (or a prefix of it), or one bool."""
Labels = Any
"""A pytree of hashable labels with the structure of the params (or a prefix of it)."""


def _check_transformation(tx: Any, where: str) -> None:
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"{where} is a {type(tx).__name__}, not a gradient transformation")


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations in sequence; the state is the tuple of their states.

    Update rule: ``u <- t_n(... t_2(t_1(u)))``, each ``t_i`` with its own state.
    Members may be optax transformations; extra keyword arguments reach every member
    that accepts them.

    Args:
        *transforms: the transformations, applied first to last.

    Returns:
        A transformation whose state is a tuple with one state per member.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.chain(jopt.scale(2.0), jopt.scale_by_learning_rate(0.1))
        >>> tx.update(jnp.array([1.0]), tx.init(None))[0]
        Array([-0.2], dtype=float32)
    """
    for i, tx in enumerate(transforms):
        _check_transformation(tx, f"chain: argument {i}")
    takes_extra = [accepts_extra_args(tx) for tx in transforms]

    def init(params: Params) -> tuple[OptState, ...]:
        return tuple(tx.init(params) for tx in transforms)

    def check_state(state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = len(state) if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state of {got}: "
                "pass the state that this chain's init returned"
            )

    def update(
        updates: Updates, state: tuple[OptState, ...], params: Params | None = None, **extra: Any
    ) -> tuple[Updates, tuple[OptState, ...]]:
        check_state(state)
        new_state = []
        for tx, s, extra_ok in zip(transforms, state, takes_extra, strict=True):
            updates, s = call_update(tx, updates, s, params, extra, extra_ok)
            new_state.append(s)
        return updates, tuple(new_state)

    chained = GradientTransformation(init, update)
    if not transforms or stepping.step_of(transforms[-1]) is None:
        return chained
    *first, last = transforms
    # A single leading scale (clip_by_global_norm) folds into the last member's step,
    # so the clipped gradients are never written out.
    fold = stepping.scale_of(first[0]) if len(first) == 1 else None

    def step(
        grads: Updates,
        state: tuple[OptState, ...],
        params: Params,
        grad_scale: jax.Array | None = None,
        **extra: Any,
    ) -> tuple[Params, tuple[OptState, ...]]:
        check_state(state)
        *first_states, last_state = state
        if fold is not None and grad_scale is None:
            grad_scale, s = fold(grads, first_states[0], params)
            new_states = [s]
        else:
            if grad_scale is not None:
                grads = stepping.scale_grads(grads, grad_scale)
                grad_scale = None
            new_states = []
            for tx, s, extra_ok in zip(first, first_states, takes_extra[:-1], strict=True):
                grads, s = call_update(tx, grads, s, params, extra, extra_ok)
                new_states.append(s)
        extra_ok = takes_extra[-1]
        params, s = stepping.step_scaled(
            last, grads, last_state, params, grad_scale, extra if extra_ok else {}
        )
        return params, (*new_states, s)

    return stepping.with_step(chained, step)


# -- views: one group's leaves in the full tree's containers --------------------------


def _spread(prefix: Any, tree: Any, names: tuple[str, str]) -> tuple[list[Any], list[int]]:
    """For each leaf of ``tree``, the leaf of ``prefix`` above it and that leaf's index.

    ``prefix`` has the structure of ``tree`` or of a prefix of it (a single value
    covers everything). Mismatches raise :class:`jopt.TreeMismatchError` naming a path.
    """
    prefix_leaves = jax.tree.leaves(prefix)
    prefix_def: Any = jax.tree.structure(prefix)
    try:
        subtrees = prefix_def.flatten_up_to(tree)
    except (ValueError, TypeError):
        _raise_prefix_mismatch(prefix, tree, names)
    values, owners = [], []
    for i, (value, subtree) in enumerate(zip(prefix_leaves, subtrees, strict=True)):
        count = len(jax.tree.leaves(subtree))
        values.extend([value] * count)
        owners.extend([i] * count)
    return values, owners


def _covers(outer: str, inner: str) -> bool:
    return outer == "" or inner == outer or inner.startswith(outer + "/")


def _raise_prefix_mismatch(prefix: Any, tree: Any, names: tuple[str, str]) -> NoReturn:
    a, b = names
    prefix_paths, tree_paths = jtree.paths(prefix), jtree.paths(tree)
    for path in tree_paths:
        if not any(_covers(p, path) for p in prefix_paths):
            inside = [p for p in prefix_paths if p.startswith(path + "/")]
            if inside:
                raise jtree.TreeMismatchError(
                    f"{b} has a subtree at '{path}' (e.g. '{inside[0]}') where {a} has a leaf"
                )
            raise jtree.TreeMismatchError(f"{b} has no entry for '{path}', which {a} has")
    for path in prefix_paths:
        if not any(_covers(path, p) for p in tree_paths):
            raise jtree.TreeMismatchError(f"{b} has '{path}', which {a} does not have")
    raise jtree.TreeMismatchError(
        f"{b} and {a} differ in their containers: {jax.tree.structure(prefix)} in {b}, "
        f"{jax.tree.structure(tree)} in {a}"
    )


def _view(leaves: list[Any], treedef: Any, keep: list[bool]) -> Any:
    """The tree with the leaves not kept replaced by ``None`` (an empty subtree)."""
    return jax.tree.unflatten(
        treedef, [x if k else None for x, k in zip(leaves, keep, strict=True)]
    )


def _leaves_like(tree: Any, treedef: Any, names: tuple[str, str]) -> list[Any]:
    """The leaves of ``tree``, which must have the structure ``treedef`` describes."""
    leaves, other = jax.tree.flatten(tree)
    if other != treedef:
        jtree.check_structure(
            jax.tree.unflatten(treedef, [0] * treedef.num_leaves), tree, names=names, shapes=False
        )
        raise jtree.TreeMismatchError(f"{names[1]} and {names[0]} differ: {other} vs {treedef}")
    return leaves


def _view_extra(
    extra: dict[str, Any], treedef: Any, keep: list[bool], enabled: bool
) -> dict[str, Any]:
    """Extra arguments shaped like the updates, cut to the same view (if ``enabled``)."""
    if not enabled:
        return extra
    out = {}
    for name, value in extra.items():
        leaves, other = jax.tree.flatten(value)
        out[name] = _view(leaves, treedef, keep) if other == treedef else value
    return out


def _merge_into(
    new_leaves: list[Any], view: Any, result: Any, positions: list[int], who: str
) -> None:
    """Writes the leaves an inner transformation returned back to their positions."""
    leaves, treedef = jax.tree.flatten(result)
    expected: Any = jax.tree.structure(view)
    if treedef != expected:
        jtree.check_structure(view, result, names=(f"the updates {who} got", f"{who}'s result"))
        raise jtree.TreeMismatchError(f"{who} returned updates of a different structure")
    for position, leaf in zip(positions, leaves, strict=True):
        new_leaves[position] = leaf


# -- masks -----------------------------------------------------------------------------


def _resolve(spec: Any, tree: Any) -> Any:
    """A mask or labels tree, or a function of the params returning one, for ``tree``."""
    return spec(tree) if callable(spec) else spec


def _mask_flags(mask: Mask, tree: Any, tree_name: str, owner: str) -> list[bool]:
    """One Python bool per leaf of ``tree``; the mask may be a prefix of the tree."""
    mask_tree = _resolve(mask, tree)
    values, owners = _spread(mask_tree, tree, names=(tree_name, "mask"))
    flags: dict[int, bool] = {}
    for value, index in zip(values, owners, strict=True):
        if index not in flags:
            flags[index] = _as_flag(value, index, mask_tree, owner)
    return [flags[index] for index in owners]


def _as_flag(value: Any, index: int, mask_tree: Any, owner: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    where = jtree.paths(mask_tree)[index]
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{owner}: the mask at '{where}' is a traced value; a mask decides the program's "
            "structure, so it must be Python bools (or concrete bool scalars)"
        )
    if getattr(value, "dtype", None) == jnp.bool_ and np.ndim(value) == 0:
        return bool(value)
    raise TypeError(f"{owner}: the mask at '{where}' must be a bool, got {value!r}")


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state, over the masked view of the params."""

    inner_state: OptState


def masked(
    inner: GradientTransformation,
    mask: Mask | Callable[[Params], Mask],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Applies ``inner`` to the leaves where ``mask`` is True; the others pass through.

    Update rule: ``u_i <- inner(u)_i`` where ``mask_i``, else ``u_i`` unchanged.

    ``inner`` sees the updates (and params) with the unselected leaves replaced by
    ``None``, jax's empty subtree, so its state holds nothing for them and its key
    paths are the real ones. A mask is a tree of bools (Python bools or concrete
    0-d bool arrays) with the structure of the params or a prefix of it (one bool
    covers a whole subtree), or a function of the params returning one; the
    function is called with the params in ``init`` and with the updates in
    ``update``, as in optax. The mask is static: it shapes the program.

    Args:
        inner: the transformation to apply to the selected leaves.
        mask: the selection, or a function of the params returning it.
        mask_compatible_extra_args: also cut extra keyword arguments that have the
            updates' structure (e.g. per-parameter tags) to the selected leaves.

    Returns:
        A transformation with a :class:`MaskedState`.

    Raises:
        jopt.TreeMismatchError: the mask's structure does not fit the params (names
            the path).
        TypeError: a mask leaf is not a bool (names the path).

    References:
        optax ``masked`` (same signature and semantics).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx = jopt.masked(jopt.scale(10.0), {"w": True, "b": False})
        >>> tx.update(params, tx.init(params))[0]
        {'b': Array([1., 1.], dtype=float32), 'w': Array([10., 10.], dtype=float32)}
    """
    _check_transformation(inner, "masked: inner")
    takes_extra = accepts_extra_args(inner)

    def init(params: Params) -> MaskedState:
        leaves, treedef = jax.tree.flatten(params)
        keep = _mask_flags(mask, params, "params", "masked")
        return MaskedState(inner.init(_view(leaves, treedef, keep)))

    def update(
        updates: Updates, state: MaskedState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, MaskedState]:
        if not isinstance(state, MaskedState):
            raise TypeError(
                f"masked.update got a {type(state).__name__}, not the MaskedState its init made"
            )
        leaves, treedef = jax.tree.flatten(updates)
        keep = _mask_flags(mask, updates, "updates", "masked")
        view = _view(leaves, treedef, keep)
        params_view = None
        if params is not None:
            params_view = _view(_leaves_like(params, treedef, ("updates", "params")), treedef, keep)
        extra = _view_extra(extra, treedef, keep, mask_compatible_extra_args)
        result, inner_state = call_update(
            inner, view, state.inner_state, params_view, extra, takes_extra
        )
        new_leaves = list(leaves)
        _merge_into(new_leaves, view, result, [i for i, k in enumerate(keep) if k], "masked inner")
        return jax.tree.unflatten(treedef, new_leaves), MaskedState(inner_state)

    return GradientTransformation(init, update)


def set_to_zero() -> GradientTransformation:
    """Maps every update to zero (keeping its shape and dtype); keeps no state.

    Update rule: ``u <- 0``. Inside :func:`partition` or :func:`masked` it freezes a
    group of parameters; under ``jit`` XLA then drops the work for them.

    References:
        optax ``set_to_zero``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> tx = jopt.set_to_zero()
        >>> tx.update({"w": jnp.array([1.0, -2.0])}, tx.init(None))[0]
        {'w': Array([0., 0.], dtype=float32)}
    """

    return stateless(lambda updates, params: jax.tree.map(jnp.zeros_like, updates))


def freeze(mask: Mask | Callable[[Params], Mask]) -> GradientTransformation:
    """Zeroes the updates where ``mask`` is True: those parameters stay where they are.

    Update rule: ``u_i <- 0`` where ``mask_i``, else ``u_i`` unchanged; that is,
    ``masked(set_to_zero(), mask)``. The mask is as for :func:`masked`, or a single
    bool (``True`` freezes everything). Put it last in a chain: before an optimizer
    it only zeroes the gradient, and weight decay or momentum would still move the
    frozen leaves. To also keep the optimizer from holding state for them, use
    ``partition({"train": opt, "frozen": set_to_zero()}, labels)`` instead.

    Args:
        mask: True for the leaves (or subtrees) to freeze, or a function of the
            params returning such a tree.

    References:
        optax ``freeze``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
        >>> tx = jopt.chain(jopt.adamw(0.1), jopt.freeze({"body": True, "head": False}))
        >>> tx.update(params, tx.init(params), params)[0]
        {'body': Array([0., 0.], dtype=float32), 'head': Array([-0.1, -0.1], dtype=float32)}
    """
    return masked(set_to_zero(), mask)


# -- parameter groups ------------------------------------------------------------------


class PartitionState(NamedTuple):
    """State of :func:`partition`: each group's inner state, in a dict keyed by label."""

    inner_states: dict[Hashable, OptState]


def _group_labels(
    param_labels: Labels | Callable[[Params], Labels],
    tree: Any,
    tree_name: str,
    transforms: Mapping[Hashable, GradientTransformation],
) -> list[Hashable]:
    """One label per leaf of ``tree``, each checked to name a transformation."""
    labels_tree = _resolve(param_labels, tree)
    values, owners = _spread(labels_tree, tree, names=(tree_name, "labels"))
    checked: set[int] = set()
    for position, (label, index) in enumerate(zip(values, owners, strict=True)):
        if index in checked:
            continue
        checked.add(index)
        try:
            known = label in transforms
        except TypeError:  # unhashable
            where = jtree.paths(labels_tree)[index]
            raise TypeError(
                f"partition: the label at '{where}' must be hashable, got {label!r}"
            ) from None
        if not known:
            where = jtree.paths(tree)[position]
            raise ValueError(
                f"partition: the parameter at '{where}' has label {label!r}, which has no "
                f"transformation; transforms has {list(transforms)}"
            )
    return values


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels | Callable[[Params], Labels],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """Parameter groups: each group of leaves gets its own transformation and state.

    Update rule: ``u_i <- transforms[label_i](u restricted to group label_i)_i``.

    This is torch's ``param_groups``: ``torch.optim.SGD([{"params": head, "lr": 0.1},
    {"params": body}], lr=0.01, momentum=0.9)`` is ``partition({"head":
    jopt.torch.SGD(lr=0.1, momentum=0.9), "body": jopt.torch.SGD(lr=0.01,
    momentum=0.9)}, labels)``. Each transformation sees the updates (and params)
    with the leaves of the other groups replaced by ``None`` (jax's empty subtree):
    its state holds only its own group, its key paths are the real ones, and an
    inner :func:`jopt.fuse` packs only its group's leaves.

    The state keeps the inner states in a dict keyed by label, so
    :func:`jopt.hyperparams` qualifies a hyperparameter that several groups share by
    the group's label (``"head/learning_rate"``), and :func:`jopt.set_hyperparams`
    sets one group by that name or every group by the plain name.

    A transformation whose label no parameter carries is allowed, as in optax: it
    runs on an empty view and keeps an empty state (a recipe with a ``"no_decay"``
    group works on a model without biases). A misspelt pattern in
    :func:`labels_by_path` therefore leaves a group empty rather than failing;
    ``jax.tree.leaves(labels_fn(params))`` shows what each leaf got.

    Args:
        transforms: a mapping from label to the transformation for that group.
        param_labels: a tree of labels with the structure of the params (or a prefix
            of it: one label covers a whole subtree), or a function of the params
            returning one (called with the params in ``init`` and with the updates in
            ``update``), e.g. :func:`labels_by_path`.
        mask_compatible_extra_args: also cut extra keyword arguments that have the
            updates' structure to each group's leaves.

    Returns:
        A transformation with a :class:`PartitionState`.

    Raises:
        ValueError: a parameter has a label with no transformation (names its path
            and the label).
        jopt.TreeMismatchError: the labels' structure does not fit the params.

    References:
        optax ``partition`` (same signature and semantics); torch's parameter groups.

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"body": {"w": jnp.ones(2), "b": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
        >>> labels = jopt.labels_by_path({"head/**": "head"}, default="body")
        >>> tx = jopt.partition({"body": jopt.sgd(0.1), "head": jopt.adam(0.01)}, labels)
        >>> state = tx.init(params)
        >>> tx.update(params, state, params)[0]["head"]["w"]
        Array([-0.01, -0.01], dtype=float32)
        >>> sorted(jopt.hyperparams(state))
        ['b1', 'b2', 'body/learning_rate', 'eps', 'eps_root', 'head/learning_rate']
        >>> state = jopt.set_hyperparams(state, {"head/learning_rate": 0.1})
        >>> tx.update(params, state, params)[0]["head"]["w"]
        Array([-0.1, -0.1], dtype=float32)
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(
            f"partition: transforms must be a mapping from label to transformation, "
            f"got {type(transforms).__name__}"
        )
    transforms = dict(transforms)
    for label, tx in transforms.items():
        _check_transformation(tx, f"partition: transforms[{label!r}]")
    takes_extra = {label: accepts_extra_args(tx) for label, tx in transforms.items()}

    def init(params: Params) -> PartitionState:
        leaves, treedef = jax.tree.flatten(params)
        labels = _group_labels(param_labels, params, "params", transforms)
        states = {}
        for label, tx in transforms.items():
            states[label] = tx.init(_view(leaves, treedef, [x == label for x in labels]))
        return PartitionState(states)

    def update(
        updates: Updates, state: PartitionState, params: Params | None = None, **extra: Any
    ) -> tuple[Updates, PartitionState]:
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(transforms):
            got = type(state).__name__
            if isinstance(state, PartitionState):
                got += f" with groups {list(state.inner_states)}"
            raise TypeError(
                f"partition.update got a {got}, not the state its init made "
                f"(groups {list(transforms)})"
            )
        leaves, treedef = jax.tree.flatten(updates)
        labels = _group_labels(param_labels, updates, "updates", transforms)
        params_leaves = None
        if params is not None:
            params_leaves = _leaves_like(params, treedef, ("updates", "params"))
        new_leaves = list(leaves)
        states = {}
        for label, tx in transforms.items():
            keep = [x == label for x in labels]
            view = _view(leaves, treedef, keep)
            params_view = None if params_leaves is None else _view(params_leaves, treedef, keep)
            group_extra = _view_extra(extra, treedef, keep, mask_compatible_extra_args)
            result, states[label] = call_update(
                tx, view, state.inner_states[label], params_view, group_extra, takes_extra[label]
            )
            positions = [i for i, k in enumerate(keep) if k]
            _merge_into(new_leaves, view, result, positions, f"group {label!r}")
        return jax.tree.unflatten(treedef, new_leaves), PartitionState(states)

    return GradientTransformation(init, update)


# -- labels from glob patterns on key paths ---------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compiles a ``/``-separated glob (``*``, ``**``, ``?``) to an anchored regex."""
    if not isinstance(pattern, str):
        raise TypeError(f"labels_by_path: pattern {pattern!r} must be a str")
    parts = pattern.split("/")
    if pattern and "" in parts:
        raise ValueError(
            f"labels_by_path: pattern {pattern!r} has an empty path component (a leading, "
            "trailing or doubled '/'); write 'head/**' for everything under 'head'"
        )
    collapsed: list[str] = []
    for part in parts:
        if "**" in part and part != "**":
            raise ValueError(
                f"labels_by_path: pattern {pattern!r}: '**' must be a whole path component "
                "(as in 'a/**/b'); use '*' to match within one component"
            )
        if not (part == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(part)
    regex = ""
    for i, part in enumerate(collapsed):
        last = i == len(collapsed) - 1
        if part == "**":
            if not last:
                regex += "(?:.*/)?"  # zero or more whole components, each with its '/'
            elif i == 0:
                regex += ".*"
            else:
                regex = regex[: -len("/")] + "(?:/.*)?"
            continue
        for char in part:
            regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        if not last:
            regex += "/"
    return re.compile(regex, re.DOTALL)


def labels_by_path(
    patterns: Mapping[str, str], default: str | None = None
) -> Callable[[Params], Labels]:
    """Labels each parameter by the first glob pattern that matches its key path.

    Returns ``labels_fn(params) -> labels``, a tree of labels with the structure of
    ``params``, for :func:`partition` (or ``optax.partition``). A leaf's path is its
    key path joined by ``/``: dict keys, sequence indices and attribute names, as
    :func:`jopt.tree.paths` prints them (``"layers/0/w"``). A flax ``nnx.Variable``
    counts as one leaf at the path where it sits in its ``State`` (``"linear/bias"``,
    not ``"linear/bias/value"``).

    Patterns match the whole path; ``/`` separates components:

    - ``*`` matches any characters within one component (``"layers/*/w"`` matches
      ``"layers/0/w"``, not ``"layers/0/sub/w"``);
    - ``**``, as a whole component, matches zero or more components: ``"head/**"``
      matches ``"head"``, ``"head/w"`` and ``"head/a/b"`` (not ``"header/w"``);
      ``"**/bias"`` matches ``"bias"`` and ``"a/b/bias"`` (not ``"a/unbias"``);
      ``"a/**/w"`` matches ``"a/w"`` and ``"a/x/y/w"``; ``"**"`` matches everything;
    - ``?`` matches one character other than ``/``;
    - everything else is literal (``"layer.0/w"`` does not match ``"layerX0/w"``).

    The first pattern (in the mapping's order) that matches wins; a path no pattern
    matches gets ``default``.

    Args:
        patterns: glob pattern -> label, tried in order.
        default: the label of paths that no pattern matches; ``None`` makes such a
            path an error.

    Returns:
        A function from the params (or the updates) to their labels.

    Raises:
        ValueError: now, for a malformed pattern (an empty component, ``**`` inside a
            component); when called, for a path no pattern matches without a
            default (names the path and lists the patterns).

    Example:
        >>> import jax.numpy as jnp
        >>> import jopt
        >>> params = {"head": {"w": 0.0, "bias": 0.0}, "layers": [{"w": 0.0, "bias": 0.0}]}
        >>> labels = jopt.labels_by_path({"head/**": "head", "**/bias": "no_decay"}, default="body")
        >>> labels(params)
        {'head': {'bias': 'head', 'w': 'head'}, 'layers': [{'bias': 'no_decay', 'w': 'body'}]}
        >>> jopt.labels_by_path({"head/**": "head"})(params)
        Traceback (most recent call last):
        ...
        ValueError: labels_by_path: no pattern matches 'layers/0/bias' and there is no
        default; patterns: ['head/**']
    """
    if not isinstance(patterns, Mapping):
        raise TypeError(
            f"labels_by_path: patterns must be a mapping from glob pattern to label, "
            f"got {type(patterns).__name__}"
        )
    compiled = [(_glob_regex(pattern), label) for pattern, label in patterns.items()]

    @functools.lru_cache(maxsize=4096)
    def label_of(path: str) -> str:
        for regex, label in compiled:
            if regex.fullmatch(path):
                return label
        if default is None:
            raise ValueError(
                f"labels_by_path: no pattern matches {path!r} and there is no default; "
                f"patterns: {list(patterns)}"
            )
        return default

    def labels_fn(params: Params) -> Labels:
        def one(path: Any, leaf: Any) -> Any:
            label = label_of(jtree.key_path_str(path))
            if jtree.is_flax_variable(leaf):
                return jax.tree.map(lambda _: label, leaf)
            return label

        return jax.tree_util.tree_map_with_path(one, params, is_leaf=jtree.is_flax_variable)

    return labels_fn
