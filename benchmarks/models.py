"""The models of the training-step benchmark, written twice: jax.numpy and torch.

Both take a dict of parameters keyed by the layout's paths and compute the same
function (an MLP with tanh and a squared-error loss; a GPT-2-style decoder with a
next-token cross-entropy), so the training steps differ only in framework and
optimizer. Parameters start as ``0.02 * normal`` with a fixed seed.
"""

from __future__ import annotations

from typing import Any

from benchmarks.cases import GPTConfig, Model


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


# -- jax ------------------------------------------------------------------------------


def jax_batch(model: Model, seed: int = 0) -> tuple[Any, Any]:
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)  # numpy: no eager jax programs to compile
    if model.gpt is None:
        x = rng.normal(size=(model.batch, model.widths[0])).astype(np.float32)
        y = rng.normal(size=(model.batch, model.widths[-1])).astype(np.float32)
        return jnp.asarray(x), jnp.asarray(y)
    c = model.gpt
    tokens = rng.integers(0, c.vocab, size=(model.batch, c.context + 1)).astype(np.int32)
    return jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])


def jax_loss(model: Model) -> Any:
    import jax
    import jax.numpy as jnp

    if model.gpt is None:
        depth = len(model.widths) - 1

        def mlp_loss(params: Any, x: Any, y: Any) -> Any:
            for i in range(depth):
                layer = params["layers"][str(i)]
                x = x @ layer["kernel"] + layer["bias"]
                if i < depth - 1:
                    x = jnp.tanh(x)
            return jnp.mean((x - y) ** 2)

        return mlp_loss

    c: GPTConfig = model.gpt

    def norm(x: Any, p: Any) -> Any:
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean((x - mean) ** 2, -1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]

    def dense(x: Any, p: Any) -> Any:
        return x @ p["kernel"] + p["bias"]

    def gpt_loss(params: Any, tokens: Any, targets: Any) -> Any:
        b, t = tokens.shape
        h, d = c.heads, c.width // c.heads
        x = params["wte"][tokens] + params["wpe"][:t]
        mask = jnp.tril(jnp.ones((t, t), bool))
        for i in range(c.depth):
            blk = params["blocks"][str(i)]
            a = norm(x, blk["ln1"])
            q, k, v = (dense(a, blk["attn"][n]).reshape(b, t, h, d) for n in "qkv")
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(d))
            scores = jnp.where(mask, scores, -1e9)
            att = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v)
            x = x + dense(att.reshape(b, t, c.width), blk["attn"]["proj"])
            m = norm(x, blk["ln2"])
            x = x + dense(jax.nn.gelu(dense(m, blk["mlp"]["fc"])), blk["mlp"]["proj"])
        logits = norm(x, params["ln_f"]) @ params["wte"].T
        logp = jax.nn.log_softmax(logits, -1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], -1))

    return gpt_loss


def jax_params(model: Model, seed: int = 0) -> Any:
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in model.layout.leaves:
        if path.endswith("scale"):
            flat[path] = jnp.ones(shape, jnp.float32)
        else:
            flat[path] = jnp.asarray((0.02 * rng.normal(size=shape)).astype(np.float32))
    return nest(flat)


# -- torch ----------------------------------------------------------------------------


def torch_params(model: Model, device: Any, seed: int = 0) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for path, shape in model.layout.leaves:
        if path.endswith("scale"):
            value = torch.ones(shape)
        else:
            value = 0.02 * torch.randn(shape, generator=gen)
        out[path] = torch.nn.Parameter(value.to(device))
    return out


def torch_batch(model: Model, device: Any, seed: int = 0) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    if model.gpt is None:
        x = torch.randn(model.batch, model.widths[0], generator=gen)
        y = torch.randn(model.batch, model.widths[-1], generator=gen)
        return x.to(device), y.to(device)
    c = model.gpt
    tokens = torch.randint(0, c.vocab, (model.batch, c.context + 1), generator=gen).to(device)
    return tokens[:, :-1], tokens[:, 1:]


def torch_loss(model: Model) -> Any:
    import torch
    import torch.nn.functional as F

    if model.gpt is None:
        depth = len(model.widths) - 1

        def mlp_loss(p: dict[str, Any], x: Any, y: Any) -> Any:
            for i in range(depth):
                x = x @ p[f"layers/{i}/kernel"] + p[f"layers/{i}/bias"]
                if i < depth - 1:
                    x = torch.tanh(x)
            return torch.mean((x - y) ** 2)

        return mlp_loss

    c: GPTConfig = model.gpt

    def norm(x: Any, p: dict[str, Any], name: str) -> Any:
        return F.layer_norm(x, (c.width,), p[f"{name}/scale"], p[f"{name}/bias"], 1e-5)

    def dense(x: Any, p: dict[str, Any], name: str) -> Any:
        return x @ p[f"{name}/kernel"] + p[f"{name}/bias"]

    def gpt_loss(p: dict[str, Any], tokens: Any, targets: Any) -> Any:
        b, t = tokens.shape
        h, d = c.heads, c.width // c.heads
        x = p["wte"][tokens] + p["wpe"][:t]
        for i in range(c.depth):
            blk = f"blocks/{i}"
            a = norm(x, p, f"{blk}/ln1")
            q, k, v = (
                dense(a, p, f"{blk}/attn/{n}").view(b, t, h, d).transpose(1, 2) for n in "qkv"
            )
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            att = att.transpose(1, 2).reshape(b, t, c.width)
            x = x + dense(att, p, f"{blk}/attn/proj")
            m = norm(x, p, f"{blk}/ln2")
            x = x + dense(
                F.gelu(dense(m, p, f"{blk}/mlp/fc"), approximate="tanh"), p, f"{blk}/mlp/proj"
            )
        logits = norm(x, p, "ln_f") @ p["wte"].T
        return F.cross_entropy(logits.reshape(-1, c.vocab), targets.reshape(-1))

    return gpt_loss
