"""The MNIST model: a flax NNX multilayer perceptron, and the pure functions training needs.

`MLP` is an ordinary `flax.nnx.Module` (784-128-128-10 with ReLU by default). Training
works on a pure pytree of parameters instead of the module, so that the optimizer
state, checkpoints and ``jax.jit`` see plain arrays: `functional` splits a module into
a pure function ``apply(params, images) -> logits`` and a dict of parameters, the
layout ``{"layers": {0: {"kernel": ..., "bias": ...}, 1: ...}}``, and
`Functional.module` puts trained parameters back into a module.

    >>> import jax.numpy as jnp
    >>> from jopt.examples.mnist.model import init
    >>> apply, params = init((32,), 0)  # functional(MLP((32,), rngs=nnx.Rngs(0))), compiled
    >>> {k: v["kernel"].shape for k, v in params["layers"].items()}
    {0: (784, 32), 1: (32, 10)}
    >>> apply(params, jnp.zeros((5, 28, 28), jnp.uint8)).shape
    (5, 10)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "IMAGE_PIXELS",
    "MEAN",
    "MLP",
    "NUM_CLASSES",
    "STD",
    "Functional",
    "cross_entropy",
    "functional",
    "init",
    "initializer",
    "preprocess",
    "softmax_cross_entropy",
]

IMAGE_PIXELS = 28 * 28
NUM_CLASSES = 10
MEAN = 0.1307
"""Mean of the MNIST training pixels scaled to [0, 1] (the value the PyTorch examples use)."""
STD = 0.3081
"""Their standard deviation."""

Params = Any

RUN_ONCE: dict[str, str | bool] = {"xla_backend_optimization_level": "0"}
"""XLA options for programs that run once (drawing the initial weights): without
LLVM's optimizations they compile about 5x faster, to the same numbers."""


class MLP(nnx.Module):
    """A multilayer perceptron for 28x28 images: flatten, ``Linear``-ReLU per hidden layer, logits.

    ``784 -> hidden[0] -> ... -> hidden[-1] -> 10``; each hidden layer is ``relu(x W + b)``
    and the last layer returns logits (no softmax: `cross_entropy` takes logits). Weights
    use flax's defaults (LeCun normal kernels, zero biases).

    Args:
        hidden: the widths of the hidden layers, each >= 1; ``()`` is logistic regression.
        in_features: the input size (flattened image).
        num_classes: the number of outputs.
        dtype: the computation dtype (``jnp.bfloat16`` for mixed precision); the
            parameters stay float32 either way, so the optimizer updates float32 master
            weights.
        rngs: the random number generators for the initial weights.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jopt.examples.mnist.model import MLP
        >>> model = MLP((128, 128), rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 784))).shape
        (2, 10)
        >>> MLP((128, 0), rngs=nnx.Rngs(0))
        Traceback (most recent call last):
        ...
        ValueError: hidden=(128, 0): every hidden layer needs at least 1 unit
    """

    def __init__(
        self,
        hidden: Sequence[int] = (128, 128),
        *,
        in_features: int = IMAGE_PIXELS,
        num_classes: int = NUM_CLASSES,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ) -> None:
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden={hidden}: every hidden layer needs at least 1 unit")
        sizes = (in_features, *hidden, num_classes)
        self.hidden = hidden
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
                for a, b in itertools.pairwise(sizes)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for inputs ``(batch, 784)`` or ``(batch, 28, 28)``."""
        x = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def preprocess(images: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """uint8 pixels to normalized inputs: ``(x / 255 - MEAN) / STD``, flattened to 784.

    Args:
        images: ``(batch, 28, 28)`` or ``(batch, 784)`` uint8 pixels.
        dtype: the output dtype (the arithmetic is float32).

    Returns:
        ``(batch, 784)`` inputs with mean about 0 and standard deviation about 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.examples.mnist.model import preprocess
        >>> preprocess(jnp.array([[0, 255]], jnp.uint8))
        Array([[-0.4242...,  2.8214...]], dtype=float32)
    """
    x = jnp.reshape(images, (images.shape[0], -1)).astype(jnp.float32)
    return ((x / 255.0 - MEAN) / STD).astype(dtype)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels, in float32.

    ``loss_i = logsumexp(z_i) - z_i[y_i]``, computed in float32 whatever the dtype of
    the logits (bfloat16 logits are upcast first).

    Args:
        logits: ``(batch, classes)``.
        labels: ``(batch,)`` integers in ``[0, classes)``.

    Returns:
        ``(batch,)`` float32 losses.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.examples.mnist.model import softmax_cross_entropy
        >>> softmax_cross_entropy(jnp.array([[2.0, 0.0], [0.0, 2.0]]), jnp.array([0, 0]))
        Array([0.1269..., 2.1269...], dtype=float32)
    """
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def cross_entropy(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy with integer labels, averaged over the (weighted) examples.

    ``loss = sum_i w_i (logsumexp(z_i) - z_i[y_i]) / sum_i w_i`` in float32. Weights of
    0 drop padding examples (the last, short batch of an epoch is padded to the batch
    size so that every step has the same shape); without weights it is the plain mean,
    as ``torch.nn.CrossEntropyLoss()``.

    Args:
        logits: ``(batch, classes)``.
        labels: ``(batch,)`` integers in ``[0, classes)``.
        weights: ``(batch,)`` float32, or ``None`` for all ones.

    Returns:
        The scalar loss.

    Example:
        >>> import jax.numpy as jnp
        >>> from jopt.examples.mnist.model import cross_entropy
        >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
        >>> cross_entropy(logits, jnp.array([0, 0]))
        Array(1.1269..., dtype=float32)
        >>> cross_entropy(logits, jnp.array([0, 0]), jnp.array([1.0, 0.0]))
        Array(0.1269..., dtype=float32)
    """
    losses = softmax_cross_entropy(logits, labels)
    if weights is None:
        return jnp.mean(losses)
    return jnp.sum(losses * weights) / jnp.sum(weights)


@dataclasses.dataclass(frozen=True, eq=False)
class Functional:
    """A module as a pure function of its parameters: ``apply(params, images) -> logits``.

    Made by `functional`. ``params`` is a nested dict of arrays (the module's
    ``nnx.Param`` values); images may be uint8 pixels (normalized by `preprocess`)
    or already-normalized floats.

    Attributes:
        graphdef: the module's structure (``nnx.split``).
        abstract: the module's state as shapes and dtypes, the template for ``params``.
    """

    graphdef: Any
    abstract: Any

    def module(self, params: Params) -> nnx.Module:
        """The module with ``params`` as its weights (for inference or a flax optimizer)."""
        state = jax.tree.map(lambda x: x, self.abstract)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state)

    def __call__(self, params: Params, images: jax.Array) -> jax.Array:
        """Logits for a batch of images (uint8 pixels or normalized floats)."""
        x = preprocess(images) if images.dtype == jnp.uint8 else images
        return self.module(params)(x)


def functional(model: nnx.Module) -> tuple[Functional, Params]:
    """Splits a module into a pure function and a dict of parameters.

    Args:
        model: an NNX module whose state is all ``nnx.Param`` (as `MLP`).

    Returns:
        ``(apply, params)``: ``apply(params, images) -> logits`` and the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jopt.examples.mnist.model import MLP, functional
        >>> apply, params = functional(MLP((8,), rngs=nnx.Rngs(0)))
        >>> model = apply.module(params)
        >>> bool(jnp.all(model(jnp.ones((1, 784))) == apply(params, jnp.ones((1, 784)))))
        True
    """
    graphdef, state = nnx.split(model)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return Functional(graphdef, abstract), nnx.to_pure_dict(state)


def initializer(
    hidden: Sequence[int] = (128, 128), *, dtype: Any = None
) -> tuple[Functional, Callable[[jax.Array], Params]]:
    """An `MLP` as ``(apply, make)``: ``make(key)`` draws its parameters (traceable).

    Nothing is computed: ``apply`` comes from the module's shapes, and ``make`` can run
    inside ``jax.jit`` together with whatever else the setup does (one compilation
    instead of one per random operation).

    Args:
        hidden: the hidden layer widths.
        dtype: the computation dtype (``None`` for float32, or ``jnp.bfloat16``).

    Returns:
        ``(apply, make)``.

    Example:
        >>> import jax
        >>> from jopt.examples.mnist.model import initializer
        >>> apply, make = initializer((16,))
        >>> params = jax.jit(make)(jax.random.key(0))
        >>> apply(params, jax.numpy.zeros((3, 784))).shape
        (3, 10)
    """
    hidden = tuple(hidden)

    def build(key: jax.Array) -> nnx.Module:
        return MLP(hidden, dtype=dtype, rngs=nnx.Rngs(params=key))

    def make(key: jax.Array) -> Params:
        return nnx.to_pure_dict(nnx.state(build(key)))

    apply, _ = functional(nnx.eval_shape(lambda: build(jax.random.key(0))))
    return apply, make


def init(
    hidden: Sequence[int] = (128, 128), key: jax.Array | int = 0, *, dtype: Any = None
) -> tuple[Functional, Params]:
    """A fresh `MLP` as ``(apply, params)``, its weights drawn from ``key``.

    Args:
        hidden: the hidden layer widths.
        key: a jax PRNG key or an integer seed.
        dtype: the computation dtype (``None`` for float32, or ``jnp.bfloat16``).

    Returns:
        ``(apply, params)`` as `functional` returns them.

    Example:
        >>> import jax
        >>> from jopt.examples.mnist.model import init
        >>> apply, params = init((16,), 0)
        >>> sum(x.size for x in jax.tree.leaves(params))
        12730
    """
    key = jax.random.key(key) if isinstance(key, int) else key
    apply, draw = _compiled_initializer(tuple(hidden), None if dtype is None else jnp.dtype(dtype))
    return apply, draw(key)


@functools.lru_cache(maxsize=16)
def _compiled_initializer(hidden: tuple[int, ...], dtype: Any) -> tuple[Functional, Callable]:
    """`initializer`'s ``make`` jitted once per architecture, compiled without LLVM's
    optimizations (it runs once; random number generation unrolls into a lot of code
    that optimizing would spend seconds on, for the same numbers)."""
    apply, make = initializer(hidden, dtype=dtype)
    lowered = jax.jit(make).lower(jax.random.key(0))
    return apply, lowered.compile(compiler_options=RUN_ONCE)
