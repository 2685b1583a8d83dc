"""Helpers shared by the schedule modules (both doors): dtypes, counts, argument checks.

Private: the public names live in :mod:`jopt.schedules` and :mod:`jopt.torch.lr_scheduler`.
"""

from __future__ import annotations

import functools
import numbers
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def default_float() -> np.dtype:
    """jax's default float dtype: float64 when x64 is enabled, else float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def value_dtype(*values: Any) -> np.dtype:
    """The dtype a schedule computes and returns in.

    The common float dtype of the values given as arrays (a ``float32`` ``init_value``
    keeps a schedule in float32 under x64); jax's default float dtype when every value
    is a Python number.
    """
    dtypes = [
        np.dtype(v.dtype)
        for v in values
        if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)
    ]
    if not dtypes:
        return default_float()
    return np.dtype(jax.dtypes.canonicalize_dtype(functools.reduce(jnp.promote_types, dtypes)))


def lift(value: Any, dtype: np.dtype) -> Any:
    """A value ready for arithmetic in ``dtype``.

    Python numbers stay Python numbers (weakly typed: they take the dtype of the array
    they meet, as in optax); numpy scalars become Python numbers; arrays are cast.
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return jnp.asarray(value).astype(dtype)


def as_count(count: Any) -> jax.Array:
    """The step count as an int32 array (a float count is kept, in the default float)."""
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.floating):
        return count.astype(default_float())
    return count.astype(jnp.int32)


def concrete(value: Any) -> float | None:
    """``float(value)`` for a concrete real scalar; ``None`` for tracers and non-scalars."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except Exception:  # pragma: no cover - exotic array-likes are not validated
        return None
    if array.shape != () or array.dtype.kind not in "biuf":
        return None
    return float(array)


def _bound_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    low = f"> {gt!r}" if gt is not None else f">= {ge!r}" if ge is not None else None
    high = f"< {lt!r}" if lt is not None else f"<= {le!r}" if le is not None else None
    if low is not None and high is not None:
        left = "(" if gt is not None else "["
        right = ")" if lt is not None else "]"
        lo = gt if gt is not None else ge
        hi = lt if lt is not None else le
        return f"in {left}{lo!r}, {hi!r}{right}"
    return low or high or ""


def _in_bounds(
    x: float, gt: float | None, ge: float | None, lt: float | None, le: float | None
) -> bool:
    return (
        (gt is None or x > gt)
        and (ge is None or x >= ge)
        and (lt is None or x < lt)
        and (le is None or x <= le)
    )


def check_real(
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Raises ``ValueError`` naming ``name`` when a concrete ``value`` is out of bounds.

    Traced values cannot be checked at construction and pass through; NaN never passes.
    """
    x = concrete(value)
    if x is not None and not _in_bounds(x, gt, ge, lt, le):
        raise ValueError(f"{name}={value!r} must be {_bound_text(gt, ge, lt, le)}")


def check_steps(name: str, value: Any, *, gt: int | None = None, ge: int | None = None) -> int:
    """A step count as a Python int; an integral float such as ``1e4`` is accepted.

    Raises:
        ValueError: naming ``name`` if ``value`` is not an integer or is out of bounds.
    """
    bounds = _bound_text(gt, ge, None, None)
    if isinstance(value, bool):
        steps = None
    elif isinstance(value, numbers.Integral):
        steps = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        steps = int(float(value))
    else:
        try:
            steps = operator.index(value)
        except TypeError:
            steps = None
    if steps is None:
        raise ValueError(f"{name}={value!r} must be an integer" + (f" {bounds}" if bounds else ""))
    if not _in_bounds(steps, gt, ge, None, None):
        raise ValueError(f"{name}={value!r} must be {bounds}")
    return steps
