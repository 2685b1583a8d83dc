"""jopt.tree: key paths, structure checks, casting and moment arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import tree as jtree

PARAMS = {"encoder": [{"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}], "head": jnp.zeros(4)}


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            {"encoder": [{"w": jnp.zeros((2, 3))}], "head": jnp.zeros(4)},
            "updates is missing 'encoder/0/b', which params has",
        ),
        (
            {**PARAMS, "extra": jnp.zeros(1)},
            "updates has 'extra', which params does not have",
        ),
        (
            {"encoder": [{"w": jnp.zeros((3, 2)), "b": jnp.zeros(3)}], "head": jnp.zeros(4)},
            "updates and params differ at 'encoder/0/w': shape [3, 2] in updates, [2, 3] in params",
        ),
        (
            {"encoder": [{"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}], "head": (jnp.zeros(4),)},
            "updates has a subtree at 'head' (e.g. 'head/0') where params has a leaf",
        ),
    ],
)
def test_check_structure_names_the_first_differing_path(other, message):
    with pytest.raises(jopt.TreeMismatchError, match="^" + _escape(message) + "$"):
        jtree.check_structure(PARAMS, other, names=("params", "updates"))


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_check_structure_dtypes_only_when_asked():
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    jtree.check_structure(PARAMS, half)
    with pytest.raises(jopt.TreeMismatchError, match="'encoder/0/b': dtype bfloat16 in b, float32"):
        jtree.check_structure(PARAMS, half, names=("a", "b"), dtypes=True)


def test_check_structure_container_types():
    class Box(dict):
        pass

    jax.tree_util.register_pytree_with_keys(
        Box,
        lambda b: ([(jax.tree_util.DictKey(k), v) for k, v in sorted(b.items())], tuple(sorted(b))),
        lambda keys, values: Box(zip(keys, values, strict=True)),
    )
    with pytest.raises(jopt.TreeMismatchError, match="same key paths but different container"):
        jtree.check_structure({"a": jnp.zeros(1)}, Box(a=jnp.zeros(1)))


def test_check_structure_runs_at_trace_time():
    tx = jopt.adam(1e-3)
    state = tx.init(PARAMS)
    bad = {"encoder": [{"w": jnp.zeros((2, 3))}], "head": jnp.zeros(4)}
    with pytest.raises(jopt.TreeMismatchError, match="encoder/0/b"):
        jax.jit(tx.update).lower(bad, state, PARAMS)


def test_paths_and_key_path_str():
    assert jtree.paths(PARAMS) == ["encoder/0/b", "encoder/0/w", "head"]
    state = jopt.sgd(0.1, momentum=0.9).init(PARAMS)
    assert "inner_state/inner_state/0/trace/<packed float32>" in jtree.paths(state)


def test_global_norm_sums_in_float32_for_half_precision():
    big = {"a": jnp.full((1000,), 300.0, jnp.float16)}  # squares overflow float16
    norm = jopt.global_norm(big)
    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(float(norm), 300.0 * np.sqrt(1000), rtol=1e-6)


def test_cast_saturates_overflow_but_keeps_nonfinite_inputs():
    x = jnp.array([1e6, -1e6, jnp.inf, jnp.nan, 1.5], jnp.float32)
    out = np.asarray(jtree.cast(x, jnp.float16), np.float32)
    assert out[0] == 65504.0 and out[1] == -65504.0
    assert np.isposinf(out[2]) and np.isnan(out[3]) and out[4] == 1.5


def test_update_moment_and_bias_correction():
    m = jtree.update_moment({"a": jnp.array([2.0])}, {"a": jnp.array([1.0])}, 0.5, order=2)
    np.testing.assert_allclose(m["a"], [2.5])
    corrected = jtree.bias_correction(m, 0.5, jnp.asarray(1, jnp.int32))
    np.testing.assert_allclose(corrected["a"], [5.0])


def test_decay_pair_recovers_the_exact_complement_from_a_split_scalar():
    exact = np.float64(0.99999)
    hi = np.float32(exact)
    lo = np.float32(exact - np.float64(hi))
    _, complement = jtree.decay_pair(
        jtree.SplitScalar(jnp.asarray(hi), jnp.asarray(lo)), jnp.float32
    )
    assert float(complement) == float(np.float32(1 - exact))
    _, rounded = jtree.decay_pair(jnp.asarray(hi), jnp.float32)
    assert abs(float(rounded) / (1 - exact) - 1) > 1e-4  # what the split saves us from


def test_safe_increment_saturates():
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    assert int(jtree.safe_increment(top)) == np.iinfo(np.int32).max
    assert int(jtree.safe_increment(jnp.asarray(3, jnp.int32))) == 4


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [
        ([jnp.ones(2), np.zeros(3, np.float32)], True),
        ([jnp.ones(2), np.zeros(3)], False),  # numpy's float64
        ([jnp.ones(2, jnp.bfloat16)], False),
        ([jnp.ones(2), 0.5], True),  # a weak Python float is float32 to jax
        ([jnp.ones(2), 3], False),
        ([], True),
    ],
)
def test_all_have_dtype_reads_arrays_tracers_and_scalars(leaves, expected):
    assert jtree.all_have_dtype(leaves, jnp.float32) is expected
    traced = jax.jit(lambda xs: jnp.asarray(jtree.all_have_dtype(xs, jnp.float32)))
    arrays = [x for x in leaves if isinstance(x, jax.Array)]
    assert bool(traced(arrays)) is jtree.all_have_dtype(arrays, jnp.float32)
