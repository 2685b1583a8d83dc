"""A jax primitive per kernel: the FFI call on the CPU, its XLA twin everywhere else.

``jax.lax.platform_dependent`` would choose between the two too, but it traces every
branch, so the twin of a 1000-leaf step (thousands of XLA operations) was traced on
every compile, including on the CPU where it is never used: 0.6 s of a 1.9 s compile.
A primitive with one lowering rule per platform traces the twin only when it lowers
for a platform without the kernel. Under ``jax.vmap`` the twin runs (vmapped); a
derivative is the twin's (the kernel gives the values, ``jax.jvp`` of the twin the
tangents), a rule of the primitive itself: a ``jax.custom_jvp`` around each call
traced its function a second time and named its 2000 arguments on every compile
(0.05-0.1 s of a 1000-leaf step's trace).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


def kernel_primitive(
    name: str,
    *,
    twin: Callable[..., list[jax.Array]],
    out_avals: Callable[..., list[Any]],
    target: Callable[..., str],
    aliases: Callable[..., dict[int, int]] = lambda num_operands, **params: {},
    attributes: Callable[..., dict[str, np.ndarray]] = lambda **params: {},
) -> Callable[..., list[jax.Array]]:
    """Defines a primitive and returns ``bind(*operands, **params) -> list of outputs``.

    ``twin(*operands, **params)``: the XLA code (a list of outputs); ``out_avals``:
    the outputs' shapes and dtypes from the operands' (``jax.core.ShapedArray``s);
    ``target(**params)``: the FFI target's name; ``aliases(num_operands, **params)``:
    operand index -> output index for in-place outputs; ``attributes(**params)``:
    the FFI attributes (numpy arrays or scalars). ``params`` must be hashable.
    """
    prim = Primitive(name)
    prim.multiple_results = True

    @functools.lru_cache(maxsize=64)
    def jitted(items: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
        return jax.jit(lambda *operands: prim.bind(*operands, **dict(items)))

    prim.def_impl(lambda *operands, **params: jitted(tuple(sorted(params.items())))(*operands))
    prim.def_abstract_eval(lambda *avals, **params: out_avals(*avals, **params))
    mlir.register_lowering(prim, mlir.lower_fun(twin, multiple_results=True))

    def cpu_rule(ctx: Any, *operands: Any, **params: Any) -> Sequence[Any]:
        rule = jax.ffi.ffi_lowering(
            target(**params), operand_output_aliases=aliases(len(operands), **params)
        )
        return rule(ctx, *operands, **attributes(**params))

    mlir.register_lowering(prim, cpu_rule, platform="cpu")

    def batch(args: Sequence[Any], dims: Sequence[Any], **params: Any) -> tuple[Any, Any]:
        axes = tuple(d if isinstance(d, int) else None for d in dims)  # unmapped: None
        outs = jax.vmap(functools.partial(twin, **params), in_axes=axes)(*args)
        return outs, [0] * len(outs)

    batching.primitive_batchers[prim] = batch

    def jvp(primals: Sequence[Any], tangents: Sequence[Any], **params: Any) -> tuple[Any, Any]:
        dots = [ad.instantiate_zeros(t) for t in tangents]
        _, tangents_out = jax.jvp(functools.partial(twin, **params), list(primals), dots)
        return prim.bind(*primals, **params), tangents_out

    ad.primitive_jvps[prim] = jvp
    return prim.bind
