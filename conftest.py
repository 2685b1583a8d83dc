"""Test configuration shared by the test suite and the doctests in ``jopt/``.

jax runs strict here: implicit dtype promotion and rank promotion raise, so a silent
float64 upcast or an accidental broadcast fails a test instead of hiding in a
trajectory. Oracles (optax, torch) run under ``tests.oracles.standard_promotion``.
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402
from _pytest.doctest import DoctestItem  # noqa: E402


@pytest.fixture(autouse=True)
def _doctests_use_standard_promotion(request):
    """Doctests are user-facing examples: they run under jax's default promotion rules."""
    if isinstance(request.node, DoctestItem):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            yield
    else:
        yield
