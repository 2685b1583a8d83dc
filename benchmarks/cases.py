"""What the step benchmark measures: parameter layouts, optimizers, models, byte counts.

Everything here is plain data and small builders, shared by the parent process and
the per-framework workers, so every framework builds exactly the same problem.
A layout is a list of ``(path, shape)`` leaves (all float32); jax builds nested dicts
from the ``/``-separated paths, torch a flat list of tensors in the same order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

LEARNING_RATE = 1e-3
TOTAL_STEPS = 10_000
WARMUP_STEPS = 100
SGD_WEIGHT_DECAY = 5e-4


@dataclasses.dataclass(frozen=True)
class Layout:
    """A named parameter layout: its leaves as ``(path, shape)``, all float32."""

    name: str
    leaves: tuple[tuple[str, tuple[int, ...]], ...]
    description: str

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.leaves)

    @property
    def num_leaves(self) -> int:
        return len(self.leaves)


def flat(name: str, n: int) -> Layout:
    return Layout(name, (("w", (n,)),), f"one array of {n:,} float32")


def mlp(name: str, widths: tuple[int, ...]) -> Layout:
    leaves = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        leaves += [(f"layers/{i}/kernel", (a, b)), (f"layers/{i}/bias", (b,))]
    return Layout(name, tuple(leaves), f"MLP {'-'.join(map(str, widths))}, {len(leaves)} leaves")


def many(name: str, count: int, size: int) -> Layout:
    leaves = tuple((f"leaf{i:04d}", (size,)) for i in range(count))
    return Layout(name, leaves, f"{count} leaves of {size:,} float32")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """A GPT-2-style decoder: pre-LayerNorm blocks, separate q/k/v projections."""

    vocab: int
    context: int
    width: int
    depth: int
    heads: int


def gpt_leaves(c: GPTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    d = c.width
    leaves = [("wte", (c.vocab, d)), ("wpe", (c.context, d))]
    for i in range(c.depth):
        b = f"blocks/{i}"
        leaves += [(f"{b}/ln1/scale", (d,)), (f"{b}/ln1/bias", (d,))]
        for name in ("q", "k", "v", "proj"):
            leaves += [(f"{b}/attn/{name}/kernel", (d, d)), (f"{b}/attn/{name}/bias", (d,))]
        leaves += [(f"{b}/ln2/scale", (d,)), (f"{b}/ln2/bias", (d,))]
        leaves += [(f"{b}/mlp/fc/kernel", (d, 4 * d)), (f"{b}/mlp/fc/bias", (4 * d,))]
        leaves += [(f"{b}/mlp/proj/kernel", (4 * d, d)), (f"{b}/mlp/proj/bias", (d,))]
    leaves += [("ln_f/scale", (d,)), ("ln_f/bias", (d,))]
    return tuple(leaves)


def gpt(name: str, c: GPTConfig) -> Layout:
    leaves = gpt_leaves(c)
    return Layout(
        name, leaves, f"GPT d={c.width} depth={c.depth} vocab={c.vocab}, {len(leaves)} leaves"
    )


MLP_WIDTHS = (1024, 2048, 2048, 2048, 2048, 1024)
GPT_STEP = GPTConfig(vocab=8192, context=512, width=384, depth=12, heads=6)

LAYOUTS: dict[str, Layout] = {
    "flat1m": flat("flat1m", 1 << 20),
    "flat16m": flat("flat16m", 1 << 24),
    "flat256m": flat("flat256m", 1 << 28),
    "mlp": mlp("mlp", MLP_WIDTHS),
    "leaves1000": many("leaves1000", 1000, 1000),
    "gpt": gpt("gpt", GPT_STEP),
}
QUICK_LAYOUTS: dict[str, Layout] = {
    "flat64k": flat("flat64k", 1 << 16),
    "leaves20": many("leaves20", 20, 100),
}


def sweep_layouts(total: int = 1 << 21) -> dict[str, Layout]:
    """Many equal leaves of 4K..256K elements: packed vs own buffers (``--sweep-leaf-size``)."""
    out = {}
    for log2 in range(12, 19):
        size = 1 << log2
        out[f"leaves{size // 1024}k"] = many(f"leaves{size // 1024}k", total // size, size)
    return out


# -- optimizers ----------------------------------------------------------------------

OPTIMIZERS = (
    "sgd", "momentum", "sgd_wd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "chain",
    "adam_bf16", "rmsprop_centered", "amsgrad",
)  # fmt: skip
QUICK_OPTIMIZERS = ("adam", "chain")
QUICK_PLAN = {"flat64k": ("adam",), "leaves20": ("chain",)}
ON_REQUEST = ("rmsprop_centered", "amsgrad")
"""Optimizers measured only when named (``--optimizers``) or with ``--all``."""
_DEFAULT_OPTIMIZERS = tuple(o for o in OPTIMIZERS if o not in ON_REQUEST)
_MANY_LEAVES_OPTIMIZERS = tuple(o for o in _DEFAULT_OPTIMIZERS if o != "adam_bf16")
DEFAULT_PLAN = {
    "flat1m": _DEFAULT_OPTIMIZERS,
    "flat16m": _DEFAULT_OPTIMIZERS,
    "flat256m": ("adam", "chain"),
    "mlp": _DEFAULT_OPTIMIZERS,
    "leaves1000": _MANY_LEAVES_OPTIMIZERS,
    "gpt": _MANY_LEAVES_OPTIMIZERS,
}
"""The optimizers a default run measures on each layout: all of them but where the size
of the arrays (256M) would push a run past 15 minutes on 2 CPU cores, without bfloat16
moments (which run XLA code either way) on the many-leaf trees, and without centered
RMSprop and AMSGrad (``--optimizers rmsprop_centered,amsgrad`` measures them). ``--all``
runs every optimizer on every layout."""
DESCRIPTIONS = {
    "sgd": "SGD, lr 1e-3",
    "momentum": "SGD with momentum 0.9",
    "sgd_wd": "SGD, momentum 0.9, weight decay 5e-4 added to the gradient (torch's ResNet "
    "recipe; jopt: jopt.torch.SGD, optax: add_decayed_weights then sgd)",
    "adam": "Adam, lr 1e-3",
    "adamw": "AdamW, weight decay 1e-2",
    "rmsprop": "RMSprop (optax: decay 0.9; torch: alpha 0.99)",
    "rmsprop_centered": "centered RMSprop (optax: decay 0.9; torch: alpha 0.99)",
    "amsgrad": "AMSGrad, lr 1e-3 (optax: the maximum of the bias-corrected second moment; "
    "torch: of the raw one)",
    "adagrad": "Adagrad, lr 1e-2",
    "adadelta": "Adadelta, lr 1, rho 0.9, eps 1e-6",
    "chain": "clip_by_global_norm(1) + AdamW(wd 1e-2) + warmup-cosine schedule",
    "adam_bf16": "Adam with bfloat16 first and second moments (jopt only)",
}

BYTES_PER_PARAM = {
    # the memory traffic of an ideal single pass, float32: reads + in-place writes
    "sgd": 12,  # p, g read; p written
    "momentum": 20,  # p, g, m read; p, m written
    "sgd_wd": 20,
    "adam": 28,  # p, g, m, v read; p, m, v written
    "adamw": 28,
    "rmsprop": 20,  # p, g, v read; p, v written
    "rmsprop_centered": 28,  # p, g, m, v read; p, m, v written
    "amsgrad": 36,  # p, g, m, v, n read; p, m, v, n written
    "adagrad": 20,
    "adadelta": 28,  # p, g, e_g, e_x read; p, e_g, e_x written
    "chain": 32,  # + one read of g for the global norm
    "adam_bf16": 20,  # m, v as 2 bytes each
}
"""The memory traffic of an ideal fused step, in bytes per float32 parameter."""

STATE_BYTES_PER_PARAM = {
    "sgd": 0,
    "momentum": 4,
    "sgd_wd": 4,
    "adam": 8,
    "adamw": 8,
    "rmsprop": 4,
    "rmsprop_centered": 8,
    "amsgrad": 12,
    "adagrad": 4,
    "adadelta": 8,
    "chain": 8,
    "adam_bf16": 4,
}

FRAMEWORKS = ("jopt", "jopt-flat", "optax", "torch-foreach", "torch-fused")
QUICK_FRAMEWORKS = ("jopt", "jopt-flat", "optax", "torch-fused")
JAX_FRAMEWORKS = ("jopt", "jopt-flat", "optax", "floor")
FLOORS = ("floor", "torch-floor")
"""The in-place kernel ``a <- a + s * b`` compiled by XLA and run by torch; the faster
of the two, in each case, sets the bandwidth of the floor."""
ONLY_JOPT = {"adam_bf16"}
TORCH_FUSED = {"sgd", "momentum", "sgd_wd", "adam", "adamw", "adagrad", "chain", "amsgrad"}
"""Optimizers that torch 2.13 implements with ``fused=True`` (RMSprop and Adadelta have no
fused kernel)."""


def supported(framework: str, optimizer: str) -> bool:
    framework = framework.partition(":")[0]
    if optimizer in ONLY_JOPT and not framework.startswith("jopt"):
        return False
    return not (framework == "torch-fused" and optimizer not in TORCH_FUSED)


def schedule_args() -> dict[str, Any]:
    return dict(
        init_value=0.0,
        peak_value=LEARNING_RATE,
        warmup_steps=WARMUP_STEPS,
        decay_steps=TOTAL_STEPS,
    )


def jax_optimizer(lib: Any, name: str) -> Any:
    """The optimizer ``name`` from ``lib`` (the ``jopt`` or ``optax`` module)."""
    import jax.numpy as jnp

    lr = LEARNING_RATE
    if name == "sgd":
        return lib.sgd(lr)
    if name == "momentum":
        return lib.sgd(lr, momentum=0.9)
    if name == "sgd_wd":
        if lib.__name__ == "jopt":  # the torch door, as a torch user writes it
            return lib.torch.SGD(lr, momentum=0.9, weight_decay=SGD_WEIGHT_DECAY)
        return lib.chain(lib.add_decayed_weights(SGD_WEIGHT_DECAY), lib.sgd(lr, momentum=0.9))
    if name == "adam":
        return lib.adam(lr)
    if name == "adamw":
        return lib.adamw(lr, weight_decay=1e-2)
    if name == "rmsprop":
        return lib.rmsprop(lr)
    if name == "rmsprop_centered":
        return lib.rmsprop(lr, centered=True)
    if name == "amsgrad":
        return lib.amsgrad(lr)
    if name == "adagrad":
        return lib.adagrad(1e-2)
    if name == "adadelta":
        return lib.adadelta(1.0, rho=0.9, eps=1e-6)
    if name == "chain":
        schedule = lib.warmup_cosine_decay_schedule(**schedule_args())
        return lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(schedule, weight_decay=1e-2))
    if name == "adam_bf16":
        return lib.adam(lr, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    raise ValueError(f"unknown optimizer {name!r}")


# -- models for the whole training step ----------------------------------------------

GPT_TRAIN = GPTConfig(vocab=4096, context=128, width=128, depth=12, heads=4)


@dataclasses.dataclass(frozen=True)
class Model:
    """A model for the training-step benchmark: its layout and its batch."""

    name: str
    layout: Layout
    batch: int
    gpt: GPTConfig | None = None  # None: the MLP of ``layout``
    widths: tuple[int, ...] = ()


MODELS = {
    "mlp": Model("mlp", mlp("mlp", MLP_WIDTHS), batch=64, widths=MLP_WIDTHS),
    "gpt": Model("gpt", gpt("gpt", GPT_TRAIN), batch=8, gpt=GPT_TRAIN),
}
QUICK_MODELS = {
    "mlp": Model("mlp", mlp("mlp", (64, 128, 32)), batch=8, widths=(64, 128, 32)),
}
TRAIN_OPTIMIZER = "adam"


def init_value(index: int, shape: tuple[int, ...]) -> float:
    """A deterministic, leaf-dependent fill value (values do not change the cost)."""
    del shape
    return 0.01 + 0.001 * (index % 7)
