"""Every public name is documented: a summary line and a runnable example.

The examples themselves run as doctests (``--doctest-modules`` in pyproject.toml);
this test makes sure none is missing.
"""

from __future__ import annotations

import inspect
import types

import pytest

import jopt
import jopt.kernel_steps
import jopt.schedules
import jopt.torch
import jopt.torch.lr_scheduler

NAMESPACES = {
    "jopt": jopt,
    "jopt.torch": jopt.torch,
    "jopt.torch.lr_scheduler": jopt.torch.lr_scheduler,
    "jopt.schedules": jopt.schedules,
    "jopt.tree": jopt.tree,
    "jopt.flat": jopt.flat,
    "jopt.kernels": jopt.kernels,
    "jopt.kernels.rules": jopt.kernels.rules,
    "jopt.kernel_steps": jopt.kernel_steps,
    "jopt.stepping": jopt.stepping,
}
# Type aliases and plain data (no docstring of their own to carry an example).
NOT_DOCUMENTABLE = {"Params", "Updates", "OptState", "Schedule", "ScalarOrSchedule"}
# State containers are documented by their summary; their factories carry the example.
STATE_SUFFIX = "State"


def _public(namespace: types.ModuleType) -> list[tuple[str, object]]:
    names = getattr(namespace, "__all__", None) or [
        n for n in dir(namespace) if not n.startswith("_")
    ]
    out = []
    for name in names:
        obj = getattr(namespace, name)
        if isinstance(obj, types.ModuleType) or name in NOT_DOCUMENTABLE:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        module = getattr(obj, "__module__", "") or ""
        if not module.startswith("jopt"):
            continue  # re-exported from elsewhere (typing, jax)
        out.append((name, obj))
    return out


CASES = [
    pytest.param(obj, id=f"{space}.{name}")
    for space, namespace in NAMESPACES.items()
    for name, obj in _public(namespace)
]


@pytest.mark.parametrize("obj", CASES)
def test_has_a_summary_and_an_example(obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{obj.__qualname__} has no docstring"
    assert doc.splitlines()[0].strip(), f"{obj.__qualname__}: the first line is the summary"
    if inspect.isclass(obj) and obj.__name__.endswith(STATE_SUFFIX):
        return
    if inspect.isclass(obj) and issubclass(obj, Exception):
        return
    assert ">>>" in doc, f"{obj.__qualname__} has no doctest example"


def test_the_namespace_is_not_empty():
    assert len(CASES) > 50
